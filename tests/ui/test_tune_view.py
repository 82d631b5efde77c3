"""The Tune tab on a real (tiny) engine and a real sweep: points appear, Apply reconfigures the
window's engine, cancel keeps what was measured and resume measures the rest."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PySide6.QtWidgets import QLabel, QProgressBar

from engine.config import BatchingConfig, EngineConfig, SpeculativeConfig, SpeculativeMode
from engine.engine import Engine
from engine.tune import GOALS
from ui.bridge import EngineBridge
from ui.tune_view import TuneView
from ui.viewmodels.tune import TABLE_COLUMNS

TIMEOUT_MS = 240_000
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def grid_file(tmp_path, tiny_pair_dirs):
    _, draft = tiny_pair_dirs
    seq = BatchingConfig(enabled=False)
    points = [
        ("sequential", EngineConfig(batching=seq)),
        ("n-gram k=2", EngineConfig(batching=seq, speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM,
                                                                                 num_draft_tokens=2))),
        ("draft k=2", EngineConfig(batching=seq, speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT,
                                                                                num_draft_tokens=2))),
    ]
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([{"name": n, **c.to_dict()} for n, c in points]))
    return path


@pytest.fixture
def tune(qtbot, tiny_pair_dirs, tmp_path):
    target, draft = tiny_pair_dirs
    bridge = EngineBridge(Engine(str(target)))
    view = TuneView(bridge, draft_model=str(draft), save_path=tmp_path / "tune-last.json")
    qtbot.addWidget(view)
    view.resize(1000, 640)
    view.show()
    with qtbot.waitSignal(bridge.model_loaded, timeout=60_000):
        bridge.start()
    yield view
    view.shutdown()
    assert bridge.shutdown()


def choose_file_grid(view: TuneView, qtbot, path) -> None:
    combo = view.findChild(type(view.grid_combo), "tune_grid")
    assert combo.currentData() == "quick"  # the default a user sees
    assert not view.findChild(type(view.grid_file_edit), "tune_grid_file").isVisible()
    combo.setCurrentIndex(combo.findData("file"))
    edit = view.findChild(type(view.grid_file_edit), "tune_grid_file")
    assert edit.isVisible()
    qtbot.keyClicks(edit, str(path))


def click(view: TuneView, qtbot, name: str) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QPushButton

    button = view.findChild(QPushButton, name)
    assert button is not None and button.isEnabled(), name
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_the_tab_shows_every_point_and_apply_reconfigures_the_engine(tune, qtbot, grid_file):
    choose_file_grid(tune, qtbot, grid_file)
    with qtbot.waitSignal(tune.sweep_finished, timeout=TIMEOUT_MS) as done:
        click(tune, qtbot, "tune_start")
        assert tune.findChild(type(tune.start_button), "tune_cancel").isEnabled()
    results = done.args[0]
    assert [r.name for r in results] == ["sequential", "n-gram k=2", "draft k=2"]
    assert all(r.measured for r in results), [r.reason for r in results]
    # table: one row per point, figures as the model formats them
    table = tune.table
    assert table.rowCount() == 3
    names = [table.item(i, 0).text().lstrip("★ ") for i in range(3)]
    assert names == ["sequential", "n-gram k=2", "draft k=2"]
    # scatter: every measured point plotted, the front highlighted and labelled
    front = tune.model.front()
    assert front and len(tune.scatter.data) + len(tune.front_scatter.data) == 3
    assert sorted(tune.front_scatter.data["data"].tolist()) == sorted(front)
    assert {t.textItem.toPlainText() for t in tune._labels} == set(names)
    tip = tune.front_scatter.opts["tip"](x=0, y=0, data=front[0])
    assert front[0] in tip and "tok/s (1 user)" in tip
    # the advisor's k beside the measured best k
    assert "advisor k" in tune.k_label.text() and "measured best k = 2" in tune.k_label.text()
    # switching the axis re-plots against TTFT
    tune.x_combo.setCurrentIndex(tune.x_combo.findData("ttft"))
    assert "time to first token" in tune.plot.getAxis("bottom").labelText
    # Apply: the window's engine takes the pick
    pick = tune._pick(GOALS[0])
    wanted = tune.model.config_of(pick)
    assert tune.bridge.config != wanted
    with qtbot.waitSignal(tune.bridge.config_applied, timeout=60_000):
        click(tune, qtbot, "tune_rec_0_apply")
    qtbot.waitUntil(lambda: tune.bridge.config == wanted, timeout=10_000)
    # Send to Compare: the current configuration and the pick
    with qtbot.waitSignal(tune.compare_requested, timeout=1000) as sent:
        click(tune, qtbot, "tune_rec_0_compare")
    assert [n for n, _ in sent.args[0]] == ["current", pick] and sent.args[0][1][1] == wanted
    # exports carry the same figures
    rows = list(csv.DictReader(io.StringIO(tune.model.to_csv())))
    assert [r["name"] for r in rows] == names
    assert "★ " + front[0] in tune.report_markdown()


def test_cancel_keeps_the_measured_points_and_resume_measures_the_rest(tune, qtbot, grid_file):
    choose_file_grid(tune, qtbot, grid_file)
    click(tune, qtbot, "tune_start")
    qtbot.waitUntil(lambda: len(tune.model.results) >= 1, timeout=TIMEOUT_MS)
    status = tune.findChild(QLabel, "tune_status").text()
    assert status.startswith(("1/3", "2/3"))  # progress; its ETA: tests/ui/viewmodels/test_tune.py
    assert tune.findChild(QProgressBar, "tune_progress").maximum() == 3
    with qtbot.waitSignal(tune.sweep_finished, timeout=TIMEOUT_MS) as first:
        click(tune, qtbot, "tune_cancel")
    kept = {r.name: r.single_tokens_per_s for r in first.args[0]}
    assert 1 <= len(kept) < 3
    assert "Resume" in tune.status.text()
    with qtbot.waitSignal(tune.sweep_finished, timeout=TIMEOUT_MS) as second:
        click(tune, qtbot, "tune_resume")
    results = second.args[0]
    assert [r.name for r in results] == ["sequential", "n-gram k=2", "draft k=2"]
    for r in results:  # the points measured before the cancel were kept, not measured again
        if r.name in kept:
            assert r.single_tokens_per_s == kept[r.name]
    assert tune.table.rowCount() == 3


def test_saved_results_load_into_the_tab(tune, tmp_path):
    path = tmp_path / "saved.json"
    points = [{"name": "a", "config": EngineConfig().to_dict(), "single_tokens_per_s": 10.0, "ttft_s": 0.01,
               "throughput_tokens_per_s": 30.0, "users": 4, "weights_bytes": 30, "kv_cache_bytes": 10,
               "peak_rss_bytes": 1 << 30, "perplexity_ratio": 1.0},
              {"name": "b", "config": EngineConfig().to_dict(), "single_tokens_per_s": 20.0, "ttft_s": 0.02,
               "throughput_tokens_per_s": 20.0, "users": 4, "weights_bytes": 100, "kv_cache_bytes": 10,
               "peak_rss_bytes": 1 << 30, "perplexity_ratio": 1.01},
              {"name": "c", "config": EngineConfig().to_dict(), "status": "skipped", "reason": "no draft"}]
    path.write_text(json.dumps({"model": "m", "points": points}))
    assert tune.load_results(path) == 3
    assert sorted(tune.model.front()) == ["a", "b"]  # a is smaller (weights + KV), b faster
    tune.x_combo.setCurrentIndex(tune.x_combo.findData("rss"))
    assert tune.model.front() == ["b"]  # the same process RSS and faster: b dominates a there
    assert tune.table.item(2, len(TABLE_COLUMNS) - 1).text() == "no draft"
    assert "b" in tune.rec_labels[GOALS[0]].text() and "a" in tune.rec_labels[GOALS[1]].text()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError):
        tune.load_results(bad)
