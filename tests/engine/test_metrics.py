"""Metrics cross-checked against independent measurements."""

from __future__ import annotations

import pytest

from engine.config import GenerateRequest
from engine.metrics import SlidingRate, SpecStats, percentile, request_stats
from tests.helpers.engine_utils import greedy, pump, started_engine, wait_finished


def test_request_stats_follow_the_definitions():
    s = request_stats(prompt_tokens=10, cached_prompt_tokens=4, submitted_s=100.0,
                      emission_times_s=[100.5, 100.7, 101.0, 101.5], emission_counts=[1, 1, 3, 1],
                      finished_s=101.5, prefill_time_s=0.3, spec=SpecStats())
    assert s.ttft_s == pytest.approx(0.5)
    assert s.itl_s == pytest.approx((0.2, 0.3, 0.5))
    assert s.completion_tokens == 6
    assert s.tpot_s == pytest.approx((1.5 - 0.5) / 5)
    assert s.tokens_per_s == pytest.approx(6 / 1.5)
    assert s.prefill_tokens_per_s == pytest.approx(6 / 0.3)


def test_percentile_matches_numpy():
    import numpy as np

    xs = [0.3, 0.1, 0.9, 0.5, 0.7, 0.2]
    for q in (0, 50, 95, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_sliding_rate():
    r = SlidingRate(window_s=2.0)
    for i in range(10):
        r.add(i * 0.5, 2)  # 4 tokens/s
    assert r.rate(4.5) == pytest.approx(4 * 2.0 / 2.0, rel=0.3)
    assert r.rate(100.0) == 0.0


def test_spec_stats_rates():
    s = SpecStats(num_drafts=2, num_draft_tokens=8, num_accepted_tokens=6)
    assert s.acceptance_rate == 0.75
    assert s.mean_tokens_per_verify == 4.0


def test_kv_bytes_equal_the_cache_tensors(tiny_llama_dir):
    engine, c = started_engine(tiny_llama_dir)
    try:
        rids = [engine.submit(GenerateRequest(prompt=p, sampling=greedy(2000, ignore_eos=True)))
                for p in ("the quick brown fox", "a horse")]
        pump(engine, c, lambda c: all(len(c.tokens[r]) >= 5 for r in rids))
        kv = engine._core.runner.kv  # read while the engine is mid-request (tensors are replaced, not mutated)
        tensors = list(kv.keys) + list(kv.values)
        expected = sum(t.numel() * t.element_size() for t in tensors)
        cfg = engine._core.loaded.model.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        per_col = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 4
        assert expected == len(kv.row_ids) * kv.width * per_col
        assert c.steps[-1].kv_cache_bytes > 0
        for r in rids:
            engine.abort(r)
        wait_finished(engine, rids, c)
        assert engine._core.runner.kv.nbytes == 0
    finally:
        engine.shutdown()


def test_ttft_includes_queue_wait(tiny_llama_dir):
    engine, c = started_engine(tiny_llama_dir, None)
    try:
        from engine.config import BatchingConfig, EngineConfig

        engine.reconfigure(EngineConfig(batching=BatchingConfig(enabled=False)))
        first = engine.submit(GenerateRequest(prompt="the", sampling=greedy(40, ignore_eos=True)))
        second = engine.submit(GenerateRequest(prompt="the", sampling=greedy(2, ignore_eos=True)))
        wait_finished(engine, [first, second], c)
        a, b = c.finished[first].stats, c.finished[second].stats
        # batching off: the second waits for the whole first request
        assert b.ttft_s >= a.e2e_s * 0.9
        assert b.first_token_s >= a.finished_s - 1e-6
    finally:
        engine.shutdown()
