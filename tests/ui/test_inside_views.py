"""Timeline and Memory planner on a real (tiny) engine: lanes from a real run (a request that
joins later starts later, an aborted one ends), clicks give a step's phases and a lane's id;
the planner's figures are plan_memory's, and the live KV bytes agree with the estimate."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QPushButton, QSpinBox, QWidget
from transformers import AutoConfig

from engine import events as ev
from engine.config import BatchingConfig, EngineConfig, GenerateRequest, Quantisation
from engine.engine import Engine
from engine.kv import SPARE_COLUMNS
from engine.memory_plan import plan_memory
from tests.helpers.engine_utils import greedy
from ui.bridge import EngineBridge
from ui.formatting import format_bytes
from ui.memory_view import MemoryView
from ui.timeline_view import AXIS_H, TimelineView

TIMEOUT_MS = 60_000
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def bridge(qtbot, tiny_llama_dir):
    b = EngineBridge(Engine(str(tiny_llama_dir), EngineConfig(batching=BatchingConfig(max_batch_size=4))))
    yield b
    assert b.shutdown()


def start(qtbot, bridge) -> None:
    with qtbot.waitSignal(bridge.model_loaded, timeout=TIMEOUT_MS):
        bridge.start()


def submit(bridge, rid: str, n: int, prompt: str = "to be or not to be that is the question") -> str:
    return bridge.submit(GenerateRequest(prompt=prompt, sampling=greedy(n, ignore_eos=True), request_id=rid))


def test_timeline_lanes_from_a_real_run(qtbot, bridge):
    view = TimelineView(bridge)
    qtbot.addWidget(view)
    view.resize(1000, 500)
    view.show()
    start(qtbot, bridge)
    rec = view.recorder
    finished = set()
    bridge.request_finished.connect(lambda e: finished.add(e.request_id))
    # long enough that it is still running when the others join, on a fast engine too (120
    # tokens of the tiny model took ~25 ms of busy time: it could finish before "short" joined)
    submit(bridge, "long", 400)
    qtbot.waitUntil(lambda: len(rec.blocks_of("long")) >= 3, timeout=TIMEOUT_MS)
    submit(bridge, "short", 3, prompt="a horse")
    submit(bridge, "aborted", 400)
    qtbot.waitUntil(lambda: len(rec.blocks_of("aborted")) >= 2, timeout=TIMEOUT_MS)
    bridge.abort("aborted")
    qtbot.waitUntil(lambda: {"long", "short", "aborted"} <= finished, timeout=TIMEOUT_MS)
    lanes = rec.lanes
    assert lanes["short"].first_x > lanes["long"].first_x  # joined later, starts later
    assert lanes["short"].ended == "finished" and lanes["short"].last_x < lanes["long"].last_x
    assert lanes["aborted"].ended == "cancelled"
    assert sum(b.output_tokens for _, b in rec.blocks_of("aborted")) < 400  # it ended where it was aborted
    assert lanes["long"].ended == "finished"
    assert rec.blocks_of("short")[0][1].kind == "prefill"
    assert sum(b.output_tokens for _, b in rec.blocks_of("long")) == 400
    # the measured phases partition each step's wall time
    for s in rec.steps:
        assert abs(s.phases.total_s - s.wall_s) <= 0.05 * s.wall_s + 1e-4
    # click a step: its numbers; click a lane: its request
    view.set_paused(True)
    view.window_combo.setCurrentIndex(view.window_combo.findText("all"))
    canvas = view.canvas
    assert canvas.x0 <= rec.start_x and canvas.x1 >= rec.end_x  # "all" shows the whole run
    target = max((s for s, _ in rec.blocks_of("short")), key=lambda s: s.wall_s)
    px = int(canvas._sx((target.start + target.end) / 2))
    row = lanes["short"].row - canvas.row0
    with qtbot.waitSignal(view.request_selected, timeout=1000) as picked:
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(px, AXIS_H + row * canvas.lane_h + canvas.lane_h // 2))
    assert picked.args == ["short"]
    details = view.findChild(QLabel, "timeline_step_details").text()
    assert f"step {target.index}" in details and "forward" in details and "short: " in details
    assert canvas.highlighted == "short"
    qtbot.mouseMove(canvas, QPoint(px, AXIS_H + row * canvas.lane_h + 2))
    qtbot.waitUntil(lambda: canvas.toolTip().startswith(f"step {target.index}:"), timeout=2000)
    grabbed = canvas.grab().toImage()
    assert grabbed.width() > 0 and not grabbed.isNull()


def test_memory_view_shows_plan_memory_and_the_live_kv_agrees(qtbot, bridge, tiny_llama_dir):
    view = MemoryView(bridge)
    qtbot.addWidget(view)
    view.resize(1000, 560)
    view.show()
    with qtbot.waitSignal(view.plan_ready, timeout=TIMEOUT_MS):
        start(qtbot, bridge)
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    budget = view.planset.plans[Quantisation.NONE].available_bytes
    for level in Quantisation:
        plan = plan_memory(config, level, available=budget)
        assert view.findChild(QLabel, f"planner_weights_{level.value}").text() == format_bytes(plan.weights_bytes)
    plan = plan_memory(config, Quantisation.NONE, available=budget)
    assert view.current_plan() == plan
    assert view.findChild(QLabel, "planner_kv_per_token").text().startswith(f"{plan.kv_bytes_per_token:,} B")
    view.findChild(QSpinBox, "planner_batch").setValue(4)
    assert view.findChild(QLabel, "planner_max_context").text().startswith(f"{plan.max_context(4):,} tokens")
    view.findChild(QSpinBox, "planner_context").setValue(1000)
    assert view.findChild(QLabel, "planner_max_batch").text().startswith(f"{plan.max_batch(1000):,} sequences")
    xs, ys = view.lines[4].getData()
    assert abs(ys[-1] * (1 << 20) - plan.total_bytes(int(round(xs[-1])), 4)) <= plan.kv_bytes_per_token * 4
    # live: measured KV bytes for the tokens held, against the estimate
    done = []
    bridge.request_finished.connect(done.append)
    submit(bridge, "m", 40)
    qtbot.waitUntil(lambda: bool(done), timeout=TIMEOUT_MS)
    held, kv, rss = view._measured[-1]
    assert held > 40 and rss > 0
    # the cache is allocated with up to SPARE_COLUMNS free columns per row, written in place later
    est = plan.kv_bytes_per_token * held
    assert est - plan.kv_bytes_per_token <= kv <= est + SPARE_COLUMNS * plan.kv_bytes_per_token
    assert len(view.kv_points.data) == len(view._measured)
    text = view.findChild(QLabel, "planner_measured").text()
    assert f"{format_bytes(kv)} allocated for {held:,} tokens in 1 row(s)" in text
    assert f"estimate {format_bytes(plan.kv_bytes_per_token * held)}" in text


def test_memory_view_plans_a_folder_before_loading_it(qtbot, tiny_gpt2_dir):
    view = MemoryView(None)
    qtbot.addWidget(view)
    view.show()
    assert not view.plan()  # nothing loaded, no folder: says so
    assert "folder" in view.findChild(QLabel, "planner_status").text()
    source = view.findChild(QComboBox, "planner_source")
    source.setCurrentIndex(source.findData("folder"))
    qtbot.keyClicks(view.findChild(QLineEdit, "planner_folder"), str(tiny_gpt2_dir))
    with qtbot.waitSignal(view.plan_ready, timeout=TIMEOUT_MS):
        qtbot.mouseClick(view.findChild(QPushButton, "planner_run"), Qt.MouseButton.LeftButton)
    level = view.findChild(QComboBox, "planner_level")
    level.setCurrentIndex(level.findData(Quantisation.INT8))
    plan = plan_memory(AutoConfig.from_pretrained(tiny_gpt2_dir), Quantisation.INT8,
                       available=view.current_plan().available_bytes)
    assert view.current_plan() == plan
    assert view.findChild(QLabel, "planner_max_context").text().startswith(f"{plan.max_context(1):,} tokens")


def test_the_picker_warns_before_loading_a_model_that_will_not_fit(qtbot, window, tmp_path, tiny_gpt2_dir):
    from transformers import LlamaConfig

    huge = tmp_path / "huge"
    LlamaConfig(hidden_size=16384, intermediate_size=65536, num_hidden_layers=64, num_attention_heads=128,
                num_key_value_heads=8, vocab_size=32000).save_pretrained(huge)  # ~1 TB of weights, no files
    picker = window.engine_panel.picker
    guard = picker.findChild(QWidget, "model_fit_guard")
    assert not guard.isVisible()
    loaded_before = window.bridge.model_info
    loads = []
    window.bridge.load_progressed.connect(loads.append)
    with qtbot.waitSignal(guard.checked, timeout=TIMEOUT_MS) as checked:
        picker.request(str(huge))
    assert checked.args[0] == str(huge) and "needs about" in checked.args[1]
    warning = picker.findChild(QLabel, "model_fit_warning")
    assert guard.isVisible() and warning.isVisible() and "Will not fit" in warning.text()
    assert window.bridge.state is not ev.EngineState.LOADING and not loads  # nothing was loaded
    with qtbot.waitSignal(guard.load_refused, timeout=1000):
        qtbot.mouseClick(picker.findChild(QPushButton, "model_fit_cancel"), Qt.MouseButton.LeftButton)
    assert not guard.isVisible() and window.bridge.model_info is loaded_before
    # a model that fits loads straight away
    with qtbot.waitSignal(window.bridge.model_loaded, timeout=TIMEOUT_MS) as done:
        picker.request(str(tiny_gpt2_dir))
    assert done.args[0].name_or_path == str(tiny_gpt2_dir) and not guard.isVisible()
