"""Memory planner: what a model will need, from its config alone, before anything is loaded.

weights by quantisation level, KV bytes per token (layers x kv-heads x head-dim x 2 x dtype
bytes), and the largest context for a batch size (or batch for a context) that fits in the
memory this machine has free. Pure functions over a transformers config; no weights read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import Quantisation

# bitsandbytes storage per parameter of a quantised linear layer, as bytes: int8 keeps one
# byte and a float32 scale per output row; 4-bit keeps half a byte and, per 64 weights, one
# absmax byte (double quantisation) plus a small second-level table.
LINEAR_BYTES = {Quantisation.INT8: 1.0, Quantisation.NF4: 0.5 + 1 / 64, Quantisation.FP4: 0.5 + 1 / 64}
RUNTIME_OVERHEAD_BYTES = 300 << 20  # torch, tokenizer and activations of a small batch, measured loosely


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    context_length: int | None
    linear_params: int  # parameters in linear layers (what 8/4-bit quantisation shrinks)
    other_params: int  # embeddings, norms, biases, a tied or kept output head
    dtype_bytes: int  # bytes per parameter as loaded without quantisation


@dataclass(frozen=True)
class MemoryPlan:
    weights_bytes: int
    kv_bytes_per_token: int
    available_bytes: int
    overhead_bytes: int

    def kv_bytes(self, context: int, batch: int = 1) -> int:
        return self.kv_bytes_per_token * context * batch

    def total_bytes(self, context: int, batch: int = 1) -> int:
        return self.weights_bytes + self.overhead_bytes + self.kv_bytes(context, batch)

    def fits(self, context: int, batch: int = 1) -> bool:
        return self.total_bytes(context, batch) <= self.available_bytes

    def max_context(self, batch: int = 1) -> int:
        room = self.available_bytes - self.weights_bytes - self.overhead_bytes
        return max(0, room // (self.kv_bytes_per_token * batch)) if self.kv_bytes_per_token else 0

    def max_batch(self, context: int) -> int:
        room = self.available_bytes - self.weights_bytes - self.overhead_bytes
        return max(0, room // (self.kv_bytes_per_token * context)) if self.kv_bytes_per_token and context else 0


def model_shape(config, dtype: torch.dtype = torch.float32) -> ModelShape:
    """Counts from the config; parameters by building the model on the meta device (no memory)."""
    from transformers import AutoModelForCausalLM

    from engine.models import context_length

    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head")
    kv_heads = _first(config, "num_key_value_heads", "multi_query_group_num", default=heads)
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = other = 0
    head = model.get_output_embeddings()
    seen = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue  # tied weights count once
            seen.add(id(p))
            is_linear = isinstance(module, torch.nn.Linear) and module is not head and p is module.weight
            if is_linear:
                linear += p.numel()
            else:
                other += p.numel()
    return ModelShape(num_layers=layers, num_kv_heads=kv_heads, head_dim=head_dim, context_length=context_length(config),
                      linear_params=linear, other_params=other, dtype_bytes=torch.tensor([], dtype=dtype).element_size())


def _first(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and v > 0:
            return v
    if default is None:
        raise ValueError(f"the config states none of {', '.join(names)}")
    return default


def kv_bytes_per_token(shape: ModelShape, kv_dtype_bytes: int | None = None) -> int:
    return shape.num_layers * shape.num_kv_heads * shape.head_dim * 2 * (kv_dtype_bytes or shape.dtype_bytes)


def weights_bytes(shape: ModelShape, level: Quantisation) -> int:
    if level is Quantisation.NONE:
        return (shape.linear_params + shape.other_params) * shape.dtype_bytes
    if level is Quantisation.BF16:
        return (shape.linear_params + shape.other_params) * 2
    # bitsandbytes computes in float32 on a CPU; the layers it does not quantise stay at that size
    return int(shape.linear_params * LINEAR_BYTES[level]) + shape.other_params * shape.dtype_bytes


def available_bytes(device: torch.device | str = "cpu") -> int:
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def plan_memory(config, level: Quantisation = Quantisation.NONE, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", available: int | None = None) -> MemoryPlan:
    shape = model_shape(config, dtype)
    kv_dtype = 2 if level is Quantisation.BF16 else shape.dtype_bytes
    if torch.device(device).type == "cpu" and kv_dtype == 2:
        # on a CPU the fast path keeps a half-precision model's cache in float32, except a
        # float16 model on our native kernel: float16 (engine.fastpath.llama)
        from engine.fastpath.llama import config_takes_kernel

        native_f16 = level is Quantisation.NONE and dtype is torch.float16 and config_takes_kernel(config)
        kv_dtype = 2 if native_f16 else 4
    return MemoryPlan(weights_bytes=weights_bytes(shape, level), kv_bytes_per_token=kv_bytes_per_token(shape, kv_dtype),
                      available_bytes=available_bytes(device) if available is None else available,
                      overhead_bytes=RUNTIME_OVERHEAD_BYTES)


def check_fits(name: str, config, level: Quantisation, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu", context: int = 2048) -> str | None:
    """A warning to show before loading a model that will not fit, or None when it does."""
    plan = plan_memory(config, level, dtype=dtype, device=device)
    ctx = min(context, plan_context(config) or context)
    if plan.fits(ctx):
        return None
    gib = 1 << 30
    return (f"{name} needs about {plan.total_bytes(ctx) / gib:.1f} GiB at {level.value} for a {ctx}-token context "
            f"(weights {plan.weights_bytes / gib:.1f} GiB); this machine has {plan.available_bytes / gib:.1f} GiB free")


def plan_context(config) -> int | None:
    from engine.models import context_length

    return context_length(config)
