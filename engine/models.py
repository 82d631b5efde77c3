"""Loading Hugging Face causal LMs by local directory or hub id, with clear refusals."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine.config import DeviceKind, DType, ModelSpec, Quantisation
from engine.events import ModelInfo


# transformers' loading patches process-wide state (torch.nn.init functions, a default-device
# mode): two loads at once on different threads (the chat engine and compare columns) can crash.
LOAD_LOCK = threading.RLock()


class ModelLoadError(Exception):
    """A model could not be loaded; the message is meant for the user."""


ProgressFn = Callable[[float, str], None]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object  # a transformers PreTrainedTokenizerBase
    spec: ModelSpec
    device: torch.device
    quantisation: Quantisation
    info: ModelInfo
    skipped_modules: tuple[str, ...] = ()  # layers a quantisation level left in full precision


def resolve_device(kind: DeviceKind) -> torch.device:
    if kind is DeviceKind.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind is DeviceKind.CUDA and not torch.cuda.is_available():
        raise ModelLoadError("CUDA was requested but torch sees no CUDA device (is a CUDA build of torch installed?)")
    if kind is DeviceKind.MPS and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("MPS was requested but it is not available on this machine")
    return torch.device(kind.value)


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype | str:
    if dtype is DType.AUTO:
        # CPU kernels are fastest and exact in float32; accelerators keep the checkpoint's dtype.
        return torch.float32 if device.type == "cpu" else "auto"
    return {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}[dtype]


def _hub_reachable(timeout_s: float = 1.5) -> bool:
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def check_source(name: str) -> tuple[str, bool]:
    """Validate what the user named. Returns (resolved name, is_local)."""
    expanded = os.path.expanduser(name)
    if not name.strip():
        raise ModelLoadError("No model named: give a local directory or a hub id such as 'gpt2'")
    if Path(expanded).exists():
        path = Path(expanded)
        if not path.is_dir():
            raise ModelLoadError(f"{name} is a file; give the model's directory (the one holding config.json)")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name} has no config.json: it is not a Hugging Face model directory")
        return str(path), True
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"No such directory: {name}")
    if not _hub_cached(name) and not _hub_reachable():
        raise ModelLoadError(
            f"'{name}' is not a local directory and the Hugging Face hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE is set). Download it elsewhere and give its directory."
        )
    return name, False


def _check_causal(config) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"'{config.model_type}' models have no causal-LM head that AutoModelForCausalLM can load; "
            "the workbench runs decoder-only causal language models"
        )
    heads = ("ForCausalLM", "LMHeadModel")
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith(heads) for a in archs):
        raise ModelLoadError(
            f"this checkpoint is a {archs[0]}, which has no causal-LM head; "
            "the workbench runs decoder-only causal language models"
        )


def _check_tokenizer(tokenizer, name: str) -> None:
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(
            f"The tokenizer of {name} defines no end-of-sequence (EOS) token, so generation could never stop "
            "on its own; add eos_token to its tokenizer_config.json"
        )
    if tokenizer.pad_token_id is None:
        # Batching needs a pad id; EOS is the conventional stand-in and is never attended to.
        tokenizer.pad_token = tokenizer.eos_token


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes held by parameters and buffers, as stored (quantised sizes included)."""
    total = 0
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue  # tied weights count once
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
        state = getattr(t, "quant_state", None)
        if state is not None:
            total += _quant_state_bytes(state)
        scb = getattr(t, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


def _quant_state_bytes(state) -> int:
    total = 0
    for name in ("absmax", "code"):
        t = getattr(state, name, None)
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    nested = getattr(state, "state2", None)
    if nested is not None:
        total += _quant_state_bytes(nested)
    return total


def load_model(
    spec: ModelSpec,
    quantisation: Quantisation = Quantisation.NONE,
    progress: ProgressFn | None = None,
) -> LoadedModel:
    """Load tokenizer and model; raise ModelLoadError with a user-facing message on bad input."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from engine import quant

    report = progress or (lambda f, m: None)
    name, is_local = check_source(spec.name_or_path)
    device = resolve_device(spec.device)
    report(0.05, f"reading config of {spec.name_or_path}")
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=spec.trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{name} needs custom code from its repository; enable 'trust remote code' only if you trust it"
            ) from exc
        raise ModelLoadError(f"Could not read the config of {name}: {exc}") from exc
    except OSError as exc:
        raise ModelLoadError(f"Could not read the config of {name}: {exc}") from exc
    _check_causal(config)
    report(0.15, "loading tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"Could not load the tokenizer of {name}: {exc}") from exc
    _check_tokenizer(tokenizer, name)

    dtype = resolve_dtype(spec.dtype, device)
    plan = quant.load_plan(quantisation, model_config=config, device=device, base_dtype=dtype)
    report(0.3, f"loading weights ({plan.describe()})")
    kwargs = dict(dtype=plan.dtype, trust_remote_code=spec.trust_remote_code, use_safetensors=None)
    if plan.bnb_config is not None:
        kwargs["quantization_config"] = plan.bnb_config
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else device.type}
    try:
        with LOAD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(f"Could not load the weights of {name}: {exc}") from exc
    if plan.bnb_config is None:
        model.to(device)
    model.eval()
    report(0.95, "model ready")
    info = ModelInfo(
        name_or_path=spec.name_or_path,
        architecture=(config.architectures or [type(model).__name__])[0],
        num_params=int(model.num_parameters()),
        dtype=str(next(model.parameters()).dtype).replace("torch.", "") if plan.bnb_config is None else plan.describe(),
        device=str(device),
        weights_bytes=weights_bytes(model),
        quantisation=quantisation.value,
        vocab_size=int(config.vocab_size),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        device=device,
        quantisation=quantisation,
        info=info,
        skipped_modules=plan.skipped_modules,
    )
