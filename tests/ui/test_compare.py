"""Compare bridge and view on real tiny models: greedy columns that differ only in KV cache,
batching or speculative decoding agree token for token, and the view says so; a quantised
column that diverges is highlighted from its first differing token; repeats give medians;
the exported report carries every configuration and figure shown."""

from __future__ import annotations

import json
import statistics
import threading

import pytest
import torch
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QPlainTextEdit,
    QTableWidget,
    QTextBrowser,
    QWidget,
)

from engine.config import (
    EngineConfig,
    KVCacheMode,
    ModelSpec,
    Quantisation,
    SamplingParams,
    SpeculativeMode,
)
from ui.compare_bridge import CompareBridge
from ui.viewmodels.compare import SUMMARY_COLUMNS, ColumnSpec, CompareJob, Comparison
from ui.compare_column import token_html
from ui.compare_view import CompareView
from ui.viewmodels.compare_presets import preset_config
from ui.theme import LIGHT

RUN_TIMEOUT_MS = 90_000
PROMPT = "to be or not to be"


@pytest.fixture
def make_view(qtbot):
    bridges = []

    def make(model: str | None, presets: tuple[str, ...], *, draft: str | None = None, max_tokens: int = 12):
        bridge = CompareBridge()
        bridges.append(bridge)
        view = CompareView(bridge, model, draft_model=draft)
        qtbot.addWidget(view)
        while len(view.panels) < len(presets):
            view.add_column()
        while len(view.panels) > len(presets):
            view.remove_column(view.panels[-1])
        for panel, preset in zip(view.panels, presets):
            panel.preset_combo.setCurrentText(preset)
        view.prompt_edit.setPlainText(PROMPT)
        view.max_tokens_spin.setValue(max_tokens)
        view.warmup_check.setChecked(False)
        return view

    yield make
    for bridge in bridges:
        assert bridge.shutdown(5.0), "compare engines did not stop"


def run_and_wait(qtbot, view: CompareView) -> Comparison:
    with qtbot.waitSignal(view.bridge.comparison_finished, timeout=RUN_TIMEOUT_MS):
        comp = view.run()
        assert comp is not None
        assert not view.run_button.isEnabled()  # running: Run is off until the comparison ends
    assert comp.finished and not comp.cancelled, view.status.text()
    return comp


def table_texts(view: CompareView) -> list[dict[str, str]]:
    return [{key: view.table.item(r, c).text() for c, (key, _) in enumerate(SUMMARY_COLUMNS)}
            for r in range(view.table.rowCount())]


def test_greedy_columns_differing_in_kv_batching_ngram_are_identical(qtbot, make_view, tiny_llama_dir):
    view = make_view(str(tiny_llama_dir), ("baseline", "KV cache", "all optimisations", "custom"))
    custom = view.panels[3]
    custom.kv_combo.setCurrentIndex(custom.kv_combo.findData(KVCacheMode.PREFIX))
    custom.spec_combo.setCurrentIndex(custom.spec_combo.findData(SpeculativeMode.NGRAM))
    custom.k_spin.setValue(2)
    custom.adaptive_check.setChecked(True)
    assert custom.config().speculative.adaptive and custom.config().kv_cache is KVCacheMode.PREFIX
    comp = run_and_wait(qtbot, view)

    assert view.bridge.pool.num_weight_copies == 1  # four engines, one copy of the weights
    base = comp.columns[0].output
    assert base.completion_tokens == 12
    for i in range(1, 4):
        assert comp.columns[i].output.token_ids == base.token_ids
        assert view.panels[i].divergence is None
    rows = table_texts(view)
    assert [r["agreement"] for r in rows] == ["reference", "identical", "identical", "identical"]
    assert [r["column"] for r in rows] == ["baseline", "KV cache", "all optimisations", "custom"]
    assert "Identical to the baseline: KV cache, all optimisations, custom" in view.status.text()
    assert view.panels[0].divergence is None
    assert comp.columns[2].spec.config.speculative.mode is SpeculativeMode.NGRAM  # no draft: n-gram
    # the ratios shown are the medians' ratios against column 0
    r = comp.ratios(1)
    assert rows[1]["speed"] == f"{r['speed']:.2f}×" and rows[1]["memory"] != "–"
    assert view.export_md_button.isEnabled() and view.run_button.isEnabled()


def test_draft_model_speculation_is_identical_and_coloured(qtbot, make_view, tiny_pair_dirs):
    target, draft = tiny_pair_dirs
    view = make_view(str(target), ("baseline", "speculative"), draft=str(draft), max_tokens=16)
    assert view.panels[1].config().speculative.mode is SpeculativeMode.DRAFT
    comp = run_and_wait(qtbot, view)
    spec_out = comp.columns[1].output
    assert spec_out.token_ids == comp.columns[0].output.token_ids
    assert table_texts(view)[1]["agreement"] == "identical"
    # tokens accepted from the draft are coloured, and the acceptance rate is shown
    assert "draft" in spec_out.origins
    view.panels[1].render(follow=False)
    assert LIGHT.draft_token.lower() in view.panels[1].text.toHtml().lower()
    assert view.panels[1].value_labels["acceptance"].text().endswith("%")
    assert view.panels[0].value_labels["acceptance"].text() == "–"
    # the draft's weights count in the speculative column's memory
    assert spec_out.weights_bytes > comp.columns[0].output.weights_bytes
    assert "accepted draft token" in view.legend.text()


def _soft_model(path):
    """A tiny Llama whose output head is scaled down, so 4-bit rounding can flip an argmax."""
    from transformers import AutoModelForCausalLM

    from tests.helpers.tiny_models import build_llama

    build_llama(path, layers=2, hidden=128)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(0.25)
    model.save_pretrained(path)
    return path


def test_real_nf4_column_runs_and_any_divergence_is_highlighted(qtbot, make_view, tmp_path):
    model = _soft_model(tmp_path / "soft-llama")
    view = make_view(str(model), ("baseline", "nf4"), max_tokens=32)
    view.prompt_edit.setPlainText("a horse a horse my kingdom for a horse")
    comp = run_and_wait(qtbot, view)
    assert comp.columns[1].spec.config.quantisation is Quantisation.NF4
    out, base = comp.columns[1].output, comp.columns[0].output
    assert out.completion_tokens == 32 and out.error is None
    assert out.weights_bytes < base.weights_bytes  # 4-bit weights are smaller
    agreement = comp.agreement(1)
    cell = table_texts(view)[1]["agreement"]
    # the output head is flattened (close top-2 logits), so 4-bit rounding flips an argmax in 32 tokens
    assert agreement.first_divergence is not None, "nf4 agreed token for token: nothing to highlight"
    d = agreement.first_divergence
    assert cell.endswith(f"differs from token {d}")
    assert view.panels[1].divergence == d and view.panels[0].divergence == d
    for panel in view.panels:
        panel.render(follow=False)
        assert "ends here" in panel.text.toHtml() or LIGHT.danger.lower() in panel.text.toHtml().lower()


def test_divergence_highlighting_path_with_synthetic_tokens(qtbot):
    """The view highlights both columns from the first differing token (synthetic pair)."""
    from tests.helpers.compare_runs import BASE, NF4, feed_run

    bridge = CompareBridge()
    view = CompareView(bridge, "tiny")
    qtbot.addWidget(view)
    view.remove_column(view.panels[2])
    comp = Comparison([BASE, NF4], prompt="p")
    feed_run(comp, 0, 0, [1, 2, 3, 4, 5, 6], start=1.0, ttft=0.1, gap=0.01)
    feed_run(comp, 1, 0, [1, 2, 3, 9, 5, 6], start=2.0, ttft=0.1, gap=0.02)
    comp.finished = True
    view.comparison = comp
    bridge.comparison_finished.emit(comp)
    assert view.panels[0].divergence == 3 and view.panels[1].divergence == 3
    assert table_texts(view)[1]["agreement"] == "83% same · differs from token 3"
    html = token_html(["a ", "b ", "c ", "X ", "e "], ["target"] * 5, 3, LIGHT)
    before, after = html.split("X ")[0], html.split("X ")[1]
    assert LIGHT.danger in before.rsplit("<span", 1)[1]  # the first differing token: strongest colour
    assert LIGHT.danger_soft in after  # and everything after it
    assert "background" not in html.split("c ")[0]  # nothing before the divergence
    assert "ends here" in token_html(["a "], ["target"], 1, LIGHT)  # the shorter output ends first
    view.panels[1].render(follow=False)
    assert "9" in view.panels[1].text.toPlainText()
    assert bridge.shutdown()


def test_fair_repeats_report_medians_and_never_overlap(qtbot, make_view, tiny_llama_dir):
    view = make_view(str(tiny_llama_dir), ("baseline", "KV cache"), max_tokens=8)
    view.repeats_spin.setValue(3)
    view.warmup_check.setChecked(True)
    log = []
    view.bridge.run_started.connect(lambda c, job: log.append(("start", c, job.repeat)))
    view.bridge.run_recorded.connect(lambda c, rec: log.append(("done", c, rec.repeat)))
    comp = run_and_wait(qtbot, view)
    # fair: one run at a time, round-robin over the columns, after one warm-up each
    assert log[0::2] == [("start", c, r) for r in (-1, 0, 1, 2) for c in (0, 1)]
    assert log[1::2] == [("done", c, r) for r in (-1, 0, 1, 2) for c in (0, 1)]
    for i, col in enumerate(comp.columns):
        assert len(col.runs) == 3 and len(col.warmups) == 1
        for metric in ("tokens_per_s", "ttft_s", "tpot_s"):
            values = [getattr(r, metric) for r in col.runs]
            s = col.spread(metric)
            assert s.median == pytest.approx(statistics.median(values))
            assert (s.low, s.high) == (min(values), max(values))
        shown = view.panels[i].value_labels["tokens_per_s"].text()
        assert shown == comp.figures(i)["tokens_per_s"] == table_texts(view)[i]["tokens_per_s"]
        assert view.panels[i].value_labels["ttft"].text() == comp.figures(i)["ttft"]


def test_race_submits_every_column_at_once(qtbot, make_view, tiny_llama_dir):
    view = make_view(str(tiny_llama_dir), ("baseline", "KV cache", "nf4"), max_tokens=6)
    view.mode_combo.setCurrentIndex(view.mode_combo.findData("race"))
    log = []
    view.bridge.run_started.connect(lambda c, job: log.append("start"))
    view.bridge.run_recorded.connect(lambda c, rec: log.append("done"))
    comp = run_and_wait(qtbot, view)
    assert log[:3] == ["start"] * 3 and log[3:] == ["done"] * 3
    assert comp.mode == "race" and all(len(c.runs) == 1 for c in comp.columns)


def test_export_contains_every_configuration_and_figure_shown(qtbot, make_view, tiny_llama_dir, tmp_path):
    view = make_view(str(tiny_llama_dir), ("baseline", "KV cache", "all optimisations"), max_tokens=8)
    view.repeats_spin.setValue(2)
    view.seed_spin.setValue(1234)
    view.chat_check.setChecked(True)
    comp = run_and_wait(qtbot, view)
    assert comp.messages == (("user", PROMPT),) and comp.prompt is None
    md = view.export(tmp_path / "report.md").read_text(encoding="utf-8")
    for row in table_texts(view):
        for key, _ in SUMMARY_COLUMNS:
            assert row[key] in md, (key, row[key])
    for i, panel in enumerate(view.panels):
        for key, value_label in panel.value_labels.items():
            assert value_label.text() in md, (i, key, value_label.text())
        config = comp.columns[i].spec.config
        assert config == panel.config()
        assert panel.config_label.text() in md
        assert json.dumps(config.to_dict(), sort_keys=True) in md
    for needle in ("seed 1234", PROMPT, "torch", "transformers", "bitsandbytes", "Workbench", "cpu"):
        assert needle in md
    data = json.loads(view.export(tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["seed"] == 1234 and data["sampling"]["temperature"] == 0.0
    assert data["provenance"]["torch"] == torch.__version__
    assert [EngineConfig.from_dict(c["config"]) for c in data["columns"]] == [p.config() for p in view.panels]
    assert all(c["model"] == str(tiny_llama_dir) for c in data["columns"])
    assert [c["figures_shown"] for c in data["columns"]] == [comp.figures(i) for i in range(3)]


def test_set_columns_returns_at_once_and_a_bad_model_fails_its_column(qtbot, tiny_llama_dir, tmp_path):
    bridge = CompareBridge()
    configs = [preset_config("baseline", None), preset_config("KV cache", None)]
    with qtbot.waitSignal(bridge.column_failed, timeout=RUN_TIMEOUT_MS) as failed:
        assert bridge.set_columns(ModelSpec(str(tiny_llama_dir)), configs,
                                  models=[None, str(tmp_path / "missing")])
        assert not bridge.is_ready  # loading happens on a worker, not in this call
        comp = bridge.run(PROMPT, SamplingParams(max_new_tokens=4))
    assert failed.args[0] == 1 and "No such directory" in failed.args[1]
    assert comp.cancelled and comp.finished
    # the same columns again (the failed one fixed): a rebuild; unchanged columns: none
    with qtbot.waitSignal(bridge.columns_ready, timeout=RUN_TIMEOUT_MS):
        assert bridge.set_columns(str(tiny_llama_dir), configs)
    assert not bridge.set_columns(str(tiny_llama_dir), configs)
    assert bridge.shutdown(5.0) and bridge.pool is None


def test_a_superseded_build_leaves_no_engine_running(qtbot, tiny_llama_dir, tiny_gpt2_dir):
    def engine_threads() -> int:
        return sum(t.name == "workbench-engine" and t.is_alive() for t in threading.enumerate())

    before = engine_threads()
    bridge = CompareBridge()
    three = [preset_config(p, None) for p in ("baseline", "KV cache", "speculative")]
    bridge.set_columns(str(tiny_llama_dir), three)
    with qtbot.waitSignal(bridge.columns_ready, timeout=RUN_TIMEOUT_MS):
        # a column on another model: its own weights, the others shared
        bridge.set_columns(str(tiny_llama_dir), three[:2], models=[None, str(tiny_gpt2_dir)])
    qtbot.waitUntil(lambda: engine_threads() == before + 2, timeout=10_000)
    assert bridge.pool.num_weight_copies == 2
    assert bridge.model_info(1).architecture.startswith("GPT2")
    with qtbot.waitSignal(bridge.comparison_finished, timeout=RUN_TIMEOUT_MS):
        comp = bridge.run(PROMPT, SamplingParams(max_new_tokens=4))
    assert all(len(c.runs) == 1 for c in comp.columns)
    assert bridge.shutdown(5.0)
    assert engine_threads() == before


def test_stop_cancels_and_shutdown_joins(qtbot, make_view, tiny_llama_dir):
    view = make_view(str(tiny_llama_dir), ("baseline", "KV cache"), max_tokens=200)
    view.repeats_spin.setValue(5)
    with qtbot.waitSignal(view.bridge.run_started, timeout=RUN_TIMEOUT_MS):
        view.run()
    assert view.stop_button.isEnabled()
    with qtbot.waitSignal(view.bridge.comparison_finished, timeout=5000):
        view.stop_button.click()
    assert view.comparison.cancelled and "Stopped" in view.status.text()
    engines = list(view.bridge.pool.engines)
    assert view.bridge.shutdown(5.0)
    assert not any(e.is_alive for e in engines)


def test_a_column_that_cannot_load_says_why(qtbot, make_view, tiny_llama_dir, tmp_path):
    view = make_view(str(tiny_llama_dir), ("baseline", "KV cache"))
    view.panels[1].model_edit.setText(str(tmp_path / "nowhere"))
    with qtbot.waitSignal(view.bridge.comparison_finished, timeout=RUN_TIMEOUT_MS):
        view.run()
    assert view.comparison.cancelled
    assert view.panels[1].status_label.text() == "failed to load"
    assert "No such directory" in view.panels[1].text.toPlainText()
    assert view.status.text().startswith("Could not run: column 2")
    assert view.run_button.isEnabled() and not view.export_md_button.isEnabled()


def test_every_control_is_named(qtbot):
    view = CompareView(CompareBridge(), None)
    qtbot.addWidget(view)
    view.add_column()
    view.panels[3].preset_combo.setCurrentText("custom")
    controls = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit, QTextBrowser, QTableWidget)
    widgets = [w for w in view.findChildren(QWidget) if isinstance(w, controls)]
    assert len(widgets) > 30
    for w in widgets:
        if w.objectName().startswith("qt_"):
            continue  # Qt's own parts of a composite control (a spin box's line edit)
        assert w.objectName() and w.accessibleName(), f"unnamed {type(w).__name__} {w.objectName()!r}"
    names = [w.objectName() for w in widgets if not w.objectName().startswith("qt_")]
    assert len(names) == len(set(names))
    # no default model: Run waits for every column to have one
    assert not view.run_button.isEnabled()
    view.panels[0].model_edit.setText("some/model")
    assert not view.run_button.isEnabled()
    assert len(view.panels) == 4 and not view.add_button.isEnabled()


def test_presets():
    base = preset_config("baseline", None)
    assert base.kv_cache is KVCacheMode.OFF and not base.batching.enabled
    assert base.quantisation is Quantisation.NONE and base.speculative.mode is SpeculativeMode.OFF
    allopt = preset_config("all optimisations", "draft-dir")
    assert allopt.kv_cache is KVCacheMode.ON and allopt.batching.enabled
    assert allopt.speculative.mode is SpeculativeMode.DRAFT and allopt.speculative.num_draft_tokens == 4
    assert allopt.speculative.draft_model == "draft-dir"
    assert preset_config("speculative", None).speculative.mode is SpeculativeMode.NGRAM
    assert preset_config("nf4", None).quantisation is Quantisation.NF4
    with pytest.raises(ValueError):
        preset_config("turbo", None)


def test_column_job_warmup_flag():
    assert CompareJob(0, -1, "r", 0.0).warmup and not CompareJob(0, 0, "r", 0.0).warmup
    assert ColumnSpec("a", "m", EngineConfig()).to_dict()["config"] == EngineConfig().to_dict()


def test_custom_editor_starts_from_the_preset_and_names_follow(qtbot):
    view = CompareView(CompareBridge(), "models/target", draft_model="models/draft")
    qtbot.addWidget(view)
    panel = view.panels[2]
    assert panel.preset == "all optimisations" and panel.name == "all optimisations"
    assert not panel.editor.isVisibleTo(panel)
    panel.preset_combo.setCurrentText("custom")
    assert panel.editor.isVisibleTo(panel) and panel.name == "custom"
    assert panel.config() == preset_config("all optimisations", "models/draft")  # edits start from it
    panel.quant_combo.setCurrentIndex(panel.quant_combo.findData(Quantisation.INT8))
    assert panel.config().quantisation is Quantisation.INT8
    assert "int8" in panel.config_label.text()
    # another model: the bundled draft does not fit its tokenizer, so speculation falls back to n-gram
    panel.model_edit.setText("other/model")
    assert panel.config().speculative.mode is SpeculativeMode.NGRAM
    # a name the user typed stays when the preset changes
    panel.name_edit.setText("mine")
    panel.preset_combo.setCurrentText("nf4")
    assert panel.name == "mine" and panel.config().quantisation is Quantisation.NF4
