"""The cost view, driven through its widgets: the baseline is a busy stretch of load (never an
idle one), each side says what it rests on, and no ratio is claimed on too little data.

The dashboard model gets the engine's StepStats as the bridge would deliver them, on a
timeline with an idle stretch in it (a real engine would need real idle seconds)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton, QToolButton

from tests.helpers.engine_timeline import T0, Clock, step
from ui.cost_view import CostView
from ui.viewmodels.dashboard import DashboardModel
from ui.viewmodels.throughput import MIN_COMPARE_TOKENS

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def view(qtbot, clock):
    model = DashboardModel(t0=T0, clock=clock)
    cost = CostView(model)
    qtbot.addWidget(cost)
    cost.show()
    return cost


def text(view: CostView, name: str) -> str:
    return view.findChild(QLabel, name).text()


def tip(view: CostView, name: str) -> str:
    return view.findChild(QLabel, name).toolTip()


def load(model: DashboardModel, t_from: float, seconds: float, tokens_per_step: int) -> None:
    """Steps every 0.1 s: tokens_per_step * 10 tok/s."""
    for i in range(1, int(round(seconds * 10)) + 1):
        model.record_step(step(t_from + i * 0.1, out=tokens_per_step))


def test_an_idle_start_is_no_baseline(view, qtbot):
    model = view.model
    load(model, 0.0, 0.5, 1)  # a first request, then the engine waits 20 s for work
    load(model, 20.0, 20.0, 4)  # 20 s of load at 40 tok/s
    model.record_marker(T0 + 40.0, "spec ngram k=4")
    load(model, 40.0, 10.0, 8)  # the optimised configuration: 80 tok/s
    view.refresh()
    # the old 'first 20 s' baseline was the idle stretch: 0.2 tok/s, "x400 throughput"
    # the busy stretch runs from the start of its first step (stamped 20.1 s, 0.01 s of compute)
    base_tps = 800 / (40.0 - 20.09)
    assert text(view, "cost_baseline_tps_value") == f"{base_tps:.1f} tok/s"
    assert text(view, "cost_current_tps_value") == "80.0 tok/s"
    summary = text(view, "cost_summary")
    assert summary.startswith(f"×{80.0 / base_tps:.2f} throughput, 50 % cheaper"), summary
    assert text(view, "cost_baseline_basis_value") == "800 tok\n19.9 s"
    assert tip(view, "cost_baseline_basis_value") == "800 tokens over 19.9 s (100 % busy)"
    assert text(view, "cost_current_basis_value") == "800 tok\n10.0 s"
    assert "first busy stretch, 20–40 s" in text(view, "cost_baseline_source")


def test_too_little_data_is_refused_not_compared(view, qtbot, clock):
    model = view.model
    load(model, 0.0, 2.0, 4)  # 2 s, 80 tokens
    view.refresh()
    button = view.findChild(QPushButton, "cost_baseline_button")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert view.cost.captured is None
    assert text(view, "cost_baseline_source").startswith("not captured: the baseline rests on 76 tokens")
    load(model, 2.0, 8.0, 4)  # now 10 s of load
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert view.cost.captured is not None and view.cost.captured.num_tokens >= MIN_COMPARE_TOKENS
    model.record_marker(T0 + 10.0, "batching off")
    load(model, 10.0, 2.0, 8)  # 2 s of the new configuration: too little to claim anything
    view.refresh()
    summary = text(view, "cost_summary")
    assert summary.startswith(f"no comparison: the current measurement rests on 160 tokens (need {MIN_COMPARE_TOKENS}"), summary
    assert "×" not in summary and "cheaper" not in summary
    assert text(view, "cost_current_tps_value") == "80.0 tok/s"  # the figure itself still shows


def test_a_compare_run_can_be_the_baseline(view, qtbot, clock):
    from tests.helpers.compare_runs import BASE, KV, feed_run
    from ui.viewmodels.compare import Comparison

    button = view.findChild(QToolButton, "cost_compare_baseline_button")
    assert not button.isEnabled()  # nothing compared yet
    comp = Comparison([BASE, KV], prompt="p", repeats=3)
    for r in range(3):  # 200 tokens a run, 0.1 s to the first, then 0.02 s apart: 4.08 s a run
        feed_run(comp, 0, r, list(range(200)), start=10.0 * r, ttft=0.1, gap=0.02)
        feed_run(comp, 1, r, list(range(200)), start=10.0 * r + 5, ttft=0.05, gap=0.01)
    comp.finished = True
    view.offer_comparison(comp)
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert view.cost.captured.source == "compare"
    rate = 600 / (3 * 4.08)
    assert text(view, "cost_baseline_tps_value") == f"{rate:.1f} tok/s"
    assert tip(view, "cost_baseline_basis_value") == "600 tokens over 12.2 s (100 % busy)"
    assert text(view, "cost_baseline_source").startswith("baseline (Compare run, one request at a time)")
    load(view.model, 0.0, 10.0, 4)  # then the dashboard measures 40 tok/s under load
    view.refresh()
    assert text(view, "cost_summary").startswith(f"×{40 / rate:.2f} throughput")
