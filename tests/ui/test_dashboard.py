"""The live dashboard on a real (tiny) engine: charts fill under load, changes draw markers,
pause freezes, exports parse back to what is shown, the cost view follows the measurement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF
from PySide6.QtGui import QImage
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QPlainTextEdit

from engine.config import BatchingConfig, SpeculativeConfig, SpeculativeMode
from engine.engine import Engine
from engine.loadgen import LoadSpec
from ui.bridge import EngineBridge
from ui.charts import MIB
from ui.viewmodels.cost import cost_per_million, format_money
from ui.viewmodels.dashboard import DashboardModel
from ui.viewmodels.dashboard_io import read_csv
from ui.dashboard_view import DashboardView
from ui.formatting import MISSING
from ui.viewmodels.throughput import shortfall
from ui.loadgen_panel import REPETITIVE_PROMPTS

TIMEOUT_MS = 60_000
# the offscreen platform says so whenever a shown window's size hints change: noise, not a fault
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def dashboard(qtbot, tiny_llama_dir):
    engine = Engine(str(tiny_llama_dir))
    bridge = EngineBridge(engine)
    view = DashboardView(bridge)
    qtbot.addWidget(view)
    view.resize(1400, 900)
    view.show()
    with qtbot.waitSignal(bridge.model_loaded, timeout=TIMEOUT_MS):
        bridge.start()
    yield view
    view.shutdown()
    assert bridge.shutdown()


def start_load(view: DashboardView, **overrides) -> None:
    spec = {"users": 4, "rate_per_s": 50.0, "min_new_tokens": 8, "max_new_tokens": 24, "prompts": REPETITIVE_PROMPTS}
    spec.update(overrides)
    assert view.loadgen.start(LoadSpec(**spec))


def load_until(view: DashboardView, qtbot, condition) -> None:
    """Run the load generator until condition() holds, then stop it and let the requests in
    flight finish, so the engine is idle and every figure is final."""
    start_load(view, min_new_tokens=16, max_new_tokens=48)
    qtbot.waitUntil(condition, timeout=TIMEOUT_MS)
    view.loadgen.stop()
    stats = view.loadgen.generator.stats
    qtbot.waitUntil(lambda: stats.finished == stats.submitted, timeout=TIMEOUT_MS)


def reconfigure(qtbot, bridge, config):
    with qtbot.waitSignal(bridge.config_applied, timeout=TIMEOUT_MS) as blocker:
        bridge.reconfigure(config)
    return blocker.args[0]


def marker_labels(chart) -> list[str]:
    return [line.label.toPlainText() for line in chart.markers]


def test_load_feeds_every_chart_and_each_change_marks_every_time_chart(dashboard, qtbot):
    view, bridge, model = dashboard, dashboard.bridge, dashboard.model
    start_load(view)
    qtbot.waitUntil(lambda: len(model.steps) > 30 and len(model.latency) >= 2 and len(model.rates) > 0,
                    timeout=TIMEOUT_MS)
    batching_off = reconfigure(qtbot, bridge, bridge.config.with_(batching=BatchingConfig(enabled=False)))
    assert batching_off.changes == ("batching off",)
    reconfigure(qtbot, bridge, bridge.config.with_(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM)))
    qtbot.waitUntil(lambda: model.advice is not None and model.drafted_per_position.sum() > 0, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(view.redrawn, timeout=TIMEOUT_MS):
        pass  # the next timer-driven redraw

    for chart in view.charts:
        assert chart.has_data(), f"{chart.key} chart got no data"
    assert view.time_charts[0].data("engine")[1].max() > 0
    for chart in view.time_charts:
        assert marker_labels(chart) == ["batching off", "spec ngram k=4"], chart.key
        assert chart.markers[0].value() == pytest.approx(batching_off.timestamp_s - model.t0)
    speedup = next(c for c in view.bar_charts if c.key == "speedup")
    assert speedup.recommended_k == model.advice.recommended_k
    assert len(speedup.data("speedup")[1]) == 8


def test_pause_freezes_the_series_while_recording_goes_on(dashboard, qtbot):
    view, model = dashboard, dashboard.model
    start_load(view)
    qtbot.waitUntil(lambda: len(model.steps) > 20, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(view.redrawn, timeout=TIMEOUT_MS):
        pass
    view.pause_button.click()
    assert view.paused and view.pause_button.text() == "Resume"
    frozen = {(c.key, name): c.data(name) for c in view.charts for name in c.series}
    drawn = view.redraw_count
    recorded = len(model.steps)
    qtbot.waitUntil(lambda: len(model.steps) > recorded + 20, timeout=TIMEOUT_MS)
    for _ in range(3):  # several redraw ticks pass
        with qtbot.waitSignal(view.timer.timeout, timeout=TIMEOUT_MS):
            pass
    assert view.redraw_count == drawn
    for (key, name), (x, y) in frozen.items():
        now_x, now_y = next(c for c in view.charts if c.key == key).data(name)
        np.testing.assert_array_equal(now_x, x, err_msg=f"{key}.{name}")
        np.testing.assert_array_equal(now_y, y, err_msg=f"{key}.{name}")
    assert "paused" in view.status.text()

    view.pause_button.click()  # resume: everything recorded meanwhile shows
    assert not view.paused
    assert len(view.time_charts[0].data("engine")[0]) > len(frozen[("throughput", "engine")][0])


def test_exports_parse_back_to_the_values_shown(dashboard, qtbot, tmp_path):
    view, bridge, model = dashboard, dashboard.bridge, dashboard.model
    initial_label = bridge.config.describe()
    view.window_combo.setCurrentIndex(view.window_combo.findText("All"))
    load_until(view, qtbot, lambda: len(model.steps) > 10 and len(model.latency) >= 3 and len(model.rates) >= 3)
    reconfigure(qtbot, bridge, bridge.config.with_(batching=BatchingConfig(enabled=False)))
    view.redraw()  # the engine is idle: what is shown is everything recorded

    parsed = read_csv(view.export_csv(tmp_path / "series.csv").read_text(encoding="utf-8"))
    charts = {c.key: c for c in view.charts}
    x, y = charts["throughput"].data("engine")
    x, y = x[np.isfinite(y)], y[np.isfinite(y)]  # less the breaks drawn at idle gaps
    assert len(x) > 10
    assert parsed["engine_tokens_per_s"]["t"] == list(x)
    assert parsed["engine_tokens_per_s"]["value"] == list(y)
    _, batch = charts["batch"].data("batch")
    batch = batch[np.isfinite(batch)]
    assert parsed["batch_size"]["value"] == list(batch)
    _, weights = charts["memory"].data("weights")
    np.testing.assert_allclose(weights, np.array(parsed["weights_bytes"]["value"]) / MIB)
    _, kv = charts["memory"].data("kv")
    np.testing.assert_allclose(kv, np.array(parsed["kv_cache_bytes"]["value"]) / MIB, atol=1e-9)
    tx, ttft = charts["latency"].data("ttft")
    assert list(tx) == parsed["ttft_s"]["t"]
    np.testing.assert_allclose(ttft, np.array(parsed["ttft_s"]["value"]) * 1000.0)
    rx, rates = charts["throughput"].data("requests")
    shown = sorted(zip(rx[np.isfinite(rx)], rates[np.isfinite(rates)]))
    assert shown == sorted(zip(parsed["request_tokens_per_s"]["t"], parsed["request_tokens_per_s"]["value"]))

    session = view.export_session(tmp_path / "session.json").read_text(encoding="utf-8")
    data = json.loads(session)
    assert [m["label"] for m in data["markers"]] == marker_labels(charts["throughput"]) == ["batching off"]
    assert data["configs"][0]["label"] == initial_label != ""
    assert data["configs"][-1]["changes"] == ["batching off"]
    assert data["configs"][-1]["label"] == bridge.config.describe() != initial_label
    restored = DashboardModel.from_json(session).snapshot()
    np.testing.assert_array_equal(restored.steps["tokens_per_s"], y)
    assert restored.request_ids == model.request_ids

    png = view.export_png(tmp_path / "charts.png")
    image = QImage(str(png))
    assert not image.isNull() and image.width() == view.charts_area.width()


def test_cost_view_follows_the_measured_throughput_and_the_price(dashboard, qtbot):
    view, model = dashboard, dashboard.model
    cost = view.cost_view
    load_until(view, qtbot, lambda: shortfall(model.current_throughput()) is None)
    cost.price_spin.setValue(3.60)
    assert cost.baseline_button.isEnabled()
    cost.baseline_button.click()
    current = model.current_throughput()
    assert current is not None and current.tokens_per_s > 0
    expected = format_money(cost_per_million(current.tokens_per_s, 3.60))
    assert cost.values["current"]["per_million"].text() == expected
    assert cost.values["baseline"]["per_million"].text() == expected  # just captured from the same window
    assert cost.summary.text().startswith("×1.00 throughput")
    cost.price_spin.setValue(7.20)  # twice the price: twice the cost
    assert cost.values["current"]["per_million"].text() == format_money(
        cost_per_million(current.tokens_per_s, 7.20))


def test_hover_shows_a_crosshair_on_every_time_chart_and_exact_values(dashboard, qtbot):
    view, model = dashboard, dashboard.model
    start_load(view)
    qtbot.waitUntil(lambda: len(model.steps) > 20, timeout=TIMEOUT_MS)
    view.set_paused(True)  # hold the data still while pointing at it
    throughput = view.time_charts[0]
    viewport = throughput.plot_widget.viewport()
    t, tps = throughput.data("engine")

    def point_at(x: float) -> QPoint:
        scene = throughput.plot.getViewBox().mapViewToScene(QPointF(x, 1.0))
        return QPoint(throughput.plot_widget.mapFromScene(scene).x(), viewport.height() // 2)

    QTest.mouseMove(viewport, point_at(float(t[len(t) // 2])))
    qtbot.waitUntil(lambda: all(c.crosshair.isVisible() for c in view.time_charts), timeout=TIMEOUT_MS)
    x = throughput.crosshair.value()
    assert all(c.crosshair.value() == x for c in view.time_charts)
    i = int(np.argmin(np.abs(t - x)))  # the nearest step to the crosshair, to the shown precision
    assert throughput.readout.text().startswith(f"t = {x:,.1f} s")
    assert f"engine {tps[i]:,.1f} tok/s" in throughput.readout.text()
    # pointing well past the data reads as no data, not as the last sample (paused: the range holds)
    throughput.plot.setXRange(float(t[0]), float(t[-1]) + 20.0, padding=0)
    past = throughput.plot.getViewBox().mapViewToScene(QPointF(float(t[-1]) + 16.0, 1.0))
    throughput.plot_widget.scene().sigMouseMoved.emit(past)  # what the scene says on a mouse move
    assert throughput.readout.text().startswith(f"t = {float(t[-1]) + 16.0:,.1f} s")
    assert f"engine {MISSING}" in throughput.readout.text()
    throughput.hover_left.emit()
    assert not any(c.crosshair.isVisible() for c in view.time_charts)
    assert throughput.readout.text().startswith("now")


def test_every_control_has_an_object_and_accessible_name(dashboard):
    controls = [w for kind in (QAbstractButton, QComboBox, QAbstractSpinBox, QPlainTextEdit)
                for w in dashboard.findChildren(kind)]
    assert len(controls) >= 15
    for w in controls:
        assert w.objectName() and w.accessibleName(), f"unnamed {type(w).__name__}: {w.objectName()!r}"


def test_a_model_switch_is_a_marker_on_every_time_chart(dashboard, qtbot, tiny_gpt2_dir):
    view, bridge = dashboard, dashboard.bridge
    with qtbot.waitSignal(bridge.model_loaded, timeout=TIMEOUT_MS):
        bridge.load_model(str(tiny_gpt2_dir))
    with qtbot.waitSignal(view.redrawn, timeout=TIMEOUT_MS):
        pass
    label = f"model {tiny_gpt2_dir.name}"
    for chart in view.time_charts:
        assert marker_labels(chart) == [label], chart.key
    assert view.model.to_csv().rstrip().endswith(f",marker,,{label}")
