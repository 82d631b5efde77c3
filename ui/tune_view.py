"""Tune tab: sweep configurations of the loaded model, see the Pareto front, apply a pick.

The sweep (engine.tune.Sweep) runs on a Python worker thread with its own engine (a second
copy of the weights while it runs); its progress comes back through a queue that a QTimer
drains here on the GUI thread, so no widget is ever touched from the worker.
"""

from __future__ import annotations

import copy
import queue
import threading
from dataclasses import replace
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.config import EngineConfig, ModelSpec
from engine.tune import GOALS, GridPoint, PointResult, Progress, Sweep, load_grid, make_grid
from ui.charts.base import AMBER, BLUE, SLATE
from ui.reflow import FlowLayout
from ui.fill_layout import FillColumn
from ui.theme import LIGHT, Theme
from ui.viewmodels.tune import TABLE_COLUMNS, X_AXES, Y_AXES, TuneModel, cell, point_summary
from ui.widgets import label, labelled, named

DRAIN_INTERVAL_MS = 100
MAX_LABELLED = 40  # beyond this many points only the front is labelled (a readable chart)


def _combo(name: str, accessible: str, items: list[tuple[str, str]]) -> QComboBox:
    box = named(QComboBox(), name, accessible)
    for text, data in items:
        box.addItem(text, data)
    return box


class TuneView(QWidget):
    """The Tune tab. `compare_requested` carries [(name, EngineConfig), ...] for the Compare tab."""

    compare_requested = Signal(object)
    sweep_finished = Signal(object)  # list[PointResult]

    def __init__(self, bridge, *, draft_model: str | None = None, save_path: str | Path | None = None,
                 theme: Theme = LIGHT, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        named(self, "tune_view", "Tune configurations")
        self.bridge = bridge
        self.draft_model = draft_model
        if save_path is None:
            base = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))
            save_path = base / "tune-last.json"
        self.save_path = Path(save_path)
        self.theme = theme
        self.model = TuneModel()
        self._sweep: Sweep | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue()
        self._cancelled = False
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)
        self._update_buttons()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.grid_combo = _combo("tune_grid", "Grid of configurations",
                                 [("quick grid", "quick"), ("full grid", "full"), ("grid file…", "file")])
        self.grid_combo.setToolTip("quick: the choices that matter most · full: the cross product · "
                                   "file: a JSON list of configurations")
        self.grid_file_edit = named(QLineEdit(), "tune_grid_file", "Grid file path")
        self.grid_file_edit.setPlaceholderText("grid JSON file")
        self.grid_browse = named(QPushButton("Browse…"), "tune_grid_browse", "Choose a grid file")
        self.users_spin = named(QSpinBox(), "tune_users", "Concurrent users for throughput")
        self.users_spin.setRange(1, 64)
        self.users_spin.setValue(4)
        self.repeats_spin = named(QSpinBox(), "tune_repeats", "Repeats per point")
        self.repeats_spin.setRange(1, 10)
        self.y_combo = _combo("tune_objective", "Objective", [(a.title, k) for k, a in Y_AXES.items()])
        self.x_combo = _combo("tune_x_axis", "Plotted against", [(a.title, k) for k, a in X_AXES.items()])
        self.start_button = named(QPushButton("Start sweep"), "tune_start", "Start the sweep")
        self.start_button.setProperty("role", "primary")
        self.cancel_button = named(QPushButton("Cancel"), "tune_cancel", "Cancel the sweep")
        self.resume_button = named(QPushButton("Resume"), "tune_resume", "Resume the cancelled sweep")
        self.load_button = named(QPushButton("Load results…"), "tune_load", "Load saved tune results")
        self.export_png = named(QPushButton("PNG"), "tune_export_png", "Export the chart as PNG")
        self.export_csv = named(QPushButton("CSV"), "tune_export_csv", "Export the table as CSV")
        self.export_md = named(QPushButton("Markdown"), "tune_export_markdown", "Export a Markdown report")
        self.progress = named(QProgressBar(), "tune_progress", "Sweep progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setMaximumHeight(16)
        self.progress.hide()
        self.status = label("Pick a grid and start: the sweep loads a second copy of the model while it runs.",
                            "tune_status", "Sweep status", role="muted")
        self.status.setWordWrap(True)

        bar = named(QWidget(), "tune_controls", "Sweep settings")
        flow = FlowLayout(bar, spacing=8)
        flow.setContentsMargins(0, 0, 0, 0)
        for w in (self.grid_combo, self.grid_file_edit, self.grid_browse):
            flow.addWidget(w)
        for title, w in (("Users", self.users_spin), ("Repeats", self.repeats_spin), ("Objective", self.y_combo),
                         ("against", self.x_combo)):
            flow.addWidget(labelled(title, w))
        for w in (self.start_button, self.cancel_button, self.resume_button, self.load_button):
            flow.addWidget(w)
        exports = QWidget()
        erow = QHBoxLayout(exports)
        erow.setContentsMargins(0, 0, 0, 0)
        erow.setSpacing(4)
        erow.addWidget(label("Export", "tune_export_label", "Export label", role="field"))
        for w in (self.export_png, self.export_csv, self.export_md):
            erow.addWidget(w)
        flow.addWidget(exports)
        self.grid_file_edit.setMinimumWidth(180)

        self.plot = named(pg.PlotWidget(), "tune_scatter", "Configurations: speed against cost")
        self.plot.setMinimumSize(320, 200)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMenuEnabled(False)
        self.scatter = pg.ScatterPlotItem(size=9, hoverable=True, tip=self._tip, hoverSize=13,
                                          brush=pg.mkBrush(SLATE), pen=pg.mkPen(None))
        self.front_line = pg.PlotDataItem(pen=pg.mkPen(AMBER, width=1.5, style=Qt.PenStyle.DashLine))
        self.front_scatter = pg.ScatterPlotItem(size=13, hoverable=True, tip=self._tip, brush=pg.mkBrush(AMBER),
                                                pen=pg.mkPen(BLUE, width=1.5))
        for item in (self.front_line, self.scatter, self.front_scatter):
            self.plot.addItem(item)
        self._labels: list[pg.TextItem] = []

        self.recs_area = named(QWidget(), "tune_recommendations", "Recommendations")
        recs = QGridLayout(self.recs_area)
        recs.setContentsMargins(0, 0, 0, 0)
        recs.setVerticalSpacing(4)
        recs.addWidget(label("Recommendations", "tune_recommendations_title", role="section"), 0, 0, 1, 2)
        self.rec_labels, self.apply_buttons, self.compare_buttons = {}, {}, {}
        for i, goal in enumerate(GOALS):
            key = f"tune_rec_{i}"
            text = label(f"{goal}: –", key, f"Recommendation: {goal}")
            text.setWordWrap(True)
            apply = named(QPushButton("Apply"), f"{key}_apply", f"Apply the pick for {goal}",
                          "reconfigures the window's engine live")
            compare = named(QPushButton("Send to Compare"), f"{key}_compare", f"Send the pick for {goal} to Compare",
                            "opens the baseline and this configuration as Compare columns")
            apply.clicked.connect(lambda _c=False, g=goal: self.apply(g))
            compare.clicked.connect(lambda _c=False, g=goal: self.send_to_compare([g]))
            recs.addWidget(text, 1 + 2 * i, 0, 1, 2)
            recs.addWidget(apply, 2 + 2 * i, 0)
            recs.addWidget(compare, 2 + 2 * i, 1)
            self.rec_labels[goal], self.apply_buttons[goal], self.compare_buttons[goal] = text, apply, compare
        self.compare_all = named(QPushButton("Compare all picks"), "tune_compare_all",
                                 "Send every pick to Compare")
        self.compare_all.clicked.connect(lambda: self.send_to_compare(list(GOALS)))
        recs.addWidget(self.compare_all, 1 + 2 * len(GOALS), 0, 1, 2)
        self.k_label = label("", "tune_k_advice", "Advisor k against measured best k", role="muted")
        self.k_label.setWordWrap(True)
        recs.addWidget(self.k_label, 2 + 2 * len(GOALS), 0, 1, 2)
        recs.setRowStretch(3 + 2 * len(GOALS), 1)
        self.recs_area.setMinimumWidth(240)
        self.recs_area.setMaximumWidth(340)

        self.table = named(QTableWidget(0, len(TABLE_COLUMNS)), "tune_table", "Sweep results")
        self.table.setHorizontalHeaderLabels([t for _, t in TABLE_COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setMinimumHeight(110)

        top = QWidget()
        top_row = QHBoxLayout(top)
        top_row.setContentsMargins(0, 0, 0, 0)
        top_row.addWidget(self.plot, 1)
        top_row.addWidget(self.recs_area)
        split = named(QSplitter(Qt.Orientation.Vertical), "tune_split", "Chart and table")
        split.addWidget(top)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)

        box = FillColumn(self)
        box.setContentsMargins(10, 8, 10, 8)
        box.setSpacing(6)
        box.addWidget(bar)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        box.addWidget(split, 1)

        self.grid_combo.currentIndexChanged.connect(self._update_buttons)
        self.grid_file_edit.textChanged.connect(self._update_buttons)
        self.grid_browse.clicked.connect(self._browse_grid)
        self.y_combo.currentIndexChanged.connect(self._on_axes_changed)
        self.x_combo.currentIndexChanged.connect(self._on_axes_changed)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(self.resume)
        self.load_button.clicked.connect(self._load_dialog)
        self.export_png.clicked.connect(lambda: self._export_dialog("png"))
        self.export_csv.clicked.connect(lambda: self._export_dialog("csv"))
        self.export_md.clicked.connect(lambda: self._export_dialog("md"))
        self._refresh()

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.plot.setBackground(theme.surface)
        for ax in ("left", "bottom"):
            self.plot.getAxis(ax).setTextPen(theme.text)
            self.plot.getAxis(ax).setPen(theme.muted)
        self._refresh()

    # ------------------------------------------------------------------ sweep
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def points(self) -> list[GridPoint]:
        kind = self.grid_combo.currentData()
        if kind == "file":
            return load_grid(self.grid_file_edit.text().strip(), self.draft_model)
        return make_grid(kind, self.draft_model)

    def start(self) -> bool:
        return self._launch(resume=False)

    def resume(self) -> bool:
        return self._launch(resume=True)

    def _launch(self, *, resume: bool) -> bool:
        if self.running:
            return False
        info = self.bridge.model_info
        if getattr(self.bridge, "is_remote", False):
            self.status.setText("Tune measures the local engine: switch back to it first (the sweep loads the model).")
            return False
        if info is None:
            self.status.setText("Load a model first: the sweep measures the loaded model.")
            return False
        try:
            points = self.points()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.status.setText(f"Cannot read the grid: {exc}")
            return False
        if not resume and self.save_path.exists():
            self.save_path.unlink()
        self.save_path.parent.mkdir(parents=True, exist_ok=True)
        sweep = Sweep(ModelSpec(info.name_or_path), points, users=self.users_spin.value(),
                      repeats=self.repeats_spin.value(), save_to=self.save_path)
        self.model.start([p.name for p in points])
        self.model.provenance = {"model": info.name_or_path}
        done = sweep.resume() if resume else 0
        for r in sweep.results.values():
            self.model.add(r)
        self._sweep, self._cancelled = sweep, False
        self._queue = queue.Queue()
        q = self._queue
        self._thread = threading.Thread(target=self._work, args=(sweep, q), name="tune-sweep", daemon=True)
        self.progress.setRange(0, len(points))
        self.progress.setValue(done)
        self.status.setText(f"Starting: {len(points)} points, {done} already measured. "
                            "A second copy of the model is loaded while the sweep runs.")
        self._thread.start()
        self.progress.show()
        self._timer.start()
        self._refresh()
        self._update_buttons()
        return True

    @staticmethod
    def _work(sweep: Sweep, q: queue.Queue) -> None:
        """Worker thread: only puts plain data on the queue (copies: the sweep keeps its own)."""

        def report(p: Progress) -> None:
            q.put(("progress", replace(p, result=copy.deepcopy(p.result)) if p.result is not None else p))

        try:
            q.put(("done", copy.deepcopy(sweep.run(report))))
        except Exception as exc:  # noqa: BLE001 - reported in the tab, the sweep is over either way
            q.put(("error", f"{type(exc).__name__}: {exc}"))

    def cancel(self) -> None:
        if self._sweep is not None and self.running:
            self._sweep.cancel.set()
            self._cancelled = True
            self.status.setText("Cancelling after the current run…")
            self._update_buttons()

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._sweep is not None:
            self._sweep.cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._timer.stop()

    def _drain(self) -> None:
        changed = False
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                self._on_progress(payload)
                changed = changed or payload.result is not None
            elif kind == "done":
                self._on_finished(payload)
            else:
                self._on_failed(payload)
        if changed:
            self._refresh()

    def _on_progress(self, p: Progress) -> None:
        self.model.on_progress(p)
        self.progress.setRange(0, p.total)
        self.progress.setValue(p.done)
        self.status.setText(self.model.progress_text())

    def _on_finished(self, results: list[PointResult]) -> None:
        self._timer.stop()
        for r in results:
            self.model.add(r)
        self._refresh()
        total = len(self._sweep.points) if self._sweep else len(results)
        if self._cancelled and len(results) < total:
            self.status.setText(f"Cancelled: {len(results)} of {total} points kept; Resume measures the rest.")
        else:
            skipped = sum(1 for r in results if not r.measured)
            self.status.setText(f"Done: {len(results)} points, {skipped} not measured (see the reason column).")
        self._thread = None
        self._update_buttons()
        self.sweep_finished.emit(results)

    def _on_failed(self, message: str) -> None:
        self._timer.stop()
        self._thread = None
        self.status.setText(f"The sweep failed: {message}")
        self._update_buttons()

    def _update_buttons(self, *_args) -> None:
        running = self.running
        self.progress.setVisible(running)
        file_grid = self.grid_combo.currentData() == "file"
        self.grid_file_edit.setVisible(file_grid)
        self.grid_browse.setVisible(file_grid)
        ready = not file_grid or bool(self.grid_file_edit.text().strip())
        self.start_button.setEnabled(not running and ready)
        self.cancel_button.setEnabled(running and not (self._sweep and self._sweep.cancel.is_set()))
        self.resume_button.setEnabled(not running and self._cancelled and self.save_path.is_file())
        self.load_button.setEnabled(not running)
        for goal in GOALS:
            ok = self._pick(goal) is not None
            self.apply_buttons[goal].setEnabled(ok)
            self.compare_buttons[goal].setEnabled(ok)
        self.compare_all.setEnabled(len(self._picks(list(GOALS))) >= 1)
        for w in (self.export_png, self.export_csv, self.export_md):
            w.setEnabled(bool(self.model.results))

    # ------------------------------------------------------------------ results
    def load_results(self, path: str | Path) -> int:
        n = self.model.load_json(path)
        self._refresh()
        self.status.setText(f"Loaded {n} points from {Path(path).name}.")
        self._update_buttons()
        return n

    def _on_axes_changed(self, *_args) -> None:
        self.model.y_axis = self.y_combo.currentData()
        self.model.x_axis = self.x_combo.currentData()
        self._refresh()

    def _tip(self, x=None, y=None, data=None) -> str:
        return self.hover_text(data)

    def hover_text(self, name: str | None) -> str:
        r = next((r for r in self.model.results if r.name == name), None)
        return point_summary(r) if r is not None else ""

    def _refresh(self) -> None:
        xa, ya = self.model.axes
        pts = self.model.plotted()
        front = self.model.front()
        fset = set(front)
        by = {r.name: r for r in pts}

        def xy(r):
            return xa.value(r) / xa.scale, ya.value(r) / ya.scale

        rest = [r for r in pts if r.name not in fset]
        self.scatter.setData([xy(r)[0] for r in rest], [xy(r)[1] for r in rest], data=[r.name for r in rest])
        self.front_scatter.setData([xy(by[n])[0] for n in front], [xy(by[n])[1] for n in front], data=front)
        line = sorted((xy(by[n]) for n in front))
        self.front_line.setData([p[0] for p in line], [p[1] for p in line])
        for item in self._labels:
            self.plot.removeItem(item)
        self._labels = []
        colour = self.theme.text
        short, common = self.model.labels()
        xs = [xy(r)[0] for r in pts]
        mid = (min(xs) + max(xs)) / 2 if xs else 0.0
        for r in pts:
            if len(pts) > MAX_LABELLED and r.name not in fset:
                continue
            x, y = xy(r)
            # labels point into the chart: those right of the middle end at their point
            t = pg.TextItem(short.get(r.name, r.name), color=colour, anchor=(1.05, 1) if x > mid else (-0.05, 1))
            t.setPos(x, y)
            t.setToolTip(r.name)
            self.plot.addItem(t)
            self._labels.append(t)
        self.plot.setLabel("bottom", f"{xa.title} ({xa.unit})")
        self.plot.setLabel("left", f"{ya.title} ({ya.unit})")
        every = f" · every point: {common}" if common else ""
        self.plot.setTitle(f"{len(pts)} measured · {len(front)} on the Pareto front (orange){every}")
        self._fill_table(fset)
        for rec in self.model.recommendations():
            self.rec_labels[rec.goal].setText(f"<b>{rec.goal}</b>: {rec.point or '–'}<br><small>{rec.why}</small>")
            self.rec_labels[rec.goal].setAccessibleDescription(f"{rec.point or 'none'}: {rec.why}")
        self.k_label.setText("<br>".join(a.text() for a in self.model.k_advice()))
        self._update_buttons()

    def _fill_table(self, front: set[str]) -> None:
        results = self.model.results
        self.table.setRowCount(len(results))
        for row, r in enumerate(results):
            for col, (key, _title) in enumerate(TABLE_COLUMNS):
                text = cell(r, key)
                if key == "name" and r.name in front:
                    text = "★ " + text
                item = QTableWidgetItem(text)
                if key != "name" and key != "reason":
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(r.reason if key == "reason" else point_summary(r))
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()

    # ------------------------------------------------------------------ actions
    def _pick(self, goal: str) -> str | None:
        rec = next((r for r in self.model.recommendations() if r.goal == goal), None)
        return rec.point if rec else None

    def _picks(self, goals: list[str]) -> list[tuple[str, EngineConfig]]:
        out: list[tuple[str, EngineConfig]] = []
        for goal in goals:
            name = self._pick(goal)
            if name and name not in [n for n, _ in out]:
                out.append((name, self.model.config_of(name)))
        return out

    def apply(self, goal: str) -> EngineConfig | None:
        name = self._pick(goal)
        if name is None:
            return None
        config = self.model.config_of(name)
        self.bridge.reconfigure(config)
        self.status.setText(f"Applying {name} to the engine…")
        return config

    def send_to_compare(self, goals: list[str]) -> list[tuple[str, EngineConfig]]:
        """The baseline (the engine's configuration now) and the picks, as Compare columns."""
        columns = [("current", self.bridge.config)] + self._picks(goals)
        columns = columns[:4]
        if len(columns) >= 2:
            self.compare_requested.emit(columns)
        return columns

    def report_markdown(self) -> str:
        return self.model.to_markdown()

    def export(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix == ".png":
            if not self.plot.grab().save(str(path)):
                raise OSError(f"cannot write {path}")
        elif path.suffix == ".csv":
            path.write_text(self.model.to_csv())
        else:
            path.write_text(self.model.to_markdown())
        return path

    def _export_dialog(self, kind: str) -> None:
        filters = {"png": "PNG image (*.png)", "csv": "CSV (*.csv)", "md": "Markdown (*.md)"}
        path, _ = QFileDialog.getSaveFileName(self, "Export tune results", f"tune.{kind}", filters[kind])
        if path:
            try:
                self.export(path if path.endswith(f".{kind}") else f"{path}.{kind}")
            except OSError as exc:
                self.status.setText(f"Export failed: {exc}")

    def _browse_grid(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Grid of configurations", "", "JSON (*.json)")
        if path:
            self.grid_file_edit.setText(path)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Tune results", "", "JSON (*.json)")
        if path:
            try:
                self.load_results(path)
            except (OSError, ValueError, TypeError) as exc:
                self.status.setText(f"Cannot read {Path(path).name}: {exc}")
