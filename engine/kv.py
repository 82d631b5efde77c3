"""KV-cache bookkeeping for a batch of sequences of different lengths.

The batch cache is one [batch, heads, width, head_dim] tensor pair per layer plus a
validity mask [batch, width]. Rows may hold *holes* (invalid columns): left padding when
rows of different lengths share a width, padding inside a step's chunk, and rejected
speculative tokens. Holes are masked out of attention and cost nothing but memory; each
row's position ids come from its count of valid columns, so holes never shift positions.
`compact()` squeezes the holes out when they waste too much.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import torch


SPARE_COLUMNS = 64  # free columns a cache is built with, so the next steps write in place


@dataclass
class RowKV:
    """One sequence's cache: per layer (keys, values) of shape [heads, num_tokens, head_dim]."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def num_tokens(self) -> int:
        return self.layers[0][0].shape[1] if self.layers else 0

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)

    def cropped(self, num_tokens: int) -> "RowKV":
        return RowKV([(k[:, :num_tokens], v[:, :num_tokens]) for k, v in self.layers])


class BatchKV:
    def __init__(self) -> None:
        self.row_ids: list[str] = []
        # Per layer [B, H, capacity, D] buffers; the first `_len` columns are in use. Decode steps
        # write into spare capacity instead of concatenating (which copies the whole cache).
        self._kbuf: list[torch.Tensor] = []
        self._vbuf: list[torch.Tensor] = []
        self._len = self._vlen = 0
        self.valid: torch.Tensor | None = None  # [B, W] bool, always on the CPU (cheap host-side bookkeeping)

    @property
    def keys(self) -> list[torch.Tensor]:  # per layer [B, H, W, D] views
        return [b[:, :, :self._len] for b in self._kbuf]

    @keys.setter
    def keys(self, tensors: list[torch.Tensor]) -> None:
        self._kbuf = list(tensors)
        self._len = tensors[0].shape[2] if tensors else 0

    @property
    def values(self) -> list[torch.Tensor]:
        return [b[:, :, :self._vlen] for b in self._vbuf]

    @values.setter
    def values(self, tensors: list[torch.Tensor]) -> None:
        # its own length, so `keys = f(keys); values = f(values)` works in either order
        self._vbuf = list(tensors)
        self._vlen = tensors[0].shape[2] if tensors else 0

    def buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self._kbuf, self._vbuf))

    def set_buffers(self, buffers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        self._kbuf = [k for k, _ in buffers]
        self._vbuf = [v for _, v in buffers]
        self._len = self._vlen = length

    # ---- queries
    @property
    def width(self) -> int:
        return 0 if self.valid is None else self.valid.shape[1]

    def row_index(self, row_id: str) -> int:
        return self.row_ids.index(row_id)

    def num_valid(self) -> list[int]:
        if self.valid is None:
            return [0] * len(self.row_ids)
        return self.valid.sum(dim=1).tolist()

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the cache tensors (holes and spare capacity included)."""
        seen, total = set(), 0
        for t in self._kbuf + self._vbuf:
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    # ---- forward plumbing
    def absorb(self, buffers: list[tuple[torch.Tensor, torch.Tensor]], length: int, new_valid: torch.Tensor) -> None:
        """After a forward: take the (possibly regrown) buffers and extend the mask with new_valid [B, T]."""
        self.set_buffers(buffers, length)
        self.valid = new_valid if self.valid is None else torch.cat([self.valid, new_valid], dim=1)

    # ---- row management
    def add_rows(self, row_ids: list[str], rows: list[RowKV | None]) -> None:
        """Append rows (None = empty cache), left-padding everything to one width.

        One allocation with spare columns for the next steps, and one write of every cached
        token (the rows already here and the new ones): no chains of concatenation."""
        if not row_ids:
            return
        lengths = [r.num_tokens if r is not None else 0 for r in rows]
        new_width = max([self.width] + lengths)
        template = next((r for r in rows if r is not None and r.num_tokens), None)
        old_rows = len(self.row_ids)
        if not self._kbuf and template is None:
            # nothing cached anywhere yet: rows start empty, tensors appear with the first forward
            self.row_ids.extend(row_ids)
            self.valid = torch.zeros((old_rows + len(row_ids), self.width), dtype=torch.bool)
            return
        if self._kbuf and new_width == self.width and self._add_in_place(row_ids, rows, lengths):
            return
        if self._kbuf:
            like = [(k[0, :, :0], v[0, :, :0]) for k, v in zip(self._kbuf, self._vbuf)]  # [H, 0, D]
        else:
            like = template.layers
        total = old_rows + len(row_ids)
        capacity = new_width + SPARE_COLUMNS
        shift = new_width - self.width  # old rows move right by this much (left padding grows)
        new_k, new_v = [], []
        for layer, (lk, lv) in enumerate(like):
            k = lk.new_zeros((total, lk.shape[0], capacity, lk.shape[2]))
            v = lv.new_zeros((total, lv.shape[0], capacity, lv.shape[2]))
            if old_rows and self._kbuf:
                k[:old_rows, :, shift:new_width] = self._kbuf[layer][:, :, :self.width]
                v[:old_rows, :, shift:new_width] = self._vbuf[layer][:, :, :self.width]
            for i, row in enumerate(rows):
                n = lengths[i]
                if n:
                    rk, rv = row.layers[layer]
                    k[old_rows + i, :, new_width - n:new_width] = rk
                    v[old_rows + i, :, new_width - n:new_width] = rv
            new_k.append(k)
            new_v.append(v)
        valid = torch.zeros((total, new_width), dtype=torch.bool)
        if old_rows and self.valid is not None:
            valid[:old_rows, shift:] = self.valid
        for i, n in enumerate(lengths):
            if n:
                valid[old_rows + i, new_width - n:] = True
        self.set_buffers(list(zip(new_k, new_v)), new_width)
        self.valid = valid
        self.row_ids.extend(row_ids)

    def _add_in_place(self, row_ids: list[str], rows: list[RowKV | None], lengths: list[int]) -> bool:
        """Rows that fit the current width join into the buffers' spare rows (a leaving row's
        slot, see remove_rows) without copying the batch; False when the storage has no room."""
        total = len(self.row_ids) + len(row_ids)
        grown = [_with_rows(b, total) for b in self._kbuf + self._vbuf]
        if any(g is None for g in grown):
            return False
        old_rows, width, layers = len(self.row_ids), self.width, len(self._kbuf)
        with torch.inference_mode():  # the buffers may be inference tensors
            for layer, (k, v) in enumerate(zip(grown[:layers], grown[layers:])):
                for i, row in enumerate(rows):
                    r, n = old_rows + i, lengths[i]
                    k[r, :, :width - n] = 0  # holes: zeros, not a former row's values
                    v[r, :, :width - n] = 0
                    if n:
                        rk, rv = row.layers[layer]
                        k[r, :, width - n:width] = rk
                        v[r, :, width - n:width] = rv
        valid = torch.zeros((total, width), dtype=torch.bool)
        valid[:old_rows] = self.valid
        for i, n in enumerate(lengths):
            if n:
                valid[old_rows + i, width - n:] = True
        self._kbuf, self._vbuf = grown[:layers], grown[layers:]
        self.valid = valid
        self.row_ids.extend(row_ids)
        return True

    def extract(self, row_id: str, *, copy: bool = True, num_tokens: int | None = None) -> RowKV:
        """The row's valid columns, in order, as a standalone RowKV (only the first num_tokens
        of them when given). copy=False may return views of this cache (for a row written
        elsewhere at once, before this cache changes)."""
        b = self.row_index(row_id)
        if not self._kbuf:
            return RowKV([])
        row_valid = self.valid[b]
        if bool(row_valid.all()):
            layers = [(k[b, :, :num_tokens], v[b, :, :num_tokens]) for k, v in zip(self.keys, self.values)]
        else:
            idx = row_valid.nonzero().squeeze(1)[:num_tokens].to(self._kbuf[0].device)
            layers = [(k[b, :, idx], v[b, :, idx]) for k, v in zip(self.keys, self.values)]
            copy = False  # indexing with a tensor already copied
        if copy:
            layers = [(k.clone(), v.clone()) for k, v in layers]
        return RowKV(layers)

    def remove_rows(self, row_ids: list[str]) -> None:
        """Drop rows: the batch's last row moves into each freed slot (one row's columns copied)
        and the buffers shrink to a view of their first rows, keeping their spare columns. A
        copy of every row (index_select) cost ~4 ms per leave on the bundled target at batch 8,
        and the next step regrew the buffers it had trimmed to the used width: a second copy."""
        gone = set(row_ids)
        drop = sorted((i for i, r in enumerate(self.row_ids) if r in gone), reverse=True)
        if not drop:
            return
        if len(drop) == len(self.row_ids):
            self.clear()
            return
        with torch.inference_mode():  # the mask and buffers may be inference tensors
            for i in drop:
                last = len(self.row_ids) - 1
                if i != last:
                    for bufs, used in ((self._kbuf, self._len), (self._vbuf, self._vlen)):
                        for b in bufs:
                            b[i, :, :used] = b[last, :, :used]
                    self.valid[i] = self.valid[last]
                    self.row_ids[i] = self.row_ids[last]
                self.row_ids.pop()
            rows = len(self.row_ids)
            self._kbuf = [b[:rows] for b in self._kbuf]
            self._vbuf = [b[:rows] for b in self._vbuf]
            self.valid = self.valid[:rows].clone()
        self._trim_leading_holes()

    def invalidate_tail(self, row_id: str, num_tokens: int) -> None:
        """Turn the row's last num_tokens valid columns into holes (rejected draft tokens)."""
        if num_tokens <= 0:
            return
        b = self.row_index(row_id)
        with torch.inference_mode():  # the mask is made in inference mode by the forward step
            idx = self.valid[b].nonzero().squeeze(1)
            self.valid[b, idx[-num_tokens:]] = False
        self._trim_trailing_holes()

    def _trim_trailing_holes(self) -> None:
        """Drop columns at the end that no row uses (e.g. every row rejected its last drafts), so
        a lone sequence keeps a hole-free cache and the model's plain causal path."""
        if self.valid is None or self.valid.numel() == 0:
            return
        used = self.valid.any(dim=0).nonzero()
        end = int(used[-1]) + 1 if used.numel() else 0
        if end < self.valid.shape[1]:
            # the buffers keep their capacity: the next step writes into the freed columns
            # (trimming them to views of the used width made every step after a rejection regrow
            # and copy the whole cache)
            self._len = min(self._len, end)
            self._vlen = min(self._vlen, end)
            self.valid = self.valid[:, :end]

    def clear(self) -> None:
        self.row_ids = []
        self._kbuf, self._vbuf, self._len, self._vlen, self.valid = [], [], 0, 0, None

    # ---- hole management
    def hole_fraction(self) -> float:
        if self.valid is None or self.valid.numel() == 0:
            return 0.0
        return 1.0 - float(self.valid.float().mean())

    def _trim_leading_holes(self) -> None:
        if self.valid is None or self.valid.numel() == 0:
            return
        any_valid = self.valid.any(dim=0)
        if not bool(any_valid.any()):
            return
        first = int(any_valid.nonzero()[0])
        if first:  # views from `first` on, spare columns kept
            self._kbuf = [b[:, :, first:] for b in self._kbuf]
            self._vbuf = [b[:, :, first:] for b in self._vbuf]
            self._len, self._vlen = self._len - first, self._vlen - first
            self.valid = self.valid[:, first:]

    def compact(self) -> None:
        """Rebuild rows from their valid columns only (left-padded to the longest row)."""
        if not self.keys:
            return
        ids = list(self.row_ids)
        rows = [self.extract(r) for r in ids]
        self.clear()
        self.add_rows(ids, rows)


def _with_rows(buf: torch.Tensor, rows: int) -> torch.Tensor | None:
    """The buffer [B, H, C, D] seen with `rows` rows over its own storage (strides unchanged),
    or None when the storage does not reach that far."""
    shape = (rows, *buf.shape[1:])
    last = buf.storage_offset() + sum((n - 1) * st for n, st in zip(shape, buf.stride()))
    if last >= buf.untyped_storage().nbytes() // buf.element_size():
        return None
    return buf.as_strided(shape, buf.stride(), buf.storage_offset())


COMPACT_MIN_WIDTH = 64  # below this a cache is too small for its holes to matter
COMPACT_HOLE_FRACTION = 0.5


def compact_if_holey(kv: BatchKV) -> bool:
    """Squeeze the holes out when that would at least halve a cache of some size. Compaction
    rebuilds every row left-padded to the longest one, so what it can free is the width beyond
    the longest row's valid tokens; the padding of shorter rows stays. (Judging by the hole
    fraction alone re-compacted a batch with one long row on every step: it stays holey.)"""
    # the longest row first: one reduction, and it rules compaction out on nearly every step
    # (the hole fraction first cost ~0.08 ms a step at batch 8, 3 % of a batched run)
    if kv.width < COMPACT_MIN_WIDTH or max(kv.num_valid(), default=0) > (1 - COMPACT_HOLE_FRACTION) * kv.width:
        return False
    if kv.hole_fraction() <= COMPACT_HOLE_FRACTION:
        return False
    kv.compact()
    return True


class PrefixCache:
    """Finished sequences' KV rows, keyed by their token ids; LRU-evicted under a byte bound."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple[int, ...], RowKV] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, token_ids: tuple[int, ...], row: RowKV) -> None:
        if row.num_tokens == 0 or row.num_tokens != len(token_ids) or row.nbytes > self.max_bytes:
            return
        # an entry that is a prefix of the new one adds nothing
        for key in [k for k in self._entries if len(k) <= len(token_ids) and token_ids[: len(k)] == k]:
            del self._entries[key]
        self._entries[token_ids] = row
        self._entries.move_to_end(token_ids)
        self._evict()

    def _evict(self) -> None:
        while self._entries and self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    def set_max_bytes(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._evict()

    def lookup(self, token_ids: tuple[int, ...], max_tokens: int) -> RowKV | None:
        """The longest cached prefix of token_ids (at most max_tokens), or None."""
        best_key, best_len = None, 0
        for key in self._entries:
            n = _common_prefix(key, token_ids)
            if n > best_len:
                best_key, best_len = key, n
        best_len = min(best_len, max_tokens)
        if best_key is None or best_len == 0:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(best_key)
        return self._entries[best_key].cropped(best_len)

    def clear(self) -> None:
        self._entries.clear()


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
