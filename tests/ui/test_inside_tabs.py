"""The Tune, Timeline and Memory tabs in the real window: they fit 1280x720 without a sideways
scroll, every control is named, and Tune's "Send to Compare" opens its pick as Compare columns."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QWidget,
)

from app.gui import add_views
from engine.config import BatchingConfig, EngineConfig, SpeculativeConfig, SpeculativeMode

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def window(make_window, tiny_llama_dir):
    win = make_window()
    add_views(win, win.bridge, str(tiny_llama_dir), None)
    return win


def show_tab(qtbot, window, title: str) -> QScrollArea:
    window.resize(1280, 720)
    tabs = window.tabs
    tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == title))
    scroller = window.findChild(QScrollArea, f"{title.lower()}_view_scroll")
    qtbot.waitUntil(lambda: scroller.isVisible() and window.width() == 1280, timeout=5000)
    for _ in range(3):
        QApplication.processEvents()
    return scroller


@pytest.mark.parametrize("title, controls", [
    ("Tune", ["tune_grid", "tune_start", "tune_cancel", "tune_scatter", "tune_table", "tune_rec_0_apply",
              "tune_rec_2_compare", "tune_export_markdown"]),
    ("Timeline", ["timeline_pause", "timeline_window", "timeline_canvas", "timeline_step_details"]),
    ("Memory", ["planner_source", "planner_level", "planner_batch", "planner_context", "planner_chart",
                "planner_max_context"]),
])
def test_each_tab_fits_1280x720_and_names_its_controls(qtbot, window, title, controls):
    scroller = show_tab(qtbot, window, title)
    assert scroller.horizontalScrollBar().maximum() == 0, f"{title} scrolls sideways at 1280x720"
    viewport = scroller.viewport().rect()
    for name in controls:
        w = window.findChild(QWidget, name)
        assert w is not None and w.isVisible(), name
        top_left = w.mapTo(scroller.viewport(), w.rect().topLeft())
        assert viewport.contains(top_left), f"{name} is off-screen"
    view = scroller.widget()
    for w in view.findChildren(QWidget):
        if isinstance(w, (QAbstractButton, QLineEdit, QComboBox, QAbstractSpinBox)) and w.isVisible() \
                and not w.objectName().startswith("qt_"):  # a spin box's own line edit
            assert w.objectName() and w.accessibleName(), f"unnamed {type(w).__name__} in {title}"


def test_send_to_compare_opens_the_pick_as_a_column(qtbot, window, tmp_path):
    pick = EngineConfig(batching=BatchingConfig(enabled=False),
                        speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=3))
    points = [{"name": "fast", "config": pick.to_dict(), "single_tokens_per_s": 50.0, "ttft_s": 0.01,
               "throughput_tokens_per_s": 60.0, "users": 4, "weights_bytes": 100, "kv_cache_bytes": 10,
               "peak_rss_bytes": 1 << 30, "perplexity_ratio": 1.0},
              {"name": "slow", "config": EngineConfig().to_dict(), "single_tokens_per_s": 10.0, "ttft_s": 0.02,
               "throughput_tokens_per_s": 20.0, "users": 4, "weights_bytes": 100, "kv_cache_bytes": 10,
               "peak_rss_bytes": 1 << 30, "perplexity_ratio": 1.0}]
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"model": "m", "points": points}))
    show_tab(qtbot, window, "Tune")
    tune = window.findChild(QWidget, "tune_view")
    tune.load_results(path)
    qtbot.mouseClick(window.findChild(QPushButton, "tune_rec_0_compare"), Qt.MouseButton.LeftButton)
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Compare"
    compare = window.findChild(QWidget, "compare_view")
    assert len(compare.panels) == 2
    assert compare.panels[1].name == "fast" and compare.panels[1].config() == pick
    assert compare.panels[0].name == "current" and compare.panels[0].config().kv_cache == window.bridge.config.kv_cache
