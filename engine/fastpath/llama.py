"""A lean forward for the Llama family (Llama, Mistral, Qwen2) over the model's own weights.

transformers' forward spends most of a small model's decode step outside the matmuls: module
dispatch, mask building, output capturing. This one is the same arithmetic in the same order
with fused QKV and gate/up projections (one weight read instead of three/two) and none of the
dispatch. Rows of different lengths and holes use one boolean mask; a hole-free batch uses the
kernel's own causal path.

On a CPU where engine/fastpath/gemv.c builds, its products replace torch's (weights as stored,
any of float32/float16/bfloat16, float32 activations), and a forward of up to 128 tokens per row
(decode, verification, small chunks) runs every layer in one native call (`_native`). Longer
prefill chunks take the layer loop in `__call__`, with torch's flash attention.

The fused weights replace the modules' parameters by views into them: no second copy, and
the transformers forward (the fallback, and every peer) keeps working on the same storage.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from engine.fastpath import kernels
from engine.fastpath.quantised import fuse_4bit, fuse_8bit, is_4bit, is_8bit, reason_4bit, reason_8bit

SUPPORTED = {"llama", "mistral", "qwen2"}
STATIC_ROPE = {"default", "linear", "llama3"}  # rotations that depend on the position alone
ROPE_TABLE_MAX_POSITIONS = 8192  # cos and sin: 8 MB at head_dim 128 (a 128k context would be 134 MB)
# rows (batch x tokens) from which half-precision weights compute in float32 on a CPU: without
# half arithmetic a half matrix product runs row by row (measured here: 1 row 29 us, 5 rows 142 us,
# 8 rows 222 us for a 1408x512 weight; upcast + float32: 60, 144, 150 us)
UPCAST_ROWS = 5
_FUSE_LOCK = threading.Lock()  # engines sharing one model (engine.pool) fuse it once


def fast_forward_for(model: torch.nn.Module, interrupt: threading.Event | None = None) -> "LlamaFastForward | None":
    """The fast forward for this model, or None when it is not a plain Llama-family model."""
    reason = unsupported_reason(model)
    return None if reason else LlamaFastForward(model, interrupt)


def unsupported_reason(model: torch.nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED:
        return "not a Llama-family model"
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return "activation or MLP bias differs"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) and \
            cfg.model_type != "llama" and (cfg.sliding_window or 0) < (cfg.max_position_embeddings or 0):
        return "sliding-window attention"
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers or not hasattr(model.model, "rotary_emb"):
        return "unexpected module layout"
    kinds = set()
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            if type(lin) is torch.nn.Linear:
                kinds.add("full")
            elif is_4bit(lin):  # bitsandbytes nf4/fp4: our kernel reads its packed data
                why = reason_4bit(lin)
                if why:
                    return why
                kinds.add("4-bit")
            elif is_8bit(lin):  # bitsandbytes int8: int8 rows and their scales
                why = reason_8bit(lin)
                if why:
                    return why
                kinds.add("8-bit")
            else:
                return "quantised or custom linear layers"
    if len(kinds) > 1:
        if "full" not in kinds:
            return "4-bit layers beside 8-bit ones"
        return f"{' and '.join(sorted(kinds - {'full'}))} layers beside full-precision ones"
    quantised = kinds & {"4-bit", "8-bit"}
    if quantised and not config_takes_kernel(cfg):
        return f"{quantised.pop()} layers of sizes our kernel does not take"
    if type(model.lm_head) is not torch.nn.Linear:
        return "custom output head"
    packed = {"4-bit": torch.uint8, "8-bit": torch.int8}.get(next(iter(kinds)) if kinds else "")
    dtypes = {p.dtype for p in model.parameters() if p.dtype is not packed}
    if len(dtypes) != 1:
        return f"mixed parameter dtypes ({', '.join(sorted(str(d) for d in dtypes))})"
    return None


def _fuse(linears: list[torch.nn.Linear], k_major: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [sum(out), in] weight whose row blocks become the modules' weights (views). k_major
    stores it transposed ([in, sum(out)] contiguous; the weight is a view of that)."""
    if k_major:
        weight = torch.cat([lin.weight.detach().t() for lin in linears], dim=1).contiguous().t()
    else:
        weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    has_bias = [lin.bias is not None for lin in linears]
    bias = torch.cat([lin.bias.detach() for lin in linears], dim=0) if all(has_bias) else None
    if any(has_bias) and bias is None:
        raise ValueError("mixed biases")
    start = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = weight[start:start + n]
        if bias is not None:
            lin.bias.data = bias[start:start + n]
        start += n
    return weight, bias


def _k_major(lin: torch.nn.Linear) -> None:
    lin.weight.data = lin.weight.detach().t().contiguous().t()


def k_major_pays(weight: torch.Tensor) -> bool:
    """A CPU multiplies one row by a float32 weight stored [in, out] ~1.5x faster than by one
    stored [out, in] (measured here: 26.5 vs 17.4 GB/s); for half precision it is the other way."""
    return weight.device.type == "cpu" and weight.dtype is torch.float32


class _Layer:
    __slots__ = ("in_norm", "post_norm", "eps_in", "eps_post", "w_qkv", "b_qkv", "w_o", "w_gu", "w_down",
                 "n_q", "n_kv", "heads", "kv_heads", "head_dim", "scale", "inter")


class StepInterrupted(Exception):
    """The engine is shutting down: the forward stopped between layers (its cache is discarded)."""


class LlamaFastForward:
    def __init__(self, model: torch.nn.Module, interrupt: threading.Event | None = None) -> None:
        cfg = model.config
        self.model = model
        self.embed = model.model.embed_tokens
        self.rotary = model.model.rotary_emb
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        self.layers: list[_Layer] = []
        with _FUSE_LOCK, torch.no_grad():
            fused = getattr(model, "_workbench_fused", None)
            q_proj = model.model.layers[0].self_attn.q_proj
            self.q4, self.q8 = is_4bit(q_proj), is_8bit(q_proj)
            if fused is None and (self.q4 or self.q8):
                fuse = fuse_4bit if self.q4 else fuse_8bit
                fused = []
                for layer in model.model.layers:
                    a, m = layer.self_attn, layer.mlp
                    fused.append((fuse([a.q_proj, a.k_proj, a.v_proj]), fuse([m.gate_proj, m.up_proj]),
                                  fuse([a.o_proj])[0], fuse([m.down_proj])[0]))
                model._workbench_fused = fused
            elif fused is None:
                fused = []
                # the kernel reads weights as torch keeps them ([out, in]); torch's own products
                # read float32 faster transposed
                k_major = k_major_pays(model.model.embed_tokens.weight) and not _kernel_fits(model)
                for layer in model.model.layers:
                    a, m = layer.self_attn, layer.mlp
                    fused.append((_fuse([a.q_proj, a.k_proj, a.v_proj], k_major),
                                  _fuse([m.gate_proj, m.up_proj], k_major), None, None))
                    if k_major:
                        _k_major(a.o_proj)
                        _k_major(m.down_proj)
                model._workbench_fused = fused
        for layer, ((w_qkv, b_qkv), (w_gu, _), w_o, w_down) in zip(model.model.layers, fused):
            a = layer.self_attn
            L = _Layer()
            L.in_norm, L.eps_in = layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon
            L.post_norm, L.eps_post = layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon
            L.w_qkv, L.b_qkv, L.w_o = w_qkv, b_qkv, a.o_proj.weight if w_o is None else w_o
            L.w_gu, L.w_down = w_gu, layer.mlp.down_proj.weight if w_down is None else w_down
            L.head_dim = a.head_dim
            L.heads = cfg.num_attention_heads
            L.kv_heads = cfg.num_key_value_heads
            L.n_q, L.n_kv = L.heads * L.head_dim, L.kv_heads * L.head_dim
            L.scale = a.scaling
            L.inter = layer.mlp.gate_proj.out_features
            self.layers.append(L)
        self.norm_eps = self.norm.variance_epsilon
        self._rope_table = None
        # positions past the table (or a model without a context length) use the module itself
        positions = min(getattr(cfg, "max_position_embeddings", None) or 0, ROPE_TABLE_MAX_POSITIONS)
        if getattr(self.rotary, "rope_type", None) in STATIC_ROPE and positions:
            with torch.no_grad():
                cos, sin = self.rotary(torch.empty(1, dtype=torch.float32), torch.arange(positions)[None])
            self._rope_table = (cos[0].float(), sin[0].float())
        self.interrupt = interrupt  # checked between layers: a long prefill stops within one layer
        # CPU kernels for half-precision attention are ~10x slower than float32 ones (the matmuls
        # stream weights and stay in half precision): attention runs in float32 there, on a float32
        # cache (casting a half cache up every step would copy all of it, every layer) -- except
        # where our native attention reads a float16 cache itself (below)
        weight = self.embed.weight
        self.attn_fp32 = weight.device.type == "cpu" and weight.dtype in (torch.float16, torch.bfloat16)
        self.cache_dtype = torch.float32 if self.attn_fp32 else weight.dtype
        # products of up to kernels.MAX_ROWS rows in our kernel (float32 rows, any stored dtype):
        # with it, a half-precision model computes in float32 throughout on a CPU
        self.kernel = (self.q4 or self.q8 or _kernel_fits(model)) and all(kernels.supports(w) for L in self.layers
                                                   for w in (L.w_qkv, L.w_o, L.w_gu, L.w_down))
        self.kernel = self.kernel and kernels.supports(self.lm_head.weight)
        self.final_norm = self.norm.weight
        if self.kernel and self.attn_fp32:  # float32 activations meet float32 norm scales (tiny copies)
            for L in self.layers:
                L.in_norm, L.post_norm = L.in_norm.float(), L.post_norm.float()
            self.final_norm = self.final_norm.float()
        # a decode forward (a few tokens per row) runs every layer in one native call
        self.native = self.kernel and self.cache_dtype is torch.float32 and \
            len({x for L in self.layers for x in (L.eps_in, L.eps_post)}) == 1
        # float16 weights: keys and values stored in float16 too (the native attention converts
        # them in registers; the layer loop upcasts them per layer): half the bytes a step reads
        # from the cache -- at batch 8 and a few hundred tokens, as many as the weights
        if self.native and weight.dtype is torch.float16 and weight.device.type == "cpu":
            self.cache_dtype = torch.float16
        if self.native:
            self._keep = []  # the float32 biases the table points to
            rows = []
            for L in self.layers:
                bias = 0
                if L.b_qkv is not None:
                    b32 = L.b_qkv.float().contiguous()
                    self._keep.append(b32)
                    bias = b32.data_ptr()
                norms = (L.in_norm.float().contiguous(), L.post_norm.float().contiguous())
                self._keep.extend(norms)
                row = [L.w_qkv.data_ptr(), bias, L.w_o.data_ptr(), L.w_gu.data_ptr(), L.w_down.data_ptr(),
                       norms[0].data_ptr(), norms[1].data_ptr()] + [0] * (kernels.DECODE_TABLE_COLUMNS - 7)
                if self.q4:  # the block scales, the code table and the block size
                    row[16:22] = [L.w_qkv.absmax.data_ptr(), L.w_o.absmax.data_ptr(), L.w_gu.absmax.data_ptr(),
                                  L.w_down.absmax.data_ptr(), L.w_qkv.code.data_ptr(), L.w_qkv.blocksize]
                if self.q8:  # the row scales
                    row[16:20] = [L.w_qkv.scale.data_ptr(), L.w_o.scale.data_ptr(), L.w_gu.scale.data_ptr(),
                                  L.w_down.scale.data_ptr()]
                rows.append(row)
            self._table = torch.tensor(rows, dtype=torch.int64)
            self._last_table = None  # (buffer pointers and strides, the table made for them)

    def __call__(self, input_ids: torch.Tensor, position_ids: torch.Tensor, valid: torch.Tensor | None,
                 cache_layers: list, logits_to_keep: int) -> torch.Tensor:
        """input_ids, position_ids: [B, T]; valid: [B, W + T] bool (None = no holes anywhere);
        cache_layers: one object per layer with update(k, v) -> (all keys, all values), as the
        engine's buffer layers. Returns logits [B, logits_to_keep, vocab]."""
        b, t = input_ids.shape
        if self.native and 0 < t <= kernels.ATTENTION_MAX_QUERIES and cache_layers:
            return self._native(input_ids, position_ids, valid, cache_layers, logits_to_keep)
        x = F.embedding(input_ids, self.embed.weight)  # [B, T, hidden]
        # half-precision weights on a CPU: a matrix-vector product is fastest in half precision
        # (it streams the weights), a matrix-matrix product faster in float32 on upcast weights
        # (the CPU has no half-precision arithmetic): from UPCAST_ROWS rows on, compute in float32
        up = self.attn_fp32 and (self.kernel or b * t >= UPCAST_ROWS)
        if up:
            x = x.float()
        cos, sin = self._rope(x, position_ids, (cache_layers[0].length if cache_layers else 0) + t)  # [B, T, head_dim]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        past = cache_layers[0].length if cache_layers else 0
        mask = None
        causal = False
        if valid is not None or (t > 1 and past > 0):
            cols = torch.arange(past + t, device=x.device)
            rows = torch.arange(t, device=x.device) + past
            mask = (cols[None, :] <= rows[:, None])[None, None]  # [1, 1, T, W+T]
            if valid is not None:
                mask = mask & valid.to(x.device)[:, None, None, :]
        elif t > 1:
            causal = True
        # 4- and 8-bit weights only the kernel reads (at any row count)
        lin = _kernel_linear if self.kernel and (self.q4 or self.q8 or b * t <= kernels.MAX_ROWS) else _linear
        for L, cache in zip(self.layers, cache_layers):
            if self.interrupt is not None and self.interrupt.is_set():
                raise StepInterrupted()
            h = _rms(x, L.in_norm, L.eps_in)
            qkv = lin(h, L.w_qkv, L.b_qkv, up)
            # queries and keys side by side in qkv: one rotation for both
            qk = qkv[..., :L.n_q + L.n_kv].view(b, t, L.heads + L.kv_heads, L.head_dim).transpose(1, 2)
            qk = qk * cos + _rotate_half(qk) * sin
            q, k = qk[:, :L.heads], qk[:, L.heads:]
            v = qkv[..., L.n_q + L.n_kv:].view(b, t, L.kv_heads, L.head_dim).transpose(1, 2)
            keys, values = cache.update(k, v)
            if self.attn_fp32:
                q = q.float()
                if keys.dtype is not torch.float32:  # a float16 cache: attend over it upcast
                    keys, values = keys.float(), values.float()
            o = _sdpa(q, keys, values, mask, causal, L).to(x.dtype).transpose(1, 2).reshape(b, t, L.n_q)
            x = x + lin(o, L.w_o, None, up)
            h = _rms(x, L.post_norm, L.eps_post)
            gu = lin(h, L.w_gu, None, up)
            x = x + lin(F.silu(gu[..., :L.inter]) * gu[..., L.inter:], L.w_down, None, up)
        x = _rms(x[:, -logits_to_keep:], self.final_norm, self.norm_eps)
        return lin(x, self.lm_head.weight, self.lm_head.bias, up)

    def _native(self, input_ids: torch.Tensor, position_ids: torch.Tensor, valid: torch.Tensor | None,
                cache_layers: list, logits_to_keep: int) -> torch.Tensor:
        """The decode forward in one native call (kernels.decode_layers): the same arithmetic as
        the layer loop in __call__, without a Python operator between the products."""
        b, t = input_ids.shape
        L0 = self.layers[0]
        x = F.embedding(input_ids, self.embed.weight).float()  # [B, T, hidden]
        cos, sin = self._rope(x, position_ids, cache_layers[0].length + t)
        past = cache_layers[0].length
        table = self._table_for(cache_layers, t)
        hidden = x.shape[-1]
        flat = x.reshape(b * t, hidden).contiguous()
        valid_bytes = None if valid is None else valid.to(torch.uint8).contiguous()
        kernels.decode_layers(kernels.kind_of(L0.w_qkv), table, flat, batch=b, tokens=t, past=past, hidden=hidden,
                              heads=L0.heads, kv_heads=L0.kv_heads, head_dim=L0.head_dim, inter=L0.inter,
                              eps=L0.eps_in, scale=L0.scale, cos=cos.float().reshape(b * t, -1).contiguous(),
                              sin=sin.float().reshape(b * t, -1).contiguous(), valid=valid_bytes,
                              kv_dtype=self.cache_dtype)
        x = _rms(flat.view(b, t, hidden)[:, -logits_to_keep:], self.final_norm, self.norm_eps)
        return kernels.linear(x, self.lm_head.weight, self.lm_head.bias)

    def _table_for(self, cache_layers: list, columns: int) -> torch.Tensor:
        """The native pointer table for this call: each layer's cache buffers and their strides,
        after making room for `columns` more columns (counted as used: the kernel writes them)."""
        where = []
        for cache in cache_layers:
            cache.reserve(columns)
            k, v = cache.buf_k, cache.buf_v
            where.append((k.data_ptr(), v.data_ptr(), *k.stride()[:3], *v.stride()[:3]))
        where = tuple(where)
        if self._last_table is not None and self._last_table[0] == where:
            return self._last_table[1]  # the buffers did not move (most steps): the kernel only reads it
        table = self._table.clone()
        table[:, 7:15] = torch.tensor(where, dtype=torch.int64)
        self._last_table = (where, table)
        return table

    def _rope(self, x: torch.Tensor, position_ids: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for position_ids (all below `bound`) in x's dtype: rows of a table computed
        once by the model's own rotary module where the rotation depends on the position alone
        (the same values: each is cos/sin of one product), else the module per step (~35 us)."""
        if self._rope_table is None or bound > self._rope_table[0].shape[0]:
            return self.rotary(x, position_ids)
        cos, sin = self._rope_table
        return cos[position_ids].to(x.dtype), sin[position_ids].to(x.dtype)

    @property
    def can_greedy_steps(self) -> bool:
        """Whether greedy_steps runs here (the native forward, a plain output head)."""
        w = self.embed.weight
        return (self.native and self.lm_head.bias is None and kernels.supports(self.lm_head.weight)
                and w.dtype in (torch.float32, torch.float16, torch.bfloat16) and w.is_contiguous()
                and self.final_norm.dtype is torch.float32)

    def greedy_steps(self, first: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None,
                     cache_layers: list, steps: int) -> torch.Tensor:
        """`steps` greedy decode steps in one native call (kernels.greedy_steps): every row feeds
        first[b] at position positions[b], then its own argmax, and so on; returns the argmax
        tokens [B, steps]. The cache gets the keys of every fed token (steps columns)."""
        b = first.shape[0]
        L0 = self.layers[0]
        past = cache_layers[0].length
        pos = positions[:, None] + torch.arange(steps)[None, :]  # [B, steps]
        cos, sin = self._rope(torch.empty(1, dtype=torch.float32), pos, past + steps)  # [B, steps, D]
        table = self._table_for(cache_layers, steps)
        tokens = torch.empty(steps + 1, b, dtype=torch.int64)
        tokens[0] = first
        valid_bytes = None
        if valid is not None:
            valid_bytes = torch.cat([valid, torch.ones(b, steps, dtype=torch.bool)], dim=1).to(torch.uint8).contiguous()
        kernels.greedy_steps(kernels.kind_of(L0.w_qkv), table, tokens, past=past, hidden=self.embed.weight.shape[1],
                             heads=L0.heads, kv_heads=L0.kv_heads, head_dim=L0.head_dim, inter=L0.inter, eps=L0.eps_in,
                             scale=L0.scale, cos=cos.float().transpose(0, 1).contiguous(),
                             sin=sin.float().transpose(0, 1).contiguous(), valid=valid_bytes,
                             embed=self.embed.weight, final_norm=self.final_norm, final_eps=self.norm_eps,
                             head=self.lm_head.weight, kv_dtype=self.cache_dtype)
        return tokens[1:].t()


def _sdpa(q, keys, values, mask, causal: bool, L: _Layer) -> torch.Tensor:
    gqa = {}
    if L.kv_heads != L.heads:
        if mask is None:
            gqa["enable_gqa"] = True  # as transformers does when there is no mask
        else:
            groups = L.heads // L.kv_heads
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal, scale=L.scale, **gqa)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # as LlamaRMSNorm: the statistics in float32, the scale in the input dtype
    if x.dtype is torch.float32 and weight.dtype is torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)  # the same arithmetic in one operator
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight.to(x.dtype) * h.to(x.dtype)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, up: bool) -> torch.Tensor:
    if up:
        return F.linear(x, weight.float(), None if bias is None else bias.float())
    return F.linear(x, weight, bias)


def _kernel_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, up: bool) -> torch.Tensor:
    return kernels.linear(x, weight, bias)


def config_takes_kernel(cfg) -> bool:
    """Whether a model of this config runs its products in our CPU kernel: a Llama-family model
    whose input sizes are multiples of 16, on a machine where the kernel builds."""
    if getattr(cfg, "model_type", None) not in SUPPORTED:
        return False
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    sizes = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * head_dim)
    return all(n % 16 == 0 for n in sizes) and kernels.available()


def _kernel_fits(model: torch.nn.Module) -> bool:
    weight = model.model.embed_tokens.weight
    return (weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and config_takes_kernel(model.config))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
