"""Tune: every point measured or listed with a reason; the Pareto set against a brute-force
definition; recommendations satisfy their constraints; cancel and resume lose nothing."""

from __future__ import annotations

import random

import pytest

from engine.config import BatchingConfig, EngineConfig, ModelSpec, Quantisation, SpeculativeConfig, SpeculativeMode
from engine.tune import GridPoint, PointResult, Sweep, pareto_front, recommend


def brute_front(points, objectives):
    out = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if i == j:
                continue
            no_worse = all((q[k] >= p[k]) if mx else (q[k] <= p[k]) for k, mx in objectives)
            better = any((q[k] > p[k]) if mx else (q[k] < p[k]) for k, mx in objectives)
            dominated |= no_worse and better
        if not dominated:
            out.append(i)
    return sorted(out)


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_equals_the_brute_force_definition(seed):
    rng = random.Random(seed)
    objectives = (("a", True), ("b", False))
    points = [{"a": rng.randint(0, 9), "b": rng.randint(0, 9)} for _ in range(rng.randint(1, 30))]
    assert sorted(pareto_front(points, objectives)) == brute_front(points, objectives)


def _r(name, tps, thr, weights, ppl, rss=100):
    return PointResult(name, {}, single_tokens_per_s=tps, throughput_tokens_per_s=thr, weights_bytes=weights,
                       kv_cache_bytes=0, peak_rss_bytes=rss, perplexity_ratio=ppl, users=4)


def test_recommendations_satisfy_their_constraints():
    results = [_r("a", 100, 300, 100, 1.0), _r("b", 150, 250, 100, 1.0), _r("c", 90, 320, 20, 1.05),
               _r("d", 80, 200, 30, 1.01), PointResult("e", {}, status="skipped", reason="x")]
    assert recommend(results, "fastest single stream").point == "b"
    assert recommend(results, "most throughput").point == "c"
    assert recommend(results, "smallest memory within 2% perplexity").point == "d"  # c is smaller but 5% worse


@pytest.fixture()
def points(tiny_pair_dirs):
    _, draft = tiny_pair_dirs
    seq = BatchingConfig(enabled=False)
    return [
        GridPoint("base", EngineConfig(batching=seq)),
        GridPoint("ngram", EngineConfig(batching=seq, speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM))),
        GridPoint("draft", EngineConfig(batching=seq, speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT,
                                                                                   draft_model=str(draft)))),
        GridPoint("no draft", EngineConfig(batching=seq, speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT))),
        GridPoint("bf16", EngineConfig(batching=seq, quantisation=Quantisation.BF16)),
    ]


def test_every_point_is_measured_or_listed_with_a_reason(tiny_pair_dirs, points, tmp_path):
    target, _ = tiny_pair_dirs
    sweep = Sweep(ModelSpec(str(target)), points, users=2, save_to=tmp_path / "tune.json")
    seen = []
    results = sweep.run(seen.append)
    assert [r.name for r in results] == [p.name for p in points]
    by = {r.name: r for r in results}
    assert by["no draft"].status == "skipped" and "draft" in by["no draft"].reason
    for name in ("base", "ngram", "draft", "bf16"):
        r = by[name]
        assert r.measured, r.reason
        assert r.single_tokens_per_s > 0 and r.throughput_tokens_per_s > 0 and r.weights_bytes > 0
    assert by["base"].perplexity_ratio == 1.0 and by["base"].agreement == 1.0
    assert by["draft"].agreement == 1.0 and by["draft"].acceptance_rate is not None  # greedy spec is exact
    assert by["draft"].advisor_k is not None
    assert by["bf16"].weights_bytes < by["base"].weights_bytes
    assert [p.done for p in seen if p.result is not None] == [1, 2, 3, 4, 5]


def test_cancel_and_resume_lose_no_measured_point(tiny_pair_dirs, points, tmp_path):
    target, _ = tiny_pair_dirs
    save = tmp_path / "tune.json"
    first = Sweep(ModelSpec(str(target)), points, users=2, save_to=save)

    def stop_after_two(p):
        if p.result is not None and p.done == 2:
            first.cancel.set()

    partial = first.run(stop_after_two)
    assert [r.name for r in partial] == ["base", "ngram"]
    second = Sweep(ModelSpec(str(target)), points, users=2, save_to=save)
    assert second.resume() == 2
    measured_again = []
    results = second.run(lambda p: measured_again.append(p.point) if p.result is None else None)
    assert "base" not in measured_again and "ngram" not in measured_again
    assert [r.name for r in results] == [p.name for p in points]
    assert results[0].single_tokens_per_s == partial[0].single_tokens_per_s


def test_quality_probes_load_on_one_torch_thread(tiny_pair_dirs, monkeypatch, tmp_path):
    """The sweep's perplexity models are loaded (and quantised) on the sweep's own thread: with
    two torch threads there, the OpenMP team it left behind halved the speed of every later
    point's engine thread. The load must run on one thread, and the count come back after."""
    import torch

    import engine.models as models

    target, _ = tiny_pair_dirs
    seen = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    before = torch.get_num_threads()
    sweep = Sweep(ModelSpec(str(target)), [GridPoint("bf16", EngineConfig(batching=BatchingConfig(enabled=False),
                                                                           quantisation=Quantisation.BF16))],
                  users=1, save_to=tmp_path / "tune.json")
    sweep._perplexity(Quantisation.BF16, sweep_tokenizer(target))
    assert seen == [1] and torch.get_num_threads() == before


def sweep_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
