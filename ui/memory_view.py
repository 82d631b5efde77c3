"""Memory planner: what the loaded model (or a folder, before loading it) needs, and where this
machine's free memory runs out; the engine's measured KV bytes and RSS drawn on the projection.

Planning reads the model's config and builds it on the meta device (engine.memory_plan): quick,
but a worker thread does it so a large config never blocks the GUI; the result comes back
through a queue that a QTimer drains here.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.config import Quantisation
from engine.kv import SPARE_COLUMNS
from ui.charts.base import AMBER, BLUE, GREEN, PURPLE, RED, SLATE
from ui.formatting import format_bytes
from ui.reflow import FlowLayout
from ui.fill_layout import FillColumn
from ui.theme import LIGHT, Theme
from ui.widgets import label, labelled, named

MIB = float(1 << 20)
BATCHES = ((1, BLUE), (4, GREEN), (8, PURPLE))
DRAIN_MS = 100


@dataclass(frozen=True)
class PlanSet:
    """Plans for one model at every quantisation level (plain data from the worker)."""

    source: str
    plans: dict  # Quantisation -> engine.memory_plan.MemoryPlan
    context_length: int | None
    dtype: str
    loaded: bool  # the model the engine holds (its RSS counts against the budget)


def plan_all(source: str, *, dtype: str = "float32", device: str = "cpu", extra_available: int = 0) -> PlanSet:
    """Every level's plan for a model folder (or hub id in the local cache). Runs off the GUI thread.

    extra_available: bytes this process already holds for the model that a plan may count as
    usable (the loaded model's RSS), added to the machine's free memory."""
    import torch
    from transformers import AutoConfig

    from engine.memory_plan import available_bytes, plan_context, plan_memory

    config = AutoConfig.from_pretrained(source)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        torch_dtype = torch.float32
    avail = available_bytes(device) + extra_available
    plans = {level: plan_memory(config, level, dtype=torch_dtype, device=device, available=avail)
             for level in Quantisation}
    return PlanSet(source, plans, plan_context(config), str(torch_dtype).replace("torch.", ""), extra_available > 0)


class MemoryView(QWidget):
    """The Memory planner panel."""

    plan_ready = Signal(object)  # PlanSet

    def __init__(self, bridge=None, *, theme: Theme = LIGHT, parent=None) -> None:
        super().__init__(parent)
        named(self, "memory_view", "Memory planner")
        self.bridge = bridge
        self.theme = theme
        self.planset: PlanSet | None = None
        self._queue: queue.Queue = queue.Queue()
        self._tokens: dict[str, int] = {}  # tokens each live request holds in the cache
        self._measured: list[tuple[int, int, int]] = []  # (tokens held, kv bytes, rss)
        self._latest = None
        self._rows: list[int] = []  # tokens held per row computed in the last step

        self.source_combo = named(QComboBox(), "planner_source", "Model to plan for")
        self.source_combo.addItem("loaded model", "loaded")
        self.source_combo.addItem("a folder…", "folder")
        self.folder_edit = named(QLineEdit(), "planner_folder", "Model folder to plan for")
        self.folder_edit.setPlaceholderText("a model folder (config.json), not loaded")
        self.browse_button = named(QPushButton("Browse…"), "planner_browse", "Choose a model folder")
        self.plan_button = named(QPushButton("Plan"), "planner_run", "Plan memory for the model")
        self.level_combo = named(QComboBox(), "planner_level", "Quantisation level to chart")
        for q in Quantisation:
            self.level_combo.addItem(q.value, q)
        self.batch_spin = named(QSpinBox(), "planner_batch", "Batch size for the largest context")
        self.batch_spin.setRange(1, 1024)
        self.context_spin = named(QSpinBox(), "planner_context", "Context for the largest batch")
        self.context_spin.setRange(1, 10_000_000)
        self.context_spin.setValue(2048)
        self.range_combo = named(QComboBox(), "planner_range", "Context range of the chart")
        for text, data in (("to the memory limit", "limit"), ("to the trained context", "trained"),
                           ("around the tokens held now", "held")):
            self.range_combo.addItem(text, data)
        self.status = label("", "planner_status", "Planner status", role="muted")
        self.status.setWordWrap(True)

        self.facts = named(QWidget(), "planner_facts", "Memory plan figures")
        grid = QGridLayout(self.facts)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setVerticalSpacing(2)
        self.level_labels: dict[Quantisation, object] = {}
        grid.addWidget(label("Weights by level", "planner_weights_title", role="section"), 0, 0, 1, 2)
        for i, q in enumerate(Quantisation):
            grid.addWidget(label(q.value, f"planner_weights_{q.value}_label", f"{q.value} label", role="field"),
                           1 + i, 0)
            self.level_labels[q] = label("–", f"planner_weights_{q.value}", f"Weights at {q.value}", role="value")
            grid.addWidget(self.level_labels[q], 1 + i, 1)
        row = 2 + len(Quantisation)
        self.values = {}
        for j, (key, title) in enumerate((("kv_per_token", "KV bytes per token"), ("available", "memory budget"),
                                          ("overhead", "runtime overhead"), ("max_context", "largest context"),
                                          ("max_batch", "largest batch"), ("measured", "measured"))):
            grid.addWidget(label(title, f"planner_{key}_label", f"{title} label", role="field"), row + j, 0)
            self.values[key] = label("–", f"planner_{key}", title, role="value")
            self.values[key].setWordWrap(True)
            grid.addWidget(self.values[key], row + j, 1)
        grid.setRowStretch(row + 6, 1)
        self.facts.setMinimumWidth(230)
        self.facts.setMaximumWidth(330)

        self.plot = named(pg.PlotWidget(), "planner_chart", "Total memory against context")
        self.plot.setMinimumSize(300, 200)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "context (tokens per sequence)")
        self.plot.setLabel("left", "total (MiB)")
        self.lines = {b: self.plot.plot([], [], pen=pg.mkPen(c, width=2), name=f"batch {b}") for b, c in BATCHES}
        self.free_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(RED, width=2, style=Qt.PenStyle.DashLine),
                                         label="memory budget", labelOpts={"position": 0.15, "color": RED})
        self.plot.addItem(self.free_line)
        self.weights_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(SLATE, width=1, style=Qt.PenStyle.DotLine),
                                            label="weights + overhead", labelOpts={"position": 0.8, "color": SLATE})
        self.plot.addItem(self.weights_line)
        self.kv_points = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(AMBER), pen=pg.mkPen(None),
                                            name="measured: weights + overhead + KV (x: tokens held, all rows)")
        self.rss_points = pg.ScatterPlotItem(size=7, symbol="t", brush=pg.mkBrush(RED), pen=pg.mkPen(None),
                                             name="measured: process RSS")
        self.plot.addItem(self.kv_points)
        self.plot.addItem(self.rss_points)
        swatch = "<span style='color:{}'>{}</span> {}".format
        self.legend = label(" &nbsp; ".join([swatch(c, "━", f"batch {b}") for b, c in BATCHES] + [
            swatch(RED, "┅", "memory budget"), swatch(SLATE, "┈", "weights + overhead"),
            swatch(AMBER, "●", "measured weights + overhead + KV (x: tokens held by all rows)"),
            swatch(RED, "▼", "measured process RSS")]), "planner_legend", "Chart colours", role="muted")
        self.legend.setWordWrap(True)

        self.controls = named(QWidget(), "planner_controls", "Planner settings")
        top = FlowLayout(self.controls, spacing=6)
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(label("Memory planner", "planner_title", role="section"))
        for w in (self.source_combo, self.folder_edit, self.browse_button, self.plan_button):
            top.addWidget(w)
        for title, w in (("level", self.level_combo), ("batch", self.batch_spin), ("context", self.context_spin),
                         ("chart", self.range_combo)):
            top.addWidget(labelled(title, w))
        self.folder_edit.setMinimumWidth(220)
        body = QHBoxLayout()
        body.addWidget(self.facts)
        chart = QVBoxLayout()
        chart.setSpacing(2)
        chart.addWidget(self.legend)
        chart.addWidget(self.plot, 1)
        body.addLayout(chart, 1)
        box = FillColumn(self)
        box.setContentsMargins(8, 6, 8, 6)
        box.setSpacing(4)
        box.addWidget(self.controls)
        box.addWidget(self.status)
        box.addLayout(body, 1)

        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        self.browse_button.clicked.connect(self._browse)
        self.plan_button.clicked.connect(self.plan)
        self.folder_edit.returnPressed.connect(self.plan)
        for w in (self.level_combo, self.range_combo, self.batch_spin, self.context_spin):
            (w.currentIndexChanged if isinstance(w, QComboBox) else w.valueChanged).connect(self._refresh)
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_MS)
        self._timer.timeout.connect(self._drain)
        self._on_source_changed()
        if bridge is not None:
            bridge.model_loaded.connect(self._on_model_loaded)
            bridge.step_completed.connect(self._on_step_completed)
            if bridge.model_info is not None:
                self._on_model_loaded(bridge.model_info)

    # ---- planning
    def _on_source_changed(self, *_args) -> None:
        folder = self.source_combo.currentData() == "folder"
        self.folder_edit.setVisible(folder)
        self.browse_button.setVisible(folder)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder to plan for")
        if path:
            self.folder_edit.setText(path)
            self.plan()

    def plan(self) -> bool:
        """Start planning for the chosen source on a worker thread; False when there is nothing to plan."""
        info = self.bridge.model_info if self.bridge is not None else None
        if self.source_combo.currentData() == "folder":
            source = self.folder_edit.text().strip()
            if not source:
                self.status.setText("Choose a model folder to plan for (it is not loaded).")
                return False
            kwargs = {}
        elif info is not None:
            from engine.metrics import process_rss_bytes

            source = info.name_or_path
            device = "cuda" if info.device.startswith("cuda") else "cpu"
            kwargs = {"dtype": info.dtype, "device": device,
                      "extra_available": process_rss_bytes() if device == "cpu" else 0}
        else:
            self.status.setText("No model loaded: choose 'a folder…' to plan for one before loading it.")
            return False
        self.status.setText(f"Planning for {Path(source).name or source}…")
        q = self._queue

        def work() -> None:
            try:
                q.put(plan_all(source, **kwargs))
            except Exception as exc:  # noqa: BLE001 - a bad folder is reported, not raised on a worker
                q.put(f"Cannot plan for {source}: {type(exc).__name__}: {exc}")

        threading.Thread(target=work, name="memory-plan", daemon=True).start()
        self._timer.start()
        return True

    def _drain(self) -> None:
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return
        self._timer.stop()
        if isinstance(item, str):
            self.status.setText(item)
            return
        self.planset = item
        if item.loaded and self.bridge is not None and self.bridge.model_info is not None:
            try:
                level = Quantisation(self.bridge.model_info.quantisation)
            except ValueError:
                level = Quantisation.NONE
            self.level_combo.setCurrentIndex(self.level_combo.findData(level))
        budget = "free memory + this process's RSS" if item.loaded else "free memory now"
        ctx = f", trained context {item.context_length:,}" if item.context_length else ""
        self.status.setText(f"{Path(item.source).name or item.source}: {item.dtype}{ctx}; "
                            f"the budget line is {budget}.")
        self._refresh()
        self.plan_ready.emit(item)

    def _on_model_loaded(self, _info) -> None:
        self._tokens.clear()
        self._measured.clear()
        if self.source_combo.currentData() == "loaded":
            self.plan()

    # ---- live measurements
    def _on_step_completed(self, event) -> None:
        s = event.stats
        if s.rss_bytes is None or s.kv_cache_bytes is None or s.weights_bytes is None:
            return  # a remote server's step: its memory is not ours to measure
        for r in s.rows:
            self._tokens[r.request_id] = self._tokens.get(r.request_id, 0) + r.num_prefill_tokens + \
                r.num_output_tokens
        rows = [self._tokens[r.request_id] for r in s.rows]  # tokens each computed row holds now
        held = sum(rows)
        live = {r.request_id for r in s.rows if not r.finished} | set(s.waiting_ids)
        for rid in list(self._tokens):
            if rid not in live or rid in s.preempted_ids:
                self._tokens.pop(rid)  # finished, gone, or its cache freed by preemption
        self._latest = s
        if held > 0 and s.kv_cache_bytes > 0:
            self._rows = rows
            self._measured.append((held, s.kv_cache_bytes, s.rss_bytes))
            del self._measured[:-400]
        if self.range_combo.currentData() == "held" and len(self._measured) % 25 == 1:
            self._refresh()  # the range follows the tokens held
        else:
            self._refresh_measured()

    def _refresh_measured(self) -> None:
        plan = self.current_plan()
        s = self._latest
        if plan is None or s is None:
            return
        if self._measured:
            held, kv, _rss = self._measured[-1]
            est = plan.kv_bytes_per_token * held
            rows = self._rows or [held]
            padded = len(rows) * (max(rows) + SPARE_COLUMNS) * plan.kv_bytes_per_token
            self.values["measured"].setText(
                f"KV {format_bytes(kv)} allocated for {held:,} tokens in {len(rows)} row(s); estimate "
                f"{format_bytes(est)} for the tokens, up to {format_bytes(padded)} with the cache's padding "
                f"(rows as wide as the longest, {SPARE_COLUMNS} spare columns) · RSS {format_bytes(s.rss_bytes)}")
        else:
            self.values["measured"].setText(f"RSS {format_bytes(s.rss_bytes)} (no tokens held now)")
        base = s.weights_bytes + plan.overhead_bytes
        xs = np.array([m[0] for m in self._measured], dtype=float)
        self.kv_points.setData(xs, np.array([(base + m[1]) / MIB for m in self._measured]))
        self.rss_points.setData(xs, np.array([m[2] / MIB for m in self._measured]))

    # ---- drawing
    def current_plan(self):
        if self.planset is None:
            return None
        return self.planset.plans[self.level_combo.currentData()]

    def _refresh(self, *_args) -> None:
        plan = self.current_plan()
        if plan is None:
            return
        for q, w in self.level_labels.items():
            w.setText(format_bytes(self.planset.plans[q].weights_bytes))
        b, c = self.batch_spin.value(), self.context_spin.value()
        self.values["kv_per_token"].setText(f"{plan.kv_bytes_per_token:,} B ({format_bytes(plan.kv_bytes_per_token)})")
        self.values["available"].setText(format_bytes(plan.available_bytes))
        self.values["overhead"].setText(format_bytes(plan.overhead_bytes))
        self.values["max_context"].setText(f"{plan.max_context(b):,} tokens at batch {b}")
        self.values["max_batch"].setText(f"{plan.max_batch(c):,} sequences of {c:,} tokens")
        x_max = self._x_max(plan)
        xs = np.linspace(0, x_max, 64)
        for batch, line in self.lines.items():
            line.setData(xs, (plan.weights_bytes + plan.overhead_bytes + plan.kv_bytes_per_token * xs * batch) / MIB)
        self.free_line.setValue(plan.available_bytes / MIB)
        self.weights_line.setValue((plan.weights_bytes + plan.overhead_bytes) / MIB)
        self.plot.setXRange(0, x_max, padding=0.02)
        top = plan.total_bytes(int(x_max), BATCHES[-1][0])
        if self._measured:
            top = max(top, max(m[2] for m in self._measured))
        if plan.available_bytes <= 3 * top:
            top = max(top, plan.available_bytes)  # the budget line is in view
        above = plan.available_bytes > top * 1.1
        self.plot.setTitle(f"memory budget {format_bytes(plan.available_bytes)}: above this range" if above else
                           f"where the lines cross the budget: the largest context per batch size")
        self.plot.setYRange(0, top / MIB * 1.08, padding=0)
        self._refresh_measured()

    def _x_max(self, plan) -> float:
        mode = self.range_combo.currentData()
        if mode == "trained" and self.planset.context_length:
            return float(self.planset.context_length)
        if mode == "held":
            held = max((m[0] for m in self._measured), default=0)
            return float(max(held * 2, 256))
        return float(max(min(plan.max_context(1) * 1.15, 1e9), 256))

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.plot.setBackground(theme.surface)
        for ax in ("left", "bottom"):
            self.plot.getAxis(ax).setTextPen(theme.text)
            self.plot.getAxis(ax).setPen(theme.muted)
