"""Quantisation levels -> load recipes, with refusals decided before any weight is read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import Quantisation

BNB_4BIT_CPU_BLOCK = 64  # bitsandbytes' 4-bit CPU kernels need in_features % 64 == 0


class QuantisationUnavailable(Exception):
    """The level cannot run here; the message says exactly why."""


@dataclass(frozen=True)
class LoadPlan:
    quantisation: Quantisation
    dtype: torch.dtype | str
    bnb_config: object | None = None  # transformers.BitsAndBytesConfig
    skipped_modules: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.quantisation is Quantisation.NONE:
            return f"{str(self.dtype).replace('torch.', '')}"
        if self.skipped_modules:
            return f"{self.quantisation.value} ({len(self.skipped_modules)} layers kept in full precision)"
        return self.quantisation.value


def bitsandbytes_version() -> str | None:
    import logging

    # bitsandbytes logs a warning at import when the optional `kernels` package (a faster CPU
    # 4-bit path) is missing; its own fallback works, so keep start-up quiet.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        import bitsandbytes

        return bitsandbytes.__version__
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return None


def linear_input_sizes(model_config) -> dict[str, int]:
    """Names and in_features of every nn.Linear, from a meta-device instance (no weights read)."""
    from transformers import AutoModelForCausalLM

    from engine.models import LOAD_LOCK

    with LOAD_LOCK, torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return {name: m.in_features for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def availability(level: Quantisation, device: torch.device) -> str | None:
    """None when the level can run on this device, else the reason it cannot."""
    if level in (Quantisation.NONE,):
        return None
    if level is Quantisation.BF16:
        if device.type == "mps":
            return "bf16 is not supported on MPS by this torch build"
        return None
    if bitsandbytes_version() is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    if device.type == "mps":
        return "bitsandbytes has no MPS backend"
    return None


def unavailable_levels(device: torch.device) -> tuple[tuple[str, str], ...]:
    """(level, why) for every level that cannot run on the device: what a UI disables."""
    out = []
    for level in Quantisation:
        why = availability(level, device)
        if why:
            out.append((level.value, why))
    return tuple(out)


def load_plan(
    level: Quantisation,
    *,
    model_config,
    device: torch.device,
    base_dtype: torch.dtype | str,
    double_quant: bool = True,
) -> LoadPlan:
    reason = availability(level, device)
    if reason is not None:
        raise QuantisationUnavailable(f"{level.value} cannot run here: {reason}")
    if level is Quantisation.NONE:
        return LoadPlan(level, base_dtype)
    if level is Quantisation.BF16:
        return LoadPlan(level, torch.bfloat16)

    from transformers import BitsAndBytesConfig

    compute = torch.float32 if device.type == "cpu" else torch.bfloat16
    # The output head stays in full precision, as in the bitsandbytes/transformers defaults.
    head = "lm_head"
    # what is not quantised (embeddings, norms, the head) loads in `keep`: float32 on a CPU, or the
    # checkpoint's float16 where the whole model runs on our CPU kernel, which reads float16 at half
    # the bytes (the head was 8.4 of the 24 MB a step of the bundled nf4 target read) and keeps
    # computing in float32
    from engine.fastpath.llama import config_takes_kernel

    keep = compute
    if device.type == "cpu" and base_dtype is torch.float16 and config_takes_kernel(model_config):
        keep = torch.float16
    if level is Quantisation.INT8:
        cfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=[head])
        return LoadPlan(level, keep, cfg, ())
    skipped: tuple[str, ...] = ()
    if device.type == "cpu":
        sizes = linear_input_sizes(model_config)
        skipped = tuple(sorted(n for n, k in sizes.items() if k % BNB_4BIT_CPU_BLOCK and n != head))
        if sizes and len(skipped) == len([n for n in sizes if n != head]):
            raise QuantisationUnavailable(
                f"{level.value} cannot run here: on CPU bitsandbytes 4-bit needs linear layers whose input size "
                f"is a multiple of {BNB_4BIT_CPU_BLOCK}, and none of this model's layers qualifies"
            )
    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4" if level is Quantisation.NF4 else "fp4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=[head, *skipped],
    )
    return LoadPlan(level, compute if skipped else keep, cfg, skipped)
