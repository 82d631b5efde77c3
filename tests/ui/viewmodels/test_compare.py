"""ui.viewmodels.compare: per-run records from engine events, medians over repeats, ratios against the
baseline, agreement, and reports that carry every configuration and figure (no Qt, no model)."""

from __future__ import annotations

import json
import statistics

import pytest

from engine import events as ev
from engine.config import EngineConfig, SamplingParams
from engine.events import FinishReason, TokenOrigin
from engine.metrics import SpecStats, request_stats
from tests.helpers.compare_runs import BASE, INFO, KV, NF4, feed_run
from ui.compare_provenance import collect_provenance
from ui.viewmodels.compare import SUMMARY_COLUMNS, ColumnSpec, CompareJob, Comparison, ratio, spread
from ui.viewmodels.compare_format import fmt_agreement, fmt_spread, ratio_quality

def test_spread_and_ratio_helpers():
    s = spread([3.0, None, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    assert spread([1.0, 4.0]).median == 2.5  # even count: mean of the middle two
    assert spread([None]) is None
    assert ratio(2.0, 4.0) == 0.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert fmt_spread(spread([0.004]), "ttft_s") == "4.0 ms"
    assert fmt_spread(spread([0.004, 0.005, 0.006]), "ttft_s") == "5.0 ms (4.0–6.0)"
    assert fmt_spread(spread([100.0, 200.0]), "tokens_per_s") == "150 tok/s (100–200)"
    assert ratio_quality("speed", 2.0) == "better" and ratio_quality("ttft", 2.0) == "worse"
    assert ratio_quality("memory", 1.01) == "same"


def test_medians_over_repeats_match_the_per_repeat_values():
    comp = Comparison([BASE, KV], prompt="p", sampling=SamplingParams(max_new_tokens=4), repeats=3)
    gaps = {0: [0.030, 0.010, 0.020], 1: [0.012, 0.008, 0.004]}
    ttfts = {0: [0.5, 0.1, 0.3], 1: [0.2, 0.3, 0.1]}
    for r in range(3):
        for c in (0, 1):
            feed_run(comp, c, r, [5, 6, 7, 8], start=10.0 * (r + 1) + c, ttft=ttfts[c][r], gap=gaps[c][r],
                     kv_per_token=100 * c)
    for c in (0, 1):
        runs = comp.columns[c].runs
        assert [r.repeat for r in runs] == [0, 1, 2]
        for metric in ("tokens_per_s", "ttft_s", "tpot_s"):
            values = [getattr(r, metric) for r in runs]
            s = comp.columns[c].spread(metric)
            assert s.median == pytest.approx(statistics.median(values))
            assert (s.low, s.high) == (min(values), max(values))
        assert [r.ttft_s for r in runs] == pytest.approx(ttfts[c])
    # TPOT = (e2e - ttft) / (n - 1) = the gap here
    assert [r.tpot_s for r in comp.columns[0].runs] == pytest.approx(gaps[0])
    # peak KV from the steps (the stale step before the run was ignored), memory = weights + peak KV
    assert comp.columns[1].runs[0].peak_kv_bytes == 400
    assert comp.columns[1].runs[0].memory_bytes == 4400
    assert comp.columns[0].runs[0].memory_bytes == 4000
    r = comp.ratios(1)
    med = lambda c, m: statistics.median(getattr(x, m) for x in comp.columns[c].runs)
    assert r["speed"] == pytest.approx(med(1, "tokens_per_s") / med(0, "tokens_per_s"))
    assert r["ttft"] == pytest.approx(0.2 / 0.3)
    assert r["tpot"] == pytest.approx(0.008 / 0.020)
    assert r["memory"] == pytest.approx(4400 / 4000)
    assert comp.ratios(0)["speed"] == pytest.approx(1.0)


def test_agreement_identical_and_first_divergence():
    comp = Comparison([BASE, KV, NF4], prompt="p")
    feed_run(comp, 0, 0, [1, 2, 3, 4, 5, 6, 7, 8], start=1.0, ttft=0.1, gap=0.01)
    feed_run(comp, 1, 0, [1, 2, 3, 4, 5, 6, 7, 8], start=2.0, ttft=0.1, gap=0.01)
    feed_run(comp, 2, 0, [1, 2, 3, 4, 5, 9, 7, 9], start=3.0, ttft=0.1, gap=0.01)
    assert comp.agreement(1).first_divergence is None
    a = comp.agreement(2)
    assert a.first_divergence == 5 and a.share == pytest.approx(6 / 8)
    rows = comp.summary_rows()
    assert rows[0]["agreement"] == "reference"
    assert rows[1]["agreement"] == "identical"
    assert rows[2]["agreement"] == "75% same · differs from token 5" == fmt_agreement(a)
    # the per-token pieces line up with the token ids, for highlighting from the divergence on
    out = comp.columns[2].output
    assert len(out.pieces) == len(out.token_ids) and out.pieces[5] == "t9 "


def test_origins_and_acceptance_are_kept():
    comp = Comparison([BASE, KV], prompt="p")
    feed_run(comp, 0, 0, [1, 2, 3], start=1.0, ttft=0.1, gap=0.01)
    feed_run(comp, 1, 0, [1, 2, 3], start=2.0, ttft=0.1, gap=0.01, draft={0, 1})
    out = comp.columns[1].output
    assert out.origins == ("draft", "draft", "target")
    assert out.acceptance_rate == pytest.approx(0.5)
    assert comp.figures(1)["acceptance"] == "50%"


def test_warmup_runs_are_kept_apart():
    comp = Comparison([BASE, KV], prompt="p", repeats=1, warmup=True)
    feed_run(comp, 0, -1, [1, 2], start=1.0, ttft=5.0, gap=1.0)
    feed_run(comp, 0, 0, [1, 2], start=10.0, ttft=0.1, gap=0.01)
    col = comp.columns[0]
    assert len(col.warmups) == 1 and len(col.runs) == 1
    assert col.spread("ttft_s").median == pytest.approx(0.1)


def test_reports_carry_every_configuration_and_figure():
    comp = Comparison([BASE, KV, NF4], messages=(("user", "to be or not to be"),),
                      sampling=SamplingParams(temperature=0.0, seed=11, max_new_tokens=4), repeats=2)
    for c in range(3):
        comp.set_model_info(c, INFO)
        for r in range(2):
            toks = [1, 2, 3, 4] if c < 2 else [1, 2, 9, 9]
            feed_run(comp, c, r, toks, start=10.0 * r + c, ttft=0.1 * (c + 1 + r), gap=0.01 * (c + 1),
                     kv_per_token=64 * c)
    comp.finished = True
    prov = collect_provenance(comp)
    for key in ("app_version", "torch", "transformers", "bitsandbytes", "python", "devices"):
        assert key in prov
    assert prov["devices"] == ["cpu"]
    md = comp.to_markdown(prov)
    for c, row in enumerate(comp.summary_rows()):
        for key, _ in SUMMARY_COLUMNS:
            assert row[key] in md, (key, row[key])
        for value in comp.figures(c).values():
            assert value in md
        spec = comp.columns[c].spec
        assert spec.config.describe() in md
        assert json.dumps(spec.config.to_dict(), sort_keys=True) in md
    assert "seed 11" in md and "to be or not to be" in md and prov["torch"] in md
    data = json.loads(comp.to_json(prov))
    assert data["provenance"] == prov
    assert data["seed"] == 11 and data["messages"] == [["user", "to be or not to be"]]
    assert data["sampling"]["max_new_tokens"] == 4
    for c, col in enumerate(data["columns"]):
        assert EngineConfig.from_dict(col["config"]) == comp.columns[c].spec.config
        assert col["model"] == "tiny" and col["model_info"]["device"] == "cpu"
        assert len(col["runs"]) == 2
        assert col["figures"]["tokens_per_s"]["median"] == pytest.approx(
            statistics.median(r["tokens_per_s"] for r in col["runs"]))
        assert col["figures_shown"] == comp.figures(c)
    assert data["columns"][2]["agreement"] == {"identical": False, "share": 0.5, "first_divergence": 2}


def test_comparison_refuses_bad_input():
    with pytest.raises(ValueError):
        Comparison([], prompt="p")
    with pytest.raises(ValueError):
        Comparison([BASE], prompt="p", messages=(("user", "x"),))
    with pytest.raises(ValueError):
        Comparison([BASE], prompt="p", mode="sprint")
    comp = Comparison([BASE], prompt="p")
    with pytest.raises(KeyError):
        comp.finish(0, ev.RequestFinished(request_id="nope", reason=FinishReason.STOP, text="", token_ids=(),
                                          stats=request_stats(prompt_tokens=1, cached_prompt_tokens=0,
                                                              submitted_s=0.0, emission_times_s=[],
                                                              emission_counts=[], finished_s=0.0,
                                                              prefill_time_s=None, spec=SpecStats())))


def test_a_server_column_keeps_streamed_text_and_its_unknowns_stay_unknown():
    """A remote server streams text chunks: with token ids but no per-token pieces (vLLM), or with
    neither (`transformers serve`). The text is kept; tokens that cannot be compared give no
    agreement; the server's KV and memory are unknown, never 0."""
    server = ColumnSpec("vllm", "tiny", EngineConfig(), "custom", backend_label="remote http://h/v1 · tiny")
    plain = ColumnSpec("tserve", "tiny", EngineConfig(), "custom", backend_label="profile tserve: transformers serve")
    comp = Comparison([BASE, server, plain], prompt="p")
    feed_run(comp, 0, 0, [1, 2, 3], start=1.0, ttft=0.1, gap=0.01)
    for column, ids in ((1, ((1, 2), (3,))), (2, ((), ()))):
        rid = f"remote-{column}"
        comp.begin(CompareJob(column, 0, rid, 2.0))
        for n, (chunk, tok) in enumerate(zip(("t1 t2 ", "t3 "), ids)):
            comp.add_tokens(column, ev.TokensGenerated(request_id=rid, text=chunk, token_ids=tok,
                                                       origins=(TokenOrigin.TARGET,) * len(tok), timestamp_s=2.1 + n))
        stats = request_stats(prompt_tokens=None, cached_prompt_tokens=0, submitted_s=2.0, emission_times_s=[2.1, 3.1],
                              emission_counts=[2, 1], finished_s=3.1, prefill_time_s=None, spec=SpecStats())
        comp.finish(column, ev.RequestFinished(request_id=rid, reason=FinishReason.LENGTH, text="t1 t2 t3 ",
                                               token_ids=tuple(t for chunk in ids for t in chunk), stats=stats))
    with_ids, text_only = comp.columns[1].output, comp.columns[2].output
    assert "".join(with_ids.pieces) == "t1 t2 t3 " and len(with_ids.pieces) == len(with_ids.token_ids) == 3
    assert comp.agreement(1).first_divergence is None  # same ids as the baseline: identical
    assert "".join(text_only.pieces) == "t1 t2 t3 " and text_only.token_ids == ()
    assert comp.agreement(2) is None  # no token ids: cannot be compared token by token
    assert with_ids.peak_kv_bytes is None and with_ids.memory_bytes is None
    assert comp.figures(1)["kv"] == "–"
    assert server.to_dict()["config"] is None and server.label == "remote http://h/v1 · tiny"
