"""Compare and Dashboard fit common screens: at 1280x720 every control is reachable without a
horizontal scroll bar (columns and charts wrap), at 1920x1080 they spread out side by side."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QApplication, QFrame, QLabel, QPushButton, QScrollArea, QWidget

from app.gui import add_views
from tests.helpers.engine_timeline import T0, step
from tests.helpers.compare_runs import BASE, KV, NF4, feed_run
from ui.viewmodels.compare import Comparison

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")

SMALL, LARGE = (1280, 720), (1920, 1080)


@pytest.fixture
def window(make_window, tiny_llama_dir):
    win = make_window()
    add_views(win, win.bridge, str(tiny_llama_dir), None)
    return win


def show_tab(qtbot, window, title: str, size: tuple[int, int]) -> QScrollArea:
    window.resize(*size)
    tabs = window.tabs
    tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == title))
    scroller = window.findChild(QScrollArea, f"{title.lower()}_view_scroll")
    qtbot.waitUntil(lambda: scroller.isVisible() and window.width() == size[0], timeout=5000)
    for _ in range(3):  # let every nested layout settle
        QApplication.processEvents()
    return scroller


def rect_in(widget: QWidget, scroller: QScrollArea) -> QRect:
    top_left = widget.mapTo(scroller.viewport(), widget.rect().topLeft())
    return QRect(top_left, widget.size())


def test_compare_fits_1280x720_without_a_horizontal_scroll(qtbot, window):
    scroller = show_tab(qtbot, window, "Compare", SMALL)
    view = scroller.widget()
    assert scroller.horizontalScrollBar().maximum() == 0, "Compare scrolls sideways at 1280x720"
    viewport = scroller.viewport().rect()
    run = window.findChild(QPushButton, "compare_run")
    assert run.isVisible() and viewport.contains(rect_in(run, scroller)), "Run is off-screen"
    # a finished comparison: a filled summary table and a long verdict in the status line
    long_names = [replace(KV, name="KV cache with prefix reuse and continuous batching"),
                  replace(NF4, name="4-bit NF4 weights with the KV cache on")]
    comp = Comparison([BASE, *long_names], prompt="p")
    for column in range(3):
        feed_run(comp, column, 0, list(range(48)), start=10.0 * column, ttft=0.1, gap=0.02)
    comp.finished = True
    view.comparison = comp
    view.bridge.comparison_finished.emit(comp)  # as the bridge announces it
    for _ in range(3):
        QApplication.processEvents()
    assert window.findChild(QLabel, "compare_status").text().startswith("Done: 3 measured runs")
    assert scroller.horizontalScrollBar().maximum() == 0, "a finished comparison widens the tab"
    view.add_column()  # four columns: they wrap onto two rows instead of widening the tab
    for _ in range(3):
        QApplication.processEvents()
    assert scroller.horizontalScrollBar().maximum() == 0
    columns = [window.findChild(QFrame, f"compare_column_{i}") for i in range(4)]
    for col in columns:
        r = rect_in(col, scroller)
        assert r.left() >= 0 and r.right() <= viewport.right(), f"{col.objectName()} is cut at the right"
        assert col.width() >= 200
    assert len({c.y() for c in columns}) == 2  # two rows of two


def test_compare_columns_side_by_side_at_1920x1080(qtbot, window):
    scroller = show_tab(qtbot, window, "Compare", LARGE)
    view = scroller.widget()
    view.add_column()
    for _ in range(3):
        QApplication.processEvents()
    columns = [window.findChild(QFrame, f"compare_column_{i}") for i in range(4)]
    assert len({c.y() for c in columns}) == 1, "four columns fit one row at 1920"
    assert scroller.horizontalScrollBar().maximum() == 0
    assert scroller.verticalScrollBar().maximum() == 0, "the whole Compare tab fits 1920x1080"


def chart_columns(view) -> int:
    return len({c.x() for c in view.charts})


def test_dashboard_charts_reflow_to_the_width(qtbot, window):
    scroller = show_tab(qtbot, window, "Dashboard", LARGE)
    view = scroller.widget()
    wide = chart_columns(view)
    assert wide >= 3 and scroller.horizontalScrollBar().maximum() == 0
    assert scroller.verticalScrollBar().maximum() == 0, "the dashboard fits 1920x1080"
    scroller = show_tab(qtbot, window, "Dashboard", SMALL)
    qtbot.waitUntil(lambda: chart_columns(view) < wide, timeout=5000)
    assert chart_columns(view) >= 2
    assert scroller.horizontalScrollBar().maximum() == 0, "Dashboard scrolls sideways at 1280x720"
    viewport = scroller.viewport().rect()
    for chart in view.charts:
        r = rect_in(chart, scroller)
        assert r.right() <= viewport.right() and chart.width() >= 240, chart.objectName()
    for name in ("dashboard_pause_button", "dashboard_export_csv_button", "loadgen_start_button"):
        button = window.findChild(QPushButton, name)
        r = rect_in(button, scroller)
        assert button.isVisible() and r.right() <= viewport.right(), name
    # with figures in the cost view (a busy baseline, a change, the current load) the side panel
    # still shows every control and value whole
    model = view.model
    for i in range(1, 101):
        model.record_step(step(i * 0.1, out=40))
    model.record_marker(T0 + 10.0, "spec ngram k=4")
    for i in range(101, 201):
        model.record_step(step(i * 0.1, out=80))
    view.cost_view.refresh()
    for _ in range(3):
        QApplication.processEvents()
    assert window.findChild(QLabel, "cost_current_basis_value").text().startswith("8,000 tok")
    side = view.side_panel.viewport()
    for name in ("loadgen_stop_button", "cost_compare_baseline_button", "cost_current_basis_value",
                 "cost_current_per_million_value", "cost_measured_tokens_button"):
        w = window.findChild(QWidget, name)
        r = QRect(w.mapTo(side, w.rect().topLeft()), w.size())
        assert w.isVisible() and r.left() >= 0 and r.right() <= side.width(), f"{name} is cut"
    # the time values show on the lowest time chart of each grid column, and only there
    shown = [c.plot.getAxis("bottom").style["showValues"] for c in view.time_charts]
    n = chart_columns(view)
    assert shown == [i + n >= len(view.time_charts) for i in range(len(view.time_charts))]


def test_hiding_the_side_panel_gives_the_charts_more_columns(qtbot, window):
    scroller = show_tab(qtbot, window, "Dashboard", SMALL)
    view = scroller.widget()
    before = chart_columns(view)
    toggle = window.findChild(QPushButton, "dashboard_side_toggle")
    assert toggle.isChecked() and view.side_panel.isVisible()
    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chart_columns(view) > before, timeout=5000)
    assert not view.side_panel.isVisible() and scroller.horizontalScrollBar().maximum() == 0
    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chart_columns(view) == before, timeout=5000)
    assert view.side_panel.isVisible()
