"""One forward step over a batch of rows of different lengths, with or without a KV cache."""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass

import torch

from engine.kv import BatchKV


@dataclass(frozen=True)
class RowInput:
    row_id: str
    token_ids: list[int]  # the tokens to compute this step (all of them when uncached)
    num_logits: int  # logits wanted for the last num_logits of those tokens (0 = none)


def cache_argument(model_or_class) -> str:
    """The name transformers' forward takes the cache under (renamed past_key_values -> cache in 5.2x)."""
    forward = model_or_class.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class ModelRunner:
    def __init__(self, model: torch.nn.Module, device: torch.device, pad_token_id: int,
                 cpu_threads: int | None = None, *, fast_path: bool = True,
                 interrupt: "threading.Event | None" = None) -> None:
        self.model = model
        from engine.fastpath import fast_forward_for

        # our own forward for the Llama family (same arithmetic, none of the dispatch); others
        # run transformers' forward
        self.fast = fast_forward_for(model, interrupt) if fast_path else None
        # Small models on CPU run faster on one thread: their matmuls are too small to pay for
        # OpenMP's fork/join (the bundled draft: 1.8 ms vs 2.5 ms per step on 2 cores).
        self.cpu_threads = cpu_threads if device.type == "cpu" else None
        self.device = device
        self.pad_token_id = pad_token_id
        self._cache_kw = cache_argument(model)
        from transformers import DynamicCache

        self._cache_cls = DynamicCache

    def _forward(self, fn, **kwargs):
        if self.cpu_threads is None:
            return fn(**kwargs)
        before = torch.get_num_threads()
        torch.set_num_threads(self.cpu_threads)
        try:
            return fn(**kwargs)
        finally:
            torch.set_num_threads(before)

    def _empty_layers(self, batch: int) -> list:
        """Empty buffer layers for a forward that starts with no cache (the fast path needs them)."""
        cfg = self.model.config
        heads = cfg.num_key_value_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = self.fast.cache_dtype
        return [FastLayer(torch.empty(batch, heads, 0, head_dim, dtype=dtype, device=self.device),
                          torch.empty(batch, heads, 0, head_dim, dtype=dtype, device=self.device), 0)
                for _ in range(cfg.num_hidden_layers)]

    @torch.inference_mode()
    def step_cached(self, rows: list[RowInput], kv: BatchKV) -> dict[str, torch.Tensor]:
        """Compute each row's new tokens on top of its cached ones (in `kv`, written in place).

        Every row of the batch cache takes part; rows absent from `rows` compute nothing
        (their step columns become holes). Returns logits [num_logits, vocab] per row that asked.
        """
        by_id = {r.row_id: r for r in rows}
        missing = [r.row_id for r in rows if r.row_id not in kv.row_ids]
        if missing:
            raise KeyError(f"rows without a cache slot: {missing}")
        order = kv.row_ids
        t = max((len(by_id[r].token_ids) for r in order if r in by_id), default=0)
        if t == 0:
            return {}
        b = len(order)
        num_valid = kv.num_valid()
        # one tensor each from lists (a tensor op per row cost ~10 us a row at every step)
        ids_rows, valid_rows, pos_rows = [], [], []
        for i, row_id in enumerate(order):
            row = by_id.get(row_id)
            m = len(row.token_ids) if row is not None else 0
            # right-aligned: the row's last token sits in the last column, so logits line up
            ids_rows.append([self.pad_token_id] * (t - m) + (list(row.token_ids) if m else []))
            valid_rows.append([False] * (t - m) + [True] * m)
            pos_rows.append([0] * (t - m) + list(range(num_valid[i], num_valid[i] + m)))
        input_ids = torch.tensor(ids_rows, dtype=torch.long)
        new_valid = torch.tensor(valid_rows, dtype=torch.bool)
        positions = torch.tensor(pos_rows, dtype=torch.long)
        past = kv.buffers() if kv.width else None
        old_valid = kv.valid if kv.valid is not None else torch.zeros((b, 0), dtype=torch.bool)
        if bool(new_valid.all()) and bool(old_valid.all()):
            attention_mask = None  # no holes anywhere: the model's plain causal path is exact and fastest
        else:
            attention_mask = torch.cat([old_valid, new_valid], dim=1).long().to(self.device)
        want = max((r.num_logits for r in rows), default=0)
        if self.fast is not None:
            layers = [FastLayer(k, v, kv.width) for k, v in past] if past else self._empty_layers(b)
            logits = self._forward(self.fast, input_ids=input_ids.to(self.device),
                                   position_ids=positions.to(self.device),
                                   valid=None if attention_mask is None else attention_mask.bool(),
                                   cache_layers=layers, logits_to_keep=max(want, 1))
        else:
            cache = self._wrap_cache(past, kv.width)
            logits = self._forward(
                self.model,
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask,
                position_ids=positions.to(self.device),
                use_cache=True,
                logits_to_keep=max(want, 1),
                **{self._cache_kw: cache},
            ).logits
            layers = cache.layers
        kv.absorb([_buffers_of(layer) for layer in layers], kv.width + t, new_valid)
        # logits: [batch, max(want,1), vocab]
        result: dict[str, torch.Tensor] = {}
        for i, row_id in enumerate(order):
            row = by_id.get(row_id)
            if row is not None and row.num_logits:
                result[row_id] = logits[i, logits.shape[1] - row.num_logits:].float()
        return result

    @torch.inference_mode()
    def greedy_steps(self, kv: BatchKV, first: dict[str, int], steps: int) -> dict[str, list[int]] | None:
        """Greedy decoding of every row of `kv` for `steps` steps in one native call: each row
        feeds first[row], then its own argmax; returns the argmax tokens per row (the cache keeps
        the fed tokens). None where that loop does not run (no native forward, rows of the cache
        without a first token): the caller steps one at a time."""
        fast = self.fast
        if fast is None or steps < 1 or not kv.width or set(first) != set(kv.row_ids) or not fast.can_greedy_steps:
            return None
        order = kv.row_ids
        positions = torch.tensor(kv.num_valid(), dtype=torch.long)
        valid = None if bool(kv.valid.all()) else kv.valid
        layers = [FastLayer(k, v, kv.width) for k, v in kv.buffers()]
        out = self._forward(fast.greedy_steps, first=torch.tensor([first[r] for r in order], dtype=torch.long),
                            positions=positions, valid=valid, cache_layers=layers, steps=steps)
        kv.absorb([_buffers_of(layer) for layer in layers], kv.width + steps,
                  torch.ones((len(order), steps), dtype=torch.bool))
        return {r: out[i].tolist() for i, r in enumerate(order)}

    def _wrap_cache(self, past: list[tuple[torch.Tensor, torch.Tensor]] | None, length: int):
        """A DynamicCache whose layers write into our preallocated buffers (no per-step copy)."""
        cache = self._cache_cls()
        for k, v in past or []:
            cache.layers.append(BufferLayer(k, v, length))
        return cache

    @torch.inference_mode()
    def step_uncached(self, rows: list[RowInput]) -> dict[str, torch.Tensor]:
        """Recompute every row's whole sequence (KV cache off). Left-padded batch."""
        if not rows:
            return {}
        t = max(len(r.token_ids) for r in rows)
        b = len(rows)
        input_ids = torch.full((b, t), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((b, t), dtype=torch.long)
        positions = torch.zeros((b, t), dtype=torch.long)
        for i, row in enumerate(rows):
            m = len(row.token_ids)
            input_ids[i, t - m:] = torch.tensor(row.token_ids, dtype=torch.long)
            mask[i, t - m:] = 1
            positions[i, t - m:] = torch.arange(m)
        want = max((r.num_logits for r in rows), default=1)
        if self.fast is not None:
            logits = self._forward(self.fast, input_ids=input_ids.to(self.device),
                                   position_ids=positions.to(self.device),
                                   valid=None if bool(mask.all()) else mask.bool(),
                                   cache_layers=self._empty_layers(b), logits_to_keep=max(want, 1))
        else:
            logits = self._forward(
                self.model,
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                use_cache=False,
                logits_to_keep=max(want, 1),
            ).logits
        return {
            row.row_id: logits[i, logits.shape[1] - row.num_logits:].float()
            for i, row in enumerate(rows)
            if row.num_logits
        }


def _buffers_of(layer) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(layer, (BufferLayer, FastLayer)):
        return layer.buf_k, layer.buf_v
    return layer.keys, layer.values  # the first forward: the model created plain layers


def _make_buffer_layer_class():
    from transformers.cache_utils import DynamicLayer

    class _BufferLayer(DynamicLayer):
        """A cache layer over a [B, H, capacity, D] buffer: update() writes the new keys and
        values in place and returns views of the used part, growing the buffer geometrically
        when full (amortised O(new tokens) per step instead of O(cache) for torch.cat)."""

        def __init__(self, buf_k: torch.Tensor, buf_v: torch.Tensor, length: int) -> None:
            super().__init__()
            self.buf_k, self.buf_v, self.length = buf_k, buf_v, length
            self.dtype, self.device = buf_k.dtype, buf_k.device
            self.is_initialized = True
            self.keys, self.values = buf_k[:, :, :length], buf_v[:, :, :length]

        def update(self, key_states, value_states, *args, **kwargs):
            return _write(self, key_states, value_states)

        def reserve(self, num_tokens: int) -> None:
            """Room for num_tokens more columns, counted as used: the caller writes them."""
            _reserve(self, num_tokens)
            self.keys, self.values = self.buf_k[:, :, :self.length], self.buf_v[:, :, :self.length]

    return _BufferLayer


class FastLayer:
    """The same buffer layer for our own forward (engine.fastpath), which needs none of
    transformers' cache machinery: no DynamicLayer to construct per layer and step, and no views
    of the used part unless the layer loop asks for them (the native forward reads the buffers
    through pointers). With the reused pointer table (engine.fastpath.llama._table_for): 59 -> 8 us
    of a ~1.3 ms batch-1 decode step here."""

    __slots__ = ("buf_k", "buf_v", "length")

    def __init__(self, buf_k: torch.Tensor, buf_v: torch.Tensor, length: int) -> None:
        self.buf_k, self.buf_v, self.length = buf_k, buf_v, length

    @property
    def keys(self) -> torch.Tensor:
        return self.buf_k[:, :, :self.length]

    @property
    def values(self) -> torch.Tensor:
        return self.buf_v[:, :, :self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        return _write(self, key_states, value_states)

    def reserve(self, num_tokens: int) -> None:
        """Room for num_tokens more columns, counted as used: the caller writes them."""
        _reserve(self, num_tokens)


def _write(layer, key_states: torch.Tensor, value_states: torch.Tensor):
    """A layer's update(): the new keys and values written in place after its used columns;
    returns views of all of them."""
    start = layer.length
    layer.reserve(key_states.shape[-2])
    layer.buf_k[:, :, start:layer.length] = key_states
    layer.buf_v[:, :, start:layer.length] = value_states
    return layer.keys, layer.values


def _reserve(layer, num_tokens: int) -> None:
    """Room for num_tokens more columns in a layer's buffers (grown by half when full), counted
    as used."""
    need = layer.length + num_tokens
    if need > layer.buf_k.shape[2]:
        cap = max(need, int(layer.buf_k.shape[2] * 1.5) + 32)
        layer.buf_k = _grow(layer.buf_k, layer.length, cap)
        layer.buf_v = _grow(layer.buf_v, layer.length, cap)
    layer.length = need


def _grow(buf: torch.Tensor, used: int, capacity: int) -> torch.Tensor:
    new = buf.new_empty(buf.shape[0], buf.shape[1], capacity, buf.shape[3])
    new[:, :, :used] = buf[:, :, :used]
    return new


BufferLayer = _make_buffer_layer_class()
