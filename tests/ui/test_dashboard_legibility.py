"""The dashboard stays readable: log-scale latency labels never stack, legends and read-outs
wrap instead of being cut, marker labels are whole or hidden (never a stray letter at an edge,
on screen or in the exported PNG), lines break where the engine was idle, and the CSV says
which settings were in force.

The DashboardView is real (real widgets, a real bridge over an unstarted engine); its model is
fed the engine's own event dataclasses on a timeline with idle stretches in it, which a live
engine would need real idle seconds to produce."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QFontMetrics, QImage, QPainter, QTextDocument
from PySide6.QtWidgets import QApplication, QLabel

from engine.engine import Engine
from tests.helpers.engine_timeline import T0, Clock, applied, finished, step
from ui.bridge import EngineBridge
from ui.viewmodels.dashboard import DashboardModel
from ui.viewmodels.dashboard_io import read_csv
from ui.dashboard_view import DashboardView

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def view(qtbot, clock, tiny_llama_dir):
    bridge = EngineBridge(Engine(str(tiny_llama_dir)))  # never started: the model is fed by hand
    model = DashboardModel(t0=T0, clock=clock)
    dash = DashboardView(bridge, model=model)
    qtbot.addWidget(dash)
    dash.resize(1000, 800)
    dash.show()
    qtbot.waitUntil(dash.isVisible, timeout=5000)
    yield dash
    dash.shutdown()
    assert bridge.shutdown()


def settle(view: DashboardView) -> None:
    view.redraw(force=True)
    for _ in range(3):
        QApplication.processEvents()


def load(model: DashboardModel, t_from: float, seconds: float, out: int = 4) -> None:
    for i in range(1, int(round(seconds * 10)) + 1):
        model.record_step(step(t_from + i * 0.1, out=out))


def test_lines_break_across_idle_gaps(view, clock):
    model = view.model
    load(model, 0.0, 5.0)
    load(model, 15.0, 5.0)  # the engine waited 10 s between the two
    clock.t = T0 + 21.0
    settle(view)
    charts = {c.key: c for c in view.charts}
    for key, series in (("throughput", "engine"), ("batch", "batch"), ("batch", "queue")):
        x, y = charts[key].data(series)
        gaps = np.flatnonzero(np.isnan(y))
        assert len(gaps) == 1, f"{key}.{series}: the line runs across the idle gap"
        assert 5.0 < x[gaps[0]] < 15.1 and np.all(np.diff(x) > 0)
        assert np.isfinite(y).sum() == 100  # every sample still drawn


def test_marker_labels_are_whole_or_hidden_on_screen_and_in_the_png(view, clock, tmp_path):
    model = view.model
    load(model, 0.0, 100.0)
    for t, text in ((71.5, "batching off"), (86.0, "kv off"), (100.5, "spec ngram k=4")):
        model.record_marker(T0 + t, text)
    clock.t = T0 + 100.6
    settle(view)  # a 2-minute window by default: narrow it so the first marker is at the left edge
    view.window_combo.setCurrentIndex(view.window_combo.findText("30 s"))
    settle(view)
    (x0, x1), _ = view.time_charts[0].plot.viewRange()
    assert x0 > 71.5 - 1.0 and x1 > 100.5  # the first marker sits at (or just past) the left edge
    for chart in view.time_charts:
        box = chart.plot.getViewBox().sceneBoundingRect()
        shown = {}
        for line in chart.markers:
            if line.label.isVisible():
                assert box.contains(line.label.sceneBoundingRect()), (chart.key, line.label.toPlainText())
                shown[line.label.toPlainText()] = line.label
        assert "kv off" in shown and "spec ngram k=4" in shown, chart.key  # room for both
        assert "batching off" not in shown or box.contains(shown["batching off"].sceneBoundingRect())
    png = QImage(str(view.export_png(tmp_path / "charts.png")))
    assert not png.isNull() and png.width() == view.charts_area.width()


def drawn_tick_texts(axis) -> list[QRectF]:
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        _, _, texts = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [rect for rect, _flags, text in texts if text]


def test_log_latency_labels_do_not_overlap(view, clock):
    model = view.model
    latency = next(c for c in view.time_charts if c.key == "latency")
    for i, ttft in enumerate((0.002, 0.004, 0.008)):  # all within one decade: 2-9 ms
        t = 1.0 + i
        model.record_finished(finished(f"r{i}", submitted=t - ttft - 0.01,
                                       emissions=[t - 0.01, t - 0.007, t - 0.004, t], t_finish=t))
    clock.t = T0 + 8.0
    for height in (260, 170):  # a roomy chart and a cramped one
        latency.setFixedHeight(height)
        settle(view)
        settle(view)
        rects = sorted(drawn_tick_texts(latency.plot.getAxis("left")), key=lambda r: r.top())
        assert len(rects) >= 2, "the axis has no labels"
        for a, b in zip(rects, rects[1:]):
            assert not a.intersects(b), f"labels overlap at {height}px: {a} / {b}"
    for i, ttft in enumerate((0.02, 0.2, 0.4, 2.0)):  # and across three decades up to 2 s
        t = 4.0 + i
        model.record_finished(finished(f"s{i}", submitted=t - ttft - 0.05,
                                       emissions=[t - 0.05, t - 0.04, t - 0.02, t], t_finish=t))
    settle(view)
    settle(view)
    rects = sorted(drawn_tick_texts(latency.plot.getAxis("left")), key=lambda r: r.top())
    assert len(rects) >= 2 and not any(a.intersects(b) for a, b in zip(rects, rects[1:]))


def fits(label: QLabel) -> bool:
    """All of the label's text is shown: wrapped within its height, or on one line within its width."""
    if label.wordWrap():
        doc = QTextDocument()
        doc.setDefaultFont(label.font())
        doc.setHtml(label.text())
        doc.setDocumentMargin(0)
        doc.setTextWidth(label.contentsRect().width())
        no_overhang = doc.idealWidth() <= label.contentsRect().width() + 1  # no word wider than the label
        return no_overhang and label.heightForWidth(label.width()) <= label.height()
    doc = QTextDocument()
    doc.setHtml(label.text())
    return QFontMetrics(label.font()).horizontalAdvance(doc.toPlainText()) <= label.contentsRect().width()


def test_legends_and_readouts_are_not_cut_in_a_narrow_chart(view, qtbot, clock):
    model = view.model
    load(model, 0.0, 10.0)
    model.record_finished(finished("req-1", submitted=1.0, emissions=[1.1, 1.2, 1.3], t_finish=1.3))
    clock.t = T0 + 10.0
    view.resize(760, 900)  # a chart column about 300 px wide
    qtbot.waitUntil(lambda: view.charts[0].width() < 420, timeout=5000)
    settle(view)
    settle(view)
    for chart in view.charts:
        for label in (chart.title_label, chart.readout):
            assert label.text(), f"{label.objectName()} is empty"
            assert fits(label), f"{label.objectName()} is cut: {label.text()!r}"


def test_csv_export_has_a_row_per_configuration_and_change(view, clock, tmp_path):
    model = view.model
    load(model, 0.0, 3.0)
    model.record_config(applied(1.5, ("batching off",), label="kv on · batching off"))
    clock.t = T0 + 3.0
    parsed = read_csv(view.export_csv(tmp_path / "series.csv").read_text(encoding="utf-8"))
    assert parsed["config"]["t"] == [0.0, 1.5]
    assert parsed["config"]["value"] == [model.configs[0].label, "kv on · batching off"]
    assert parsed["marker"] == {"t": [1.5], "value": ["batching off"], "request_id": [""]}
    assert len(parsed["engine_tokens_per_s"]["t"]) == 30


def test_status_counts_read_as_english(view, clock):
    model = view.model
    model.record_step(step(0.1))
    model.record_finished(finished("req-1", submitted=0.0, emissions=[0.05, 0.1], t_finish=0.1))
    clock.t = T0 + 1.0
    settle(view)
    status = view.findChild(QLabel, "dashboard_status").text()
    assert "1 step · 1 request finished · 0 changes" in status, status


def test_memory_readout_counts_prefix_cache_hits(qtbot):
    import dataclasses

    from tests.helpers.engine_timeline import T0, Clock, step
    from ui.charts.base import ChartTheme
    from ui.charts.time_charts import MemoryChart
    from ui.theme import LIGHT
    from ui.viewmodels.dashboard import DashboardModel

    model = DashboardModel(t0=T0, clock=Clock())
    model.record_step(dataclasses.replace(step(1.0), prefix_cache_hits=3, prefix_cache_misses=2))
    chart = MemoryChart(ChartTheme.from_theme(LIGHT))
    qtbot.addWidget(chart)
    assert "prefix hits 3 of 5 lookups" in chart.readout_at(model.snapshot(), 1.0)
