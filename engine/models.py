"""Loading Hugging Face causal LMs by local directory or hub id, with clear refusals."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
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


def resolve_dtype(dtype: DType, device: torch.device, model_config=None) -> torch.dtype | str:
    """The dtype to load in. AUTO: accelerators keep the checkpoint's dtype. On a CPU the
    checkpoint's half precision is kept only where this CPU computes it well: faster than
    float32 for one row (decode streams the weights) *and* not slower for a batch of rows
    (batched decode, prefill chunks, speculative verification), measured once per shape. A CPU
    without half-precision arithmetic runs a half matrix product row by row, which makes
    batching and speculation lose. A float32 checkpoint is never narrowed silently."""
    if dtype is DType.AUTO:
        if device.type != "cpu":
            return "auto"
        stored = checkpoint_dtype(model_config)
        if stored in (torch.float16, torch.bfloat16):
            hidden, inter = _linear_shape(model_config)
            t = cpu_linear_timings((torch.float32, stored), hidden, inter, torch.get_num_threads(),
                                   _fast_kernel(model_config))
            one, rows = t[stored], t[torch.float32]
            return stored if one[0] < rows[0] and one[1] <= BATCH_TOLERANCE * rows[1] else torch.float32
        return torch.float32
    return {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}[dtype]


_TIMING_LOCK = threading.Lock()
BATCH_TOLERANCE = 1.1  # a half dtype may be this much slower on batched rows and still be chosen
TIMING_ROWS = (1, 8)  # decode at batch 1; a batch / a verify step / a prefill chunk


def pin_dtype(spec: ModelSpec) -> ModelSpec:
    """The spec with dtype AUTO resolved once, here: every engine and peer of one benchmark then
    runs the same dtype even if a later measurement on a busy machine would decide otherwise."""
    if spec.dtype is not DType.AUTO:
        return spec
    from dataclasses import replace

    from transformers import AutoConfig

    name, _is_local = check_source(spec.name_or_path)
    config = AutoConfig.from_pretrained(name, trust_remote_code=spec.trust_remote_code)
    chosen = resolve_dtype(spec.dtype, resolve_device(spec.device), config)
    by_torch = {torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16, torch.bfloat16: DType.BFLOAT16}
    return replace(spec, dtype=by_torch[chosen]) if chosen in by_torch else spec


def checkpoint_dtype(model_config) -> torch.dtype | None:
    stored = getattr(model_config, "dtype", None) or getattr(model_config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else None


def _linear_shape(model_config) -> tuple[int, int]:
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", None) or 1024
    inter = getattr(model_config, "intermediate_size", None) or getattr(model_config, "n_inner", None) or 4 * hidden
    return int(hidden), int(inter)


def _fast_kernel(model_config) -> bool:
    """Whether the model's products will run in our CPU kernel: then that kernel is what the
    dtype choice must time."""
    from engine.fastpath.llama import config_takes_kernel

    return config_takes_kernel(model_config)


@functools.lru_cache(maxsize=32)
def cpu_linear_timings(dtypes: tuple[torch.dtype, ...], hidden: int, inter: int, threads: int,
                       kernel: bool = False) -> dict:
    """Per dtype, (seconds for 1 row, seconds for 8 rows) of one pass over ~64 MB of
    [inter, hidden] weights: decode is weight streaming, so the pass is sized past the caches.
    kernel: time engine.fastpath.kernels (float32 rows) instead of torch's products.
    About 0.5 s in all, once per shape."""
    out = {}
    # one thread: the ratio between dtypes is a property of the kernels, and a single thread is
    # not stalled by OpenMP barriers when another process holds a core (which made 2-thread
    # timings swing 100x on a busy machine)
    with _TIMING_LOCK:  # two engines loading at once must not restore each other's thread count
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _time_passes(dtypes, hidden, inter, out, kernel)
        finally:
            torch.set_num_threads(before)
    return out


def _time_passes(dtypes, hidden: int, inter: int, out: dict, kernel: bool = False) -> None:
    from engine.fastpath import kernels

    with torch.inference_mode():
        for dt in dtypes:
            count = max(1, (64 << 20) // (hidden * inter * 4))
            weights = [torch.randn(inter, hidden).to(dt) for _ in range(count)]
            times = []
            for rows in TIMING_ROWS:
                x = torch.randn(rows, hidden) if kernel else torch.randn(rows, hidden).to(dt)
                product = kernels.linear if kernel else torch.nn.functional.linear
                best = float("inf")
                for rep in range(5):
                    t0 = time.perf_counter()
                    for w in weights:
                        product(x, w)
                    if rep:  # the first pass warms the kernels
                        best = min(best, time.perf_counter() - t0)
                times.append(best)
            out[dt] = tuple(times)


def dtype_note(spec_dtype: DType, chosen, model_config) -> str:
    """One line for the panel: what AUTO chose and why."""
    name = str(chosen).replace("torch.", "")
    if spec_dtype is not DType.AUTO:
        return f"{name} (chosen)"
    stored = checkpoint_dtype(model_config)
    if isinstance(chosen, torch.dtype) and stored in (torch.float16, torch.bfloat16):
        hidden, inter = _linear_shape(model_config)
        t = cpu_linear_timings((torch.float32, stored), hidden, inter, torch.get_num_threads(),
                               _fast_kernel(model_config))
        half = str(stored).replace("torch.", "")
        one = t[torch.float32][0] / t[stored][0]
        rows = t[torch.float32][1] / t[stored][1]
        return (f"auto: {name} (measured: {half} is {one:.1f}x float32 at 1 row, {rows:.1f}x at "
                f"{TIMING_ROWS[1]} rows on this CPU)")
    return f"auto: {name}"


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


def _remote_causal_class(auto_map) -> str | None:
    """The custom causal-LM class a repository's config names (auto_map), if any."""
    if isinstance(auto_map, dict):
        ref = auto_map.get("AutoModelForCausalLM")
        if isinstance(ref, (list, tuple)):
            ref = ref[0] if ref else None
        return ref if isinstance(ref, str) and ref else None
    return None


def _precheck_remote_code(name: str, is_local: bool, trust_remote_code: bool) -> None:
    """Refuse before any repository code runs when that code could not give a causal LM."""
    if not (trust_remote_code and is_local):
        return
    try:
        raw = json.loads((Path(name) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read the config of {name}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"The config of {name} is not a JSON object")
    from transformers import CONFIG_MAPPING

    if raw.get("model_type") in CONFIG_MAPPING and "auto_map" not in raw:
        return  # a built-in architecture: no repository code involved
    if _remote_causal_class(raw.get("auto_map")) is None:
        raise ModelLoadError(
            f"{name} names no custom causal-LM class (auto_map.AutoModelForCausalLM in config.json); "
            "its code was not run"
        )


def _check_causal(config, trust_remote_code: bool = False) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if trust_remote_code and _remote_causal_class(getattr(config, "auto_map", None)):
        return  # custom code the user chose to trust provides the causal-LM class
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


def embedding_rows(model) -> int | None:
    """Rows of the input embedding: the largest token id the model can take, plus one."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    return int(weight.shape[0]) if weight is not None else None


def context_length(config) -> int | None:
    """The model's context window, as its config states it (None when it states none)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_vocab(model, tokenizer, name: str) -> None:
    rows = embedding_rows(model)
    if rows is not None and len(tokenizer) > rows:
        raise ModelLoadError(
            f"{name}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only {rows} rows "
            "(vocab_size in config.json is too small): token ids past it cannot be run"
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
    _precheck_remote_code(name, is_local, spec.trust_remote_code)
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
    _check_causal(config, spec.trust_remote_code)
    report(0.15, "loading tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"Could not load the tokenizer of {name}: {exc}") from exc
    _check_tokenizer(tokenizer, name)

    dtype = resolve_dtype(spec.dtype, device, config)
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
    _check_vocab(model, tokenizer, name)
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
        dtype_note=dtype_note(spec.dtype, dtype, config) if plan.bnb_config is None else "",
        context_length=context_length(config),
        unavailable_levels=quant.unavailable_levels(device),
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
