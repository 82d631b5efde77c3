"""The chart frame every dashboard chart is: a header (title, colour legend, read-out) over a
pyqtgraph plot; its theme, palette and the small helpers the charts share."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication, QFrame, QGraphicsItem, QLabel, QSizePolicy, QVBoxLayout

from ui.formatting import MISSING
from ui.viewmodels.dashboard_records import Snapshot
from ui.viewmodels.throughput import idle_gap_starts
from ui.widgets import named


MIB = float(1 << 20)
LEFT_AXIS_WIDTH = 58
MARKER_LABEL_TOP = 0.93  # marker labels: fraction of the plot height, from the bottom
MARKER_LABEL_STEP = 0.13
DOWNSAMPLE_FACTOR = 1.5  # samples kept per pixel of width (peak keeps each bin's min and max)

# mid-luminance hues that read on white and on near-black
BLUE = "#3b82f6"
GREEN = "#22c55e"
AMBER = "#f59e0b"
ORANGE = "#f97316"
RED = "#ef4444"
PURPLE = "#8b5cf6"
CYAN = "#06b6d4"
SLATE = "#94a3b8"
YELLOW = "#eab308"
TEAL = "#14b8a6"


@dataclass(frozen=True)
class ChartTheme:
    background: str
    foreground: str
    muted: str
    marker: str
    is_dark: bool

    @classmethod
    def from_theme(cls, theme) -> ChartTheme:
        """From a ui.theme.Theme."""
        return cls(theme.surface, theme.text, theme.muted, "#e879f9" if theme.is_dark else "#c026d3",
                   theme.is_dark)

    @classmethod
    def from_palette(cls, palette: QPalette | None = None) -> ChartTheme:
        p = palette or QApplication.palette()
        dark = p.color(QPalette.ColorRole.Window).lightness() < 128
        return cls(p.color(QPalette.ColorRole.Base).name(), p.color(QPalette.ColorRole.Text).name(),
                   p.color(QPalette.ColorRole.PlaceholderText).name(), "#e879f9" if dark else "#c026d3", dark)


def alpha(colour: str, alpha: int) -> QColor:
    c = QColor(colour)
    c.setAlpha(alpha)
    return c


def curve(colour: str, width: float = 2.0, *, name: str = "", monotonic: bool = True,
           downsample: str = "peak", antialias: bool = True, **kw) -> pg.PlotDataItem:
    """A line for a time series; clipped to the view and downsampled only where x is sorted.

    The reduction is applied by ChartFrame.add_series: PlotItem.addItem imposes the plot's own
    (off) settings on every item it is given, and the constructor ignores those keywords.
    Antialiasing costs about a third of a redraw: dense, step-like or filled series go without.
    """
    item = pg.PlotDataItem(pen=pg.mkPen(colour, width=width), antialias=antialias, connect="finite", name=name,
                           **kw)
    item.setProperty("reduce", downsample if monotonic else "")
    return item


def scatter(colour: str, symbol: str, *, name: str = "", size: int = 7) -> pg.PlotDataItem:
    return pg.PlotDataItem(pen=None, symbol=symbol, symbolSize=size, symbolPen=pg.mkPen(colour, width=1.2),
                           symbolBrush=alpha(colour, 150), antialias=True, name=name)


def nanmax(*arrays: np.ndarray, default: float = 1.0) -> float:
    best = None
    for a in arrays:
        finite = a[np.isfinite(a)] if len(a) else a
        if len(finite):
            m = float(finite.max())
            best = m if best is None else max(best, m)
    return default if best is None or best <= 0 else best


def nice_ceiling(value: float) -> float:
    """The next of 1, 1.5, 2, 3, 5, 7.5 x 10^n at or above value: a y-range that changes rarely,
    so the axis keeps its cached labels and the chart does not twitch."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    exp = 10.0 ** np.floor(np.log10(value))
    for step in (1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0):
        if value <= step * exp * (1 + 1e-9):
            return float(step * exp)
    return float(10.0 * exp)


def broken_at_idle(snap_steps: dict[str, np.ndarray], *names: str) -> tuple[np.ndarray, ...]:
    """(t, *series) of the step table with a NaN sample in each idle gap, so a line stops where
    the engine stopped instead of running straight across the gap (the curves connect finite
    points only). The NaN sits mid-gap, so t stays sorted for clip-to-view."""
    t = snap_steps["t_s"]
    at = idle_gap_starts(t, snap_steps["step_time_s"])
    if not len(at):
        return (t, *(snap_steps[n] for n in names))
    mid = (t[at - 1] + t[at]) / 2.0
    return (np.insert(t, at, mid), *(np.insert(snap_steps[n].astype(float), at, np.nan) for n in names))


def unbreakable(text: str) -> str:
    """Rich text that a word-wrapping label keeps on one line."""
    return html.escape(text).replace(" ", "&nbsp;").replace("-", "&#8209;")


def log_tick_label(value: float) -> str:
    """0.1, 1, 10, 100, 1k, 10k: short enough for a narrow axis."""
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def nearest(t: np.ndarray, x: float) -> int | None:
    if not len(t):
        return None
    i = int(np.searchsorted(t, x))
    if i >= len(t):
        return len(t) - 1
    if i > 0 and x - t[i - 1] < t[i] - x:
        return i - 1
    return i


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    return f"{value:,.{digits}f}{(' ' + unit) if unit else ''}"


class _HoverFilter(QObject):
    def __init__(self, chart: ChartFrame) -> None:
        super().__init__(chart)
        self._chart = chart

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Leave:
            self._chart.hover_left.emit()
        return False


class ChartFrame(QFrame):
    """Header (title, legend, read-out) over one pyqtgraph plot."""

    hovered = Signal(float)  # data x under the mouse
    hover_left = Signal()

    title = ""
    y_label = ""
    legend: tuple[tuple[str, str], ...] = ()  # (text, colour)
    description = ""

    def __init__(self, key: str, theme: ChartTheme, parent=None) -> None:
        super().__init__(parent)
        named(self, f"{key}_chart", f"{self.title} chart", self.description)
        self.setProperty("role", "chart")
        self.key = key
        self.series: dict[str, pg.GraphicsObject] = {}
        self._theme = theme
        self.title_label = named(QLabel(), f"{key}_chart_title", f"{self.title} chart title")
        self.readout = named(QLabel(""), f"{key}_chart_readout", f"{self.title} read-out",
                             "Exact values under the mouse, or the latest values")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        small = QFont(self.font())
        small.setPointSizeF(max(small.pointSizeF() - 1.0, 7.5))
        self.readout.setFont(small)
        # a narrow chart wraps its legend and read-out onto more lines rather than cutting them;
        # the read-out keeps room for two lines so the plot does not jump as its text changes
        for w in (self.title_label, self.readout):
            w.setWordWrap(True)
            w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.readout.setMinimumHeight(2 * self.readout.fontMetrics().lineSpacing())
        header = QVBoxLayout()
        header.setContentsMargins(12, 7, 12, 0)
        header.setSpacing(1)
        header.addWidget(self.title_label)
        header.addWidget(self.readout)
        self.plot_widget = named(pg.PlotWidget(), f"{key}_plot", f"{self.title} plot", self.description)
        self.plot_widget.setMinimumHeight(120)
        self.plot: pg.PlotItem = self.plot_widget.getPlotItem()
        self.plot.setMenuEnabled(True)
        self.plot.hideButtons()
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.showGrid(x=True, y=True, alpha=0.18)
        self.plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        self.plot.setLabel("left", self.y_label)
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() - 1.5, 7.5))
        for side in ("left", "bottom"):
            axis = self.plot.getAxis(side)
            axis.setStyle(tickFont=font, tickTextOffset=4)
            # keep the rendered axis as a pixmap: replaying its tick labels on every repaint of
            # the plot was most of a redraw's cost
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addLayout(header)
        col.addWidget(self.plot_widget, 1)
        self._hover_filter = _HoverFilter(self)
        self.plot_widget.viewport().installEventFilter(self._hover_filter)
        self.plot_widget.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.apply_theme(theme)

    # ---- look
    def apply_theme(self, theme: ChartTheme) -> None:
        self._theme = theme
        self.plot_widget.setBackground(theme.background)
        for side in ("left", "bottom"):
            axis = self.plot.getAxis(side)
            axis.setPen(pg.mkPen(alpha(theme.muted, 160)))
            axis.setTextPen(pg.mkPen(theme.foreground))
        self.readout.setStyleSheet(f"color: {theme.muted};")
        # a legend entry never breaks inside itself (spaces and hyphens held together): a narrow
        # chart wraps between entries, so no entry reads 'ITL p' / 'bre' at the edge
        swatches = "&nbsp; ".join(
            f"<span style='color:{c}; font-size:13pt'>&#9632;</span>&nbsp;"
            f"<span style='color:{theme.muted}'>{unbreakable(t)}</span>"
            for t, c in self.legend)
        self.title_label.setText(f"<b style='color:{theme.foreground}'>{self.title}</b>&nbsp;&nbsp; {swatches}")

    def add_series(self, name: str, item: pg.GraphicsObject) -> None:
        self.series[name] = item
        self.plot.addItem(item)
        method = item.property("reduce") if isinstance(item, pg.PlotDataItem) else None
        if method:
            item.setClipToView(True)
            item.setDownsampling(auto=True, method=method)
            item.opts["autoDownsampleFactor"] = DOWNSAMPLE_FACTOR

    # ---- data access (tests, export checks)
    def data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        item = self.series[name]
        if isinstance(item, pg.BarGraphItem):
            x, h = item.opts.get("x"), item.opts.get("height")
            return (np.asarray([] if x is None else x, dtype=float), np.asarray([] if h is None else h, dtype=float))
        x, y = item.xData, item.yData
        return (np.asarray([] if x is None else x, dtype=float), np.asarray([] if y is None else y, dtype=float))

    def has_data(self) -> bool:
        return any(np.isfinite(self.data(name)[1]).any() for name in self.series)

    # ---- hover
    def _on_mouse_moved(self, pos) -> None:
        vb = self.plot.getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            return
        point = vb.mapSceneToView(pos)
        self.hovered.emit(float(point.x()))
        self.on_hover(float(point.x()), float(point.y()))

    def on_hover(self, x: float, y: float) -> None:  # bar charts override
        pass

    def update_from(self, snap: Snapshot) -> None:
        raise NotImplementedError
