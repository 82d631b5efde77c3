"""bitsandbytes' 4-bit (nf4, fp4) and 8-bit linear layers as our kernel's Q4Weight / I8Weight.

bitsandbytes runs a 4-bit product on a CPU by dequantising the weight or in bfloat16; our
kernel (gemv.c wb_linear_q4) reads the packed 4-bit data as bitsandbytes stores it and computes
in float32: a decode step reads a quarter of the bytes of a float16 weight. The fused weights of
a layer (q/k/v, gate/up) are one buffer whose slices become the modules' packed data (no second
copy of the 4-bit data); the block scales are kept in float32 (1/16 of the 4-bit data, 1/128 of
float32 weights), dequantised once from bitsandbytes' 8-bit double quantisation where it is on.
"""

from __future__ import annotations

import torch

from engine.fastpath import kernels


def is_4bit(module: torch.nn.Module) -> bool:
    return type(module).__name__ in ("Linear4bit", "LinearNF4", "LinearFP4") and \
        getattr(getattr(module, "weight", None), "quant_state", None) is not None


def reason_4bit(module: torch.nn.Module) -> str | None:
    """None when the kernel can run this 4-bit layer, else why not."""
    if not kernels.available():
        return f"4-bit layers need our CPU kernel ({kernels.unavailable_reason()})"
    state = module.weight.quant_state
    if getattr(state, "quant_type", None) not in ("nf4", "fp4"):
        return f"unknown 4-bit type {getattr(state, 'quant_type', None)!r}"
    n, k = module.out_features, module.in_features
    if module.weight.device.type != "cpu" or state.blocksize % 32 or k % state.blocksize:
        return "4-bit layout the kernel does not read"
    if tuple(state.shape) != (n, k):
        return "4-bit weight of an unexpected shape"
    return None


def _standard_layout(module: torch.nn.Module) -> tuple[torch.Tensor, object]:
    """The packed data and quant state in bitsandbytes' portable layout (it repacks CPU weights
    for its own bfloat16 kernel on the first forward; undo that)."""
    data, state = module.weight.data, module.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        data, state = _convert_weight_packed_for_cpu_inverse(data, state)
        module.weight.data, module.weight.quant_state = data, state
    return data, state


def _absmax(state) -> torch.Tensor:
    if getattr(state, "nested", False):
        from bitsandbytes.functional import dequantize_blockwise

        return (dequantize_blockwise(state.absmax, state.state2) + state.offset).float().contiguous()
    return state.absmax.float().contiguous()


def fuse_4bit(linears: list[torch.nn.Module]) -> tuple[kernels.Q4Weight, torch.Tensor | None]:
    """One Q4Weight for the stacked outputs of these 4-bit layers (same input size, block size
    and code), plus the stacked bias (or None). The modules' packed data become views of it."""
    parts = [_standard_layout(lin) for lin in linears]
    states = [s for _, s in parts]
    code = states[0].code.float().contiguous()
    blocksize = states[0].blocksize
    if any(s.blocksize != blocksize or not torch.equal(s.code.float(), code) for s in states):
        raise ValueError("4-bit layers with different block sizes or codes")
    k = linears[0].in_features
    packed = torch.cat([d.reshape(-1) for d, _ in parts]).contiguous()
    absmax = torch.cat([_absmax(s) for s in states]).contiguous()
    start = 0
    for lin, (data, _) in zip(linears, parts):
        n = data.numel()
        lin.weight.data = packed[start:start + n].view(data.shape)
        start += n
    has_bias = [lin.bias is not None for lin in linears]
    if any(has_bias) and not all(has_bias):
        raise ValueError("mixed biases")
    bias = torch.cat([lin.bias.detach().float() for lin in linears]) if all(has_bias) else None
    n_out = sum(lin.out_features for lin in linears)
    weight = kernels.Q4Weight(packed, absmax, code, (n_out, k), blocksize)
    if not kernels.supports(weight):
        raise ValueError("the fused 4-bit weight does not fit the kernel")
    return weight, bias


# ---- 8-bit (bitsandbytes' Linear8bitLt): int8 rows with a float scale per row. bitsandbytes
# computes LLM.int8() (8-bit activations, outlier columns apart); our kernel multiplies float32
# activations by the 8-bit weights: weight-only 8-bit, the same stored weights, more exact.

def is_8bit(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "Linear8bitLt" and getattr(module, "weight", None) is not None \
        and module.weight.dtype is torch.int8


def _scb(module: torch.nn.Module) -> torch.Tensor | None:
    scb = getattr(module.weight, "SCB", None)
    if scb is None:  # bitsandbytes moves it to the layer's state on the first forward
        scb = getattr(getattr(module, "state", None), "SCB", None)
    return scb


def reason_8bit(module: torch.nn.Module) -> str | None:
    if not kernels.available():
        return f"8-bit layers need our CPU kernel ({kernels.unavailable_reason()})"
    w = module.weight
    if w.device.type != "cpu" or tuple(w.shape) != (module.out_features, module.in_features) \
            or module.in_features % 16:
        return "8-bit layout the kernel does not read"
    scb = _scb(module)
    if scb is None or scb.numel() != module.out_features:
        return "8-bit layer without its row scales"
    return None


def fuse_8bit(linears: list[torch.nn.Module]) -> tuple[kernels.I8Weight, torch.Tensor | None]:
    """One I8Weight for the stacked outputs of these 8-bit layers, plus the stacked bias (or
    None); the modules' int8 data become views of it."""
    data = torch.cat([lin.weight.data for lin in linears], dim=0).contiguous()
    scale = torch.cat([_scb(lin).float() / 127.0 for lin in linears]).contiguous()
    start = 0
    for lin in linears:
        n = lin.out_features
        lin.weight.data = data[start:start + n]
        start += n
    has_bias = [lin.bias is not None for lin in linears]
    if any(has_bias) and not all(has_bias):
        raise ValueError("mixed biases")
    bias = torch.cat([lin.bias.detach().float() for lin in linears]) if all(has_bias) else None
    weight = kernels.I8Weight(data, scale, (int(data.shape[0]), int(data.shape[1])))
    if not kernels.supports(weight):
        raise ValueError("the fused 8-bit weight does not fit the kernel")
    return weight, bias
