"""KV bookkeeping with seeded tensors: the batch cache, the prefix cache and the KV managers."""

from __future__ import annotations

import torch

from engine.kv import BatchKV, PrefixCache, RowKV, compact_if_holey
from engine.kv_manager import CachedKV, NoKV
from engine.scheduler import PlanEntry, Sequence

LAYERS, HEADS, DIM = 2, 2, 4


def row(n: int, seed: int) -> RowKV:
    g = torch.Generator().manual_seed(seed)
    return RowKV([(torch.randn(HEADS, n, DIM, generator=g), torch.randn(HEADS, n, DIM, generator=g))
                  for _ in range(LAYERS)])


def same(a: RowKV, b: RowKV) -> bool:
    return a.num_tokens == b.num_tokens and all(
        torch.equal(ka, kb) and torch.equal(va, vb) for (ka, va), (kb, vb) in zip(a.layers, b.layers))


def test_rows_of_different_lengths_are_left_padded_and_extract_back():
    kv = BatchKV()
    a, b = row(3, 1), row(5, 2)
    kv.add_rows(["a", "b"], [a, b])
    assert kv.width == 5 and kv.num_valid() == [3, 5]
    assert kv.valid[0].tolist() == [False, False, True, True, True]
    assert same(kv.extract("a"), a) and same(kv.extract("b"), b)


def test_rejected_tail_becomes_holes_and_trailing_holes_are_trimmed():
    kv = BatchKV()
    kv.add_rows(["a"], [row(6, 3)])
    kv.invalidate_tail("a", 2)
    assert kv.width == 4 and kv.num_valid() == [4]  # a lone row keeps a hole-free cache
    kv.add_rows(["b"], [row(4, 4)])
    kv.invalidate_tail("a", 1)
    assert kv.width == 4 and kv.num_valid() == [3, 4]  # b still uses the last column: a hole in a
    assert kv.valid[0].tolist() == [True, True, True, False]


def test_compaction_keeps_every_row_and_drops_the_holes():
    kv = BatchKV()
    rows = {"a": row(70, 5), "b": row(70, 6)}
    kv.add_rows(list(rows), list(rows.values()))
    for rid in rows:
        kv.valid[kv.row_index(rid), 10:60] = False  # 50 holes in each row
    before = {rid: kv.extract(rid) for rid in rows}
    assert compact_if_holey(kv)
    assert kv.width == 20 and kv.hole_fraction() == 0.0
    assert all(same(kv.extract(rid), before[rid]) for rid in rows)
    assert not compact_if_holey(kv)


def test_compaction_waits_until_it_can_halve_the_cache():
    """A long row beside short ones: the short rows' left padding is holes that compaction
    keeps, so a cache that is mostly holes is not rebuilt on every step for nothing."""
    kv = BatchKV()
    rows = {"long": row(100, 1), **{f"s{i}": row(5, 2 + i) for i in range(6)}}
    kv.add_rows(list(rows), list(rows.values()))
    assert kv.hole_fraction() > 0.8
    assert not compact_if_holey(kv) and kv.width == 100
    kv.valid[kv.row_index("long"), :60] = False  # the long row's rejected drafts, say
    assert compact_if_holey(kv) and kv.width == 40


def test_removing_rows_trims_leading_holes_and_counts_bytes():
    kv = BatchKV()
    kv.add_rows(["short", "long"], [row(2, 7), row(9, 8)])
    kv.remove_rows(["long"])
    assert kv.row_ids == ["short"] and kv.width == 2
    per_token = LAYERS * 2 * HEADS * DIM * 4
    assert kv.nbytes >= 2 * per_token
    kv.remove_rows(["short"])
    assert kv.nbytes == 0 and kv.width == 0


def test_removing_rows_moves_the_last_row_into_the_gap_and_keeps_every_row():
    kv = BatchKV()
    rows = {rid: row(n, i) for i, (rid, n) in enumerate((("a", 3), ("b", 7), ("c", 5), ("d", 6), ("e", 2)))}
    kv.add_rows(list(rows), list(rows.values()))
    storage = kv.buffers()[0][0].untyped_storage().data_ptr()
    kv.remove_rows(["b", "a"])
    assert sorted(kv.row_ids) == ["c", "d", "e"]
    assert all(same(kv.extract(rid), rows[rid]) for rid in kv.row_ids)
    assert kv.width == 6  # b's columns (the widest) were leading holes of the rest: trimmed
    assert kv.buffers()[0][0].untyped_storage().data_ptr() == storage  # no copy of the batch


def test_a_row_joining_after_a_leave_takes_its_slot_without_copying_the_batch():
    kv = BatchKV()
    rows = {rid: row(n, i) for i, (rid, n) in enumerate((("a", 6), ("b", 7), ("c", 5)))}
    kv.add_rows(list(rows), list(rows.values()))
    storage = kv.buffers()[0][0].untyped_storage().data_ptr()
    kv.remove_rows(["a"])
    rows["d"] = row(4, 9)
    kv.add_rows(["d"], [rows["d"]])  # fits the width (7): the freed slot
    assert kv.buffers()[0][0].untyped_storage().data_ptr() == storage
    assert sorted(kv.row_ids) == ["b", "c", "d"] and kv.width == 7
    assert all(same(kv.extract(rid), rows[rid]) for rid in kv.row_ids)
    assert kv.valid[kv.row_index("d")].tolist() == [False] * 3 + [True] * 4
    assert torch.count_nonzero(kv.buffers()[0][0][kv.row_index("d"), :, :3]) == 0  # holes are zeros
    rows["e"] = row(2, 10)
    kv.add_rows(["e"], [rows["e"]])  # no spare row left: a new allocation, same contents
    assert kv.buffers()[0][0].untyped_storage().data_ptr() != storage
    assert all(same(kv.extract(rid), rows[rid]) for rid in kv.row_ids)


def test_trimming_keeps_the_buffers_capacity_so_the_next_step_writes_in_place():
    """After rejected drafts are trimmed the buffers keep their spare columns; trimming them to
    the used width made every step after a rejection regrow (copy) the whole cache."""
    from engine.runner import BufferLayer

    kv = BatchKV()
    kv.add_rows(["a"], [row(6, 3)])
    kv.invalidate_tail("a", 2)
    (k, v), = kv.buffers()[:1]
    capacity = k.shape[2]
    assert capacity > kv.width == 4
    layer = BufferLayer(k, v, kv.width)
    new = torch.ones(1, HEADS, 3, DIM)
    layer.update(new, new)
    assert layer.buf_k.data_ptr() == k.data_ptr()  # written in place: no regrowth
    assert torch.equal(layer.keys[0, :, 4:], new[0])


def test_prefix_cache_longest_prefix_lru_bound_and_counts():
    one = row(4, 9).nbytes
    cache = PrefixCache(max_bytes=2 * one)
    cache.store((1, 2, 3, 4), row(4, 9))
    cache.store((5, 6, 7, 8), row(4, 10))
    hit = cache.lookup((1, 2, 3, 9, 9), max_tokens=10)
    assert hit is not None and hit.num_tokens == 3
    assert cache.lookup((7, 7), max_tokens=10) is None
    assert (cache.hits, cache.misses) == (1, 1)
    cache.store((11, 12, 13, 14), row(4, 11))  # over the bound: the least recently used goes
    assert cache.lookup((5, 6, 7, 8), max_tokens=3) is None
    assert cache.lookup((1, 2, 3, 4), max_tokens=3).num_tokens == 3
    assert cache.nbytes <= 2 * one


def _seq(rid: str, n: int, computed: int = 0) -> Sequence:
    s = Sequence(request_id=rid, prompt_ids=list(range(1, n + 1)))
    s.num_computed_tokens = computed
    return s


def test_no_kv_recomputes_everything_and_keeps_nothing():
    m = NoKV(PrefixCache(1 << 20))
    s = _seq("a", 5, computed=0)
    assert not m.keeps_cache
    assert m.tokens_to_compute(PlanEntry(s, 5, True)) == [1, 2, 3, 4, 5]
    assert m.nbytes == 0 and m.lookup_prefixes([s]) == {}


def test_cached_kv_gives_only_the_new_tokens_and_offers_finished_rows_for_reuse():
    prefix = PrefixCache(1 << 20)
    m = CachedKV(prefix, reuse_prefixes=True)
    s = _seq("a", 5, computed=3)
    assert m.tokens_to_compute(PlanEntry(s, 2, True)) == [4, 5]
    m.batch.add_rows(["a"], [row(5, 12)])
    s.num_computed_tokens = 5
    m.release(s, reusable=True)
    assert m.batch.row_ids == [] and len(prefix) == 1
    waiting = _seq("b", 8)  # shares tokens 1..5 with the finished one
    assert m.lookup_prefixes([waiting]) == {"b": 5}
    # with reuse off nothing is offered or found
    m.reuse_prefixes = False
    m.batch.add_rows(["c"], [row(3, 13)])
    c = _seq("c", 3, computed=3)
    m.release(c, reusable=True)
    assert len(prefix) == 1 and m.lookup_prefixes([_seq("d", 8)]) == {}


def test_preempted_rows_rejoin_with_their_cache():
    m = CachedKV(PrefixCache(1 << 20), reuse_prefixes=False)
    r = row(4, 14)
    m.batch.add_rows(["a"], [r])
    s = _seq("a", 4, computed=4)
    m.preempt(s)
    assert m.batch.row_ids == []
    assert same(m._take_stash(s), r)
    m.drop()
    assert m._take_stash(s) is None
