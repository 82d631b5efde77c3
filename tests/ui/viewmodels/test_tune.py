"""The Tune tab's model: progress text with its ETA, the front on the chosen axes, short labels,
the advisor's k beside the measured best k, CSV/Markdown with the same figures."""

from __future__ import annotations

import csv
import io

from engine.config import EngineConfig, Quantisation, SpeculativeConfig, SpeculativeMode
from engine.tune import PointResult, Progress
from ui.viewmodels.tune import TABLE_COLUMNS, TuneModel, cell

MIB = 1 << 20


def point(name, cfg, tps, weights, kv=0, rss=500 * MIB, ppl=1.0, k_adv=None, ttft=0.02):
    return PointResult(name, cfg.to_dict(), single_tokens_per_s=tps, ttft_s=ttft, throughput_tokens_per_s=tps * 2,
                       users=4, weights_bytes=weights, kv_cache_bytes=kv, peak_rss_bytes=rss, perplexity_ratio=ppl,
                       advisor_k=k_adv)


def spec(mode, k):
    return EngineConfig(speculative=SpeculativeConfig(mode=mode, num_draft_tokens=k))


def model() -> TuneModel:
    m = TuneModel()
    m.start(["batch 8 · none", "batch 8 · none · draft k=2", "batch 8 · none · draft k=4", "batch 8 · nf4",
             "batch 8 · skipped"])
    m.add(point("batch 8 · none · draft k=4", spec(SpeculativeMode.DRAFT, 4), 150, 110 * MIB, 20 * MIB, k_adv=2))
    m.add(point("batch 8 · none", EngineConfig(), 100, 100 * MIB, 10 * MIB))
    m.add(point("batch 8 · none · draft k=2", spec(SpeculativeMode.DRAFT, 2), 160, 110 * MIB, 10 * MIB, k_adv=2))
    m.add(point("batch 8 · nf4", EngineConfig(quantisation=Quantisation.NF4), 120, 20 * MIB, 10 * MIB, ppl=1.01))
    m.add(PointResult("batch 8 · skipped", {}, status="skipped", reason="no draft model"))
    return m


def test_results_keep_grid_order_and_the_front_follows_the_axes():
    m = model()
    assert [r.name for r in m.results][:2] == ["batch 8 · none", "batch 8 · none · draft k=2"]
    # weights + KV: nf4 is smallest, draft k=2 fastest; none and draft k=4 are dominated
    assert m.front() == ["batch 8 · none · draft k=2", "batch 8 · nf4"]
    m.x_axis = "ttft"
    assert m.front() == ["batch 8 · none · draft k=2"]  # every TTFT equal: the fastest alone
    short, common = m.labels()
    assert common == "batch 8" and short["batch 8 · none · draft k=2"] == "none · draft k=2"


def test_progress_text_has_the_eta_and_the_k_advice_compares():
    m = model()
    m.on_progress(Progress(2, 5, "batch 8 · nf4", 42.0))
    assert m.progress_text() == "2/5 · measuring batch 8 · nf4… · about 42 s left"
    (adv,) = m.k_advice()
    assert (adv.mode, adv.advisor_k, adv.best_k) == ("draft", 2, 2) and "holds" in adv.text()


def test_exports_carry_the_table_figures():
    m = model()
    rows = list(csv.DictReader(io.StringIO(m.to_csv())))
    assert len(rows) == 5 and rows[4]["reason"] == "no draft model"
    assert [r["pareto"] for r in rows] == ["False", "True", "False", "True", "False"]
    md = m.to_markdown()
    line = next(x for x in md.splitlines() if x.startswith("| ★ batch 8 · nf4 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    keys = [k for k, _ in TABLE_COLUMNS]
    assert cells[keys.index("weights_bytes")] == cell(m.results[3], "weights_bytes") == "20.0"
    assert cells[keys.index("perplexity_ratio")] == "1.010"
    assert "**fastest single stream**: batch 8 · none · draft k=2" in md
