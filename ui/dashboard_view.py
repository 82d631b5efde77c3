"""The live performance dashboard: layout and wiring.

Bridge signals feed a Qt-free DashboardModel (ring buffers) as they arrive; the charts
redraw from it on a 4 Hz timer (never per token or per event), and only while the view is
visible. Pause freezes what is displayed while recording goes on (so no step, request or
change marker is missed); resume jumps to the live data. Reset clears every series and
starts the time axis again at 0.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ui.charts import BarChart, ChartTheme, TimeChart, bar_charts, nice_ceiling, time_charts
from ui.cost_view import CostView
from ui.viewmodels.dashboard import DashboardModel
from ui.formatting import model_display_name, plural
from ui.loadgen_panel import LoadGenPanel
from ui.reflow import FlowLayout, ReflowGrid
from ui.server_metrics_view import ServerMetricsView
from ui.viewmodels.cost import CostModel
from ui.widgets import label, named

REDRAW_INTERVAL_MS = 250  # 4 Hz
WINDOWS = (("30 s", 30.0), ("2 min", 120.0), ("10 min", 600.0), ("All", None))
DEFAULT_WINDOW = 1
MIN_CHART_WIDTH = 270  # narrower than this, the charts reflow to fewer columns
MAX_CHART_COLUMNS = 4
COST_EVERY_N_REDRAWS = 4  # the cost figures move slowly: once a second is plenty
NOTICE_S = 6.0  # how long an export's result stays in the status line
SIDE_PANEL_MARGIN = 14  # room for a vertical scroll bar


class DashboardView(QWidget):
    redrawn = Signal()  # after each chart update (tests wait on it)

    def __init__(self, bridge, model: DashboardModel | None = None, theme=None, parent=None) -> None:
        super().__init__(parent)
        named(self, "dashboard_view", "Performance dashboard")
        self.bridge = bridge
        self.model = model or DashboardModel()
        config = bridge.config
        self.model.record_initial_config(config.to_dict(), config.describe())
        self.redraw_count = 0
        self._dirty = True
        self._x_range: tuple[float, float] | None = None
        self._notice: tuple[str, float] = ("", 0.0)  # (text, monotonic time it expires)
        chart_theme = ChartTheme.from_theme(theme) if theme is not None else ChartTheme.from_palette()

        # ---- toolbar
        self.window_combo = named(QComboBox(), "dashboard_window_combo", "Time window",
                                  "How many seconds of history the time charts show")
        for text, seconds in WINDOWS:
            self.window_combo.addItem(text, seconds)
        self.window_combo.setCurrentIndex(DEFAULT_WINDOW)
        self.pause_button = named(QPushButton("Pause"), "dashboard_pause_button", "Pause the charts",
                                  "Freezes the charts; recording goes on and shows again on resume")
        self.pause_button.setCheckable(True)
        self.reset_button = named(QPushButton("Reset"), "dashboard_reset_button", "Reset the dashboard",
                                  "Clears every series and marker; time starts again at 0")
        self.export_csv_button = named(QPushButton("Export CSV…"), "dashboard_export_csv_button",
                                       "Export the time series as CSV")
        self.export_png_button = named(QPushButton("Export PNG…"), "dashboard_export_png_button",
                                       "Export the charts as a PNG image")
        self.export_session_button = named(QPushButton("Save session…"), "dashboard_export_session_button",
                                           "Save the session (configurations, markers, series) as JSON")
        self.status = label("", "dashboard_status", "Dashboard status", role="muted")
        self.toolbar = named(QWidget(), "dashboard_toolbar", "Dashboard toolbar")
        toolbar = FlowLayout(self.toolbar, spacing=8)  # wraps in a narrow window
        toolbar.setContentsMargins(12, 8, 12, 4)
        window_pair = QWidget()
        pair = QHBoxLayout(window_pair)
        pair.setContentsMargins(0, 0, 0, 0)
        pair.addWidget(label("Window", "dashboard_window_label", role="field"))
        pair.addWidget(self.window_combo)
        self.side_toggle = named(QPushButton("Load && cost"), "dashboard_side_toggle",
                                 "Show the load generator and cost panel",
                                 "Hide it to give the charts the whole width")
        self.side_toggle.setCheckable(True)
        self.side_toggle.setChecked(True)
        for w in (window_pair, self.pause_button, self.reset_button, self.side_toggle, self.export_csv_button,
                  self.export_png_button, self.export_session_button, self.status):
            toolbar.addWidget(w)
        self.status.setMinimumWidth(0)

        # ---- side panel: load generator and cost
        self.loadgen = LoadGenPanel(bridge)
        self.cost_view = CostView(self.model, CostModel())
        side_body = named(QWidget(), "dashboard_side_body", "Load and cost")
        side = QVBoxLayout(side_body)
        side.setContentsMargins(10, 4, 6, 10)
        side.setSpacing(10)
        side.addWidget(self.loadgen)
        side.addWidget(self.cost_view)
        side.addStretch(1)
        self.side_panel = named(QScrollArea(), "dashboard_side_panel", "Load generator and cost")
        self.side_panel.setWidgetResizable(True)
        self.side_panel.setFrameShape(QFrame.Shape.NoFrame)
        self.side_panel.setWidget(side_body)
        self.side_panel.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side_body.ensurePolished()  # the style sheet's paddings count in the width it needs
        self.side_panel.setMinimumWidth(side_body.minimumSizeHint().width() + SIDE_PANEL_MARGIN)

        # ---- charts
        self.time_charts: list[TimeChart] = time_charts(chart_theme)
        self.bar_charts: list[BarChart] = bar_charts(chart_theme)
        self.charts_area = named(ReflowGrid(min_cell_width=MIN_CHART_WIDTH, max_columns=MAX_CHART_COLUMNS),
                                 "dashboard_charts", "Dashboard charts")
        self.charts_area.grid.setContentsMargins(6, 4, 12, 10)
        for chart in self.time_charts + self.bar_charts:
            self.charts_area.add_cell(chart)
        self.charts_area.reflowed.connect(self._on_charts_reflowed)
        master = self.time_charts[0]
        for chart in self.time_charts:
            if chart is not master:
                chart.plot.setXLink(master.plot)
            chart.hovered.connect(self._on_chart_hovered)
            chart.hover_left.connect(self._on_chart_hover_left)

        self.splitter = named(QSplitter(Qt.Orientation.Horizontal), "dashboard_splitter", "Dashboard layout")
        self.splitter.addWidget(self.side_panel)
        self.splitter.addWidget(self.charts_area)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([self.side_panel.minimumWidth(), 1200])
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.toolbar)
        self.server_metrics = ServerMetricsView(bridge)  # a remote server's own figures (hidden when local)
        col.addWidget(self.server_metrics)
        col.addWidget(self.splitter, 1)
        self._apply_frame_style(chart_theme)
        self._on_charts_reflowed(self.charts_area.num_columns)

        # ---- wiring
        bridge.step_completed.connect(self._on_step_completed)
        bridge.tokens_received.connect(self._on_tokens_received)
        bridge.request_finished.connect(self._on_request_finished)
        bridge.config_applied.connect(self._on_config_applied)
        bridge.model_loaded.connect(self._on_model_loaded)
        self.window_combo.currentIndexChanged.connect(self._on_window_changed)
        self.pause_button.toggled.connect(self.set_paused)
        self.reset_button.clicked.connect(self.reset)
        self.export_csv_button.clicked.connect(lambda: self._export_with_dialog("csv"))
        self.export_png_button.clicked.connect(lambda: self._export_with_dialog("png"))
        self.export_session_button.clicked.connect(lambda: self._export_with_dialog("json"))
        self.side_toggle.toggled.connect(self.side_panel.setVisible)  # the charts reflow into the room
        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_INTERVAL_MS)
        self.timer.timeout.connect(self._on_timer)
        self.timer.start()

    # ------------------------------------------------------------------ public
    @property
    def charts(self) -> list:
        return [*self.time_charts, *self.bar_charts]

    @property
    def window_s(self) -> float | None:
        return self.window_combo.currentData()

    @property
    def paused(self) -> bool:
        return self.model.paused

    def set_paused(self, on: bool) -> None:
        if on:
            self.model.pause()
        else:
            self.model.resume()
        if self.pause_button.isChecked() != on:
            self.pause_button.setChecked(on)
        self.pause_button.setText("Resume" if on else "Pause")
        self._dirty = True
        self.redraw(force=True)

    def reset(self) -> None:
        self.model.reset()
        self._dirty = True
        self.redraw(force=True)

    def set_theme(self, theme) -> None:
        """Follow a ui.theme.Theme (connect ThemeManager.theme_changed here)."""
        chart_theme = ChartTheme.from_theme(theme)
        for chart in self.charts:
            chart.apply_theme(chart_theme)
        self._apply_frame_style(chart_theme, border=theme.border)
        self._dirty = True
        self.redraw(force=True)

    def redraw(self, force: bool = False) -> bool:
        """Update every chart from the model; True when something was drawn."""
        if not force and not self.isVisible():
            return False
        if self.model.paused and not self._dirty:
            return False
        self._dirty = False
        x0, x1 = self._x_range_for(self.model.display_now_s())
        snap = self.model.snapshot(t_from=x0)
        for chart in self.charts:
            chart.update_from(snap)
        if (x0, x1) != self._x_range:
            self._x_range = (x0, x1)
            self.time_charts[0].plot.setXRange(x0, x1, padding=0)
        if not self.model.paused and self.redraw_count % COST_EVERY_N_REDRAWS == 0:
            self.cost_view.refresh()
        self._update_status()
        self.redraw_count += 1
        self.redrawn.emit()
        return True

    def _x_range_for(self, now: float) -> tuple[float, float]:
        """The time axis moves in jumps, not every frame: its right edge runs ahead of now and
        steps on (by a tenth of the window) when the data reaches it. A still axis keeps its
        rendered ticks, which are most of what a redraw costs."""
        window = self.window_s
        if window is None:  # all: from 0 to a little past now
            step = nice_ceiling(max(now, 10.0) / 10.0)
            return 0.0, (now // step + 1.0) * step
        if now < window:
            return 0.0, window  # the first window fills from the left
        step = window / 10.0
        x1 = (now // step + 1.0) * step
        return x1 - window, x1

    def shutdown(self) -> None:
        """Stop the load generator and the redraw timer (call before the bridge shuts down)."""
        self.loadgen.stop()
        self.timer.stop()

    # ---- export (the dialogs call these; tests call them directly)
    def export_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.model.to_csv(), encoding="utf-8")
        return path

    def export_session(self, path: str | Path) -> Path:
        path = Path(path)
        extra = {"cost": self.cost_view.cost.to_dict(), "window_s": self.window_s}
        path.write_text(self.model.to_json(extra), encoding="utf-8")
        return path

    def export_png(self, path: str | Path) -> Path:
        path = Path(path)
        if not self.charts_area.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path

    # ------------------------------------------------------------------ slots
    def _on_step_completed(self, event) -> None:
        self.model.record_step(event.stats)

    def _on_tokens_received(self, event) -> None:
        self.model.record_tokens(event)

    def _on_request_finished(self, event) -> None:
        self.model.record_finished(event)

    def _on_config_applied(self, event) -> None:
        self.model.record_config(event)

    def _on_charts_reflowed(self, columns: int) -> None:
        """Time values on the lowest time chart of each grid column only (the X axes are linked)."""
        n = len(self.time_charts)
        for i, chart in enumerate(self.time_charts):
            chart.show_time_axis(i + max(columns, 1) >= n)

    def _on_model_loaded(self, info) -> None:
        # ModelInfo carries no timestamp: the switch is marked when the GUI hears of it
        self.model.record_model_loaded(time.monotonic(), model_display_name(info.name_or_path))
        self._dirty = True

    def _on_timer(self) -> None:
        self.redraw()

    def _on_window_changed(self) -> None:
        self._dirty = True
        self.redraw(force=True)

    def _on_chart_hovered(self, x: float) -> None:
        for chart in self.time_charts:
            chart.show_crosshair(x)

    def _on_chart_hover_left(self) -> None:
        for chart in self.time_charts:
            chart.show_crosshair(None)

    def _export_with_dialog(self, kind: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        filters = {"csv": "CSV (*.csv)", "png": "PNG image (*.png)", "json": "Dashboard session (*.json)"}
        name = f"dashboard-{stamp}.{kind}" if kind != "json" else f"dashboard-session-{stamp}.json"
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(Path.home() / name), filters[kind])
        if not path:
            return
        try:
            {"csv": self.export_csv, "png": self.export_png, "json": self.export_session}[kind](path)
        except OSError as exc:
            self._notice = (f"export failed: {exc}", time.monotonic() + NOTICE_S)
        else:
            self._notice = (f"saved {Path(path).name}", time.monotonic() + NOTICE_S)
        self._update_status()

    def _update_status(self) -> None:
        m = self.model
        state = "paused (still recording)" if m.paused else "live"
        text = (f"{state} · {plural(len(m.steps), 'step')} · {plural(m.num_finished, 'request')} finished · "
                f"{plural(len(m.markers), 'change')}")
        notice, until = self._notice
        if notice and time.monotonic() < until:
            text = f"{notice} · {text}"
        self.status.setText(text)
        self.status.setAccessibleDescription(text)

    def _apply_frame_style(self, theme: ChartTheme, border: str | None = None) -> None:
        edge = border or self.palette().color(QPalette.ColorRole.Mid).name()
        self.setStyleSheet(
            f"QFrame[role='chart'] {{ background: {theme.background}; border: 1px solid {edge}; border-radius: 8px; }}"
            " QFrame[role='chart'] QLabel { border: none; background: transparent; }"
        )

    def showEvent(self, event) -> None:  # Qt override
        super().showEvent(event)
        self._dirty = True
        QTimer.singleShot(0, self._on_timer)  # catch up at once when the tab comes into view

    def closeEvent(self, event) -> None:  # Qt override
        self.shutdown()
        super().closeEvent(event)


