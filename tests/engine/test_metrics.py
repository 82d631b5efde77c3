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
    assert s.token_gaps_s == pytest.approx((0.2, 0.1, 0.5))  # the 3-token emission: 0.3 s over 3
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
    """Driven step by step on this thread (EngineCore, no engine thread), so nothing moves while we look."""
    import time

    import torch

    from engine.config import EngineConfig, ModelSpec
    from engine.core import EngineCore
    from engine.events import StepCompleted

    events = []
    core = EngineCore(events.append, EngineConfig(), ModelSpec(str(tiny_llama_dir)))
    core.startup()
    with torch.inference_mode():
        for i, p in enumerate(("the quick brown fox", "a horse")):
            core.add_request(GenerateRequest(prompt=p, sampling=greedy(40, ignore_eos=True), request_id=f"r{i}"),
                             time.monotonic())
        for _ in range(12):
            core.step()
        kv = core.kv.batch
        allocated = sum(t.untyped_storage().nbytes() for pair in kv.buffers() for t in pair)
        cfg = core.loaded.model.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        per_col = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 4  # float32
        used = len(kv.row_ids) * kv.width * per_col
        assert kv.nbytes == allocated
        assert used <= allocated <= 2 * used + len(kv.row_ids) * 64 * per_col  # bounded spare capacity
        last = [e.stats for e in events if isinstance(e, StepCompleted)][-1]
        assert last.kv_cache_bytes == allocated
        while core.has_work():
            core.step()
        assert core.kv.nbytes == 0


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
