"""pyqtgraph charts drawn from a DashboardModel snapshot.

Each chart is a frame: a header (title, colour legend, read-out) above a plot. Time charts
share one X axis (seconds since the dashboard started; the view links them), carry one
labelled vertical line per configuration change, and a crosshair that follows the mouse on
any of them; the read-out shows the exact values under it (the latest values otherwise).
Curves get whole arrays through setData on the view's timer, with clip-to-view and peak
downsampling on, so drawing cost follows the pixels, not the number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPalette
from PySide6.QtWidgets import QApplication, QFrame, QGraphicsItem, QLabel, QSizePolicy, QVBoxLayout

from ui.viewmodels.dashboard_records import Marker, Snapshot
from ui.formatting import MISSING, format_ms
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


def _alpha(colour: str, alpha: int) -> QColor:
    c = QColor(colour)
    c.setAlpha(alpha)
    return c


def _curve(colour: str, width: float = 2.0, *, name: str = "", monotonic: bool = True,
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


def _scatter(colour: str, symbol: str, *, name: str = "", size: int = 7) -> pg.PlotDataItem:
    return pg.PlotDataItem(pen=None, symbol=symbol, symbolSize=size, symbolPen=pg.mkPen(colour, width=1.2),
                           symbolBrush=_alpha(colour, 150), antialias=True, name=name)


def _nanmax(*arrays: np.ndarray, default: float = 1.0) -> float:
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


def log_tick_label(value: float) -> str:
    """0.1, 1, 10, 100, 1k, 10k: short enough for a narrow axis."""
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _nearest(t: np.ndarray, x: float) -> int | None:
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
            axis.setPen(pg.mkPen(_alpha(theme.muted, 160)))
            axis.setTextPen(pg.mkPen(theme.foreground))
        self.readout.setStyleSheet(f"color: {theme.muted};")
        swatches = "&nbsp;&nbsp;".join(
            f"<span style='color:{c}; font-size:13pt'>&#9632;</span>&nbsp;<span style='color:{theme.muted}'>{t}</span>"
            for t, c in self.legend)
        self.title_label.setText(f"<b style='color:{theme.foreground}'>{self.title}</b>&nbsp;&nbsp;&nbsp;{swatches}")

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


class TimeChart(ChartFrame):
    """A chart on the shared time axis: change markers, crosshair, read-out at a time."""

    def __init__(self, key: str, theme: ChartTheme, parent=None) -> None:
        super().__init__(key, theme, parent)
        self.markers: list[pg.InfiniteLine] = []
        self._marker_data: list[Marker] = []
        self._hover_x: float | None = None
        self._snap: Snapshot | None = None
        self._y_range: tuple[float, float] | None = None
        self._drawn: dict[str, tuple] = {}  # series -> signature of the data it holds
        self.crosshair = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(_alpha(theme.muted, 170), width=1,
                                                                                style=Qt.PenStyle.DashLine))
        self.crosshair.setZValue(50)
        self.crosshair.hide()
        self.plot.addItem(self.crosshair, ignoreBounds=True)
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        vb = self.plot.getViewBox()
        vb.sigXRangeChanged.connect(self.place_marker_labels)
        vb.sigResized.connect(self.place_marker_labels)

    def show_time_axis(self, on: bool) -> None:
        """Tick values and the axis title on the bottom row only: the X axes are linked, and
        scrolling re-renders every tick label shown (the costliest part of a redraw)."""
        axis = self.plot.getAxis("bottom")
        axis.setStyle(showValues=on)
        if on:
            axis.setHeight(None)  # back to the height its ticks and title need
            self.plot.setLabel("bottom", "time since start (s)")
        else:
            axis.showLabel(False)
            axis.setHeight(6)

    def apply_theme(self, theme: ChartTheme) -> None:
        super().apply_theme(theme)
        if hasattr(self, "markers"):
            markers = list(self._marker_data)
            self.sync_markers([])
            self.sync_markers(markers)
            self.crosshair.setPen(pg.mkPen(_alpha(theme.muted, 170), width=1, style=Qt.PenStyle.DashLine))

    # ---- markers
    def sync_markers(self, markers: list[Marker]) -> None:
        """Match the drawn lines to the model's markers (appended to; cleared on reset)."""
        if markers[: len(self._marker_data)] != self._marker_data:
            for line in self.markers:
                self.plot.removeItem(line)
            self.markers.clear()
            self._marker_data.clear()
        theme = self._theme
        for marker in markers[len(self._marker_data):]:
            # labels of close changes would overlap: step each one down from the last
            position = MARKER_LABEL_TOP - MARKER_LABEL_STEP * (len(self.markers) % 3)
            line = pg.InfiniteLine(
                pos=marker.t_s, angle=90, movable=False,
                pen=pg.mkPen(theme.marker, width=1.5, style=Qt.PenStyle.DashLine),
                label=marker.label,
                labelOpts={"position": position, "color": theme.marker, "anchors": [(0, 0.5), (0, 0.5)],
                           "fill": _alpha(theme.background, 215)},
                name=marker.label)
            line.setZValue(-1)  # behind the data: a label must not hide a curve
            self.plot.addItem(line, ignoreBounds=True)
            self.markers.append(line)
            self._marker_data.append(marker)
        self.place_marker_labels()

    def place_marker_labels(self, *_args) -> None:
        """Each label wholly inside the plot: right of its line, or left of it near the right
        edge; hidden when neither fits (a line at or past the left edge, a very narrow plot),
        so no label shows as a stray letter cut off by the plot's edge."""
        vb = self.plot.getViewBox()
        (x0, x1), _ = vb.viewRange()
        px = vb.viewPixelSize()[0]
        if px <= 0 or not np.isfinite(px):
            return
        for line in self.markers:
            label = line.label
            width = (label.boundingRect().width() + 4) * px
            x = line.value()
            if x0 + 2 * px <= x and x + width <= x1:
                anchors = [(0, 0.5), (0, 0.5)]
            elif x - width >= x0 and x <= x1:
                anchors = [(1, 0.5), (1, 0.5)]
            else:
                label.setVisible(False)
                continue
            if label.anchors != anchors:
                label.anchors = anchors
                label.updatePosition()
            label.setVisible(True)

    # ---- crosshair
    def show_crosshair(self, x: float | None) -> None:
        self._hover_x = x
        if x is None:
            self.crosshair.hide()
        else:
            self.crosshair.setPos(x)
            self.crosshair.show()
        self._refresh_readout()

    def set_series(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """setData, unless the series already holds this data (the series only ever grow at
        the end or get cut at the start, so length, ends and sum identify it); a series with
        no finite value is emptied once. Each skipped setData is a repaint saved."""
        finite = np.isfinite(y)
        if not finite.any():
            signature: tuple = ("empty",)
            x = y = np.zeros(0)
        else:
            signature = (len(x), float(x[0]), float(x[-1]), float(np.sum(y[finite])))
        if self._drawn.get(name) != signature:
            self._drawn[name] = signature
            self.series[name].setData(x, y)

    def _pick(self, t: np.ndarray, x: float) -> int | None:
        """The sample nearest x; under the mouse, only one within 1 % of the shown time span (or
        1 s), so pointing past the data reads as no data rather than as the last sample."""
        i = _nearest(t, x)
        if i is None or self._hover_x is None:
            return i
        (x0, x1), _ = self.plot.viewRange()
        return i if abs(t[i] - x) <= max(1.0, 0.01 * (x1 - x0)) else None

    def _refresh_readout(self) -> None:
        if self._snap is None:
            return
        x = self._hover_x
        text = self.readout_at(self._snap, self._snap.t_now_s if x is None else x)
        prefix = "now" if x is None else f"t = {x:,.1f} s"
        self.readout.setText(f"{prefix}   {text}" if text else prefix)

    def update_from(self, snap: Snapshot) -> None:
        self._snap = snap
        self.draw(snap)
        self.sync_markers(snap.markers)
        self._refresh_readout()

    def draw(self, snap: Snapshot) -> None:
        raise NotImplementedError

    def readout_at(self, snap: Snapshot, x: float) -> str:
        return ""

    def _set_y_top(self, top: float, floor: float = 0.0) -> None:
        target = (floor, nice_ceiling(top * 1.08) if top > floor else floor + 1.0)
        if target != self._y_range:
            self._y_range = target
            self.plot.setYRange(*target, padding=0)


class ThroughputChart(TimeChart):
    title = "Throughput"
    y_label = "tokens/s"
    legend = (("engine-wide", BLUE), ("per request", TEAL))
    description = "Committed output tokens per second, engine-wide and per request (2 s rolling)"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("throughput", theme, parent)
        requests = _curve(TEAL, 1.2, name="per request", monotonic=False, antialias=False)
        requests.setPen(pg.mkPen(_alpha(TEAL, 150), width=1.2))
        self.add_series("requests", requests)
        self.add_series("engine", _curve(BLUE, 2.4, name="engine-wide"))
        self._req_ids = np.zeros(0)

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        self.set_series("engine", *broken_at_idle(s, "tokens_per_s"))
        r = snap.rates
        t, req, v = r["t_s"], r["request"], r["tokens_per_s"]
        order = np.lexsort((t, req))
        t, req, v = t[order], req[order], v[order]
        breaks = np.flatnonzero(np.diff(req)) + 1  # a NaN between requests breaks the line
        self._req_ids = np.insert(req, breaks, np.nan)
        self.set_series("requests", np.insert(t, breaks, np.nan), np.insert(v, breaks, np.nan))
        self._set_y_top(_nanmax(s["tokens_per_s"], v))

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        parts = [f"engine {fmt(s['tokens_per_s'][i])} tok/s" if i is not None else f"engine {MISSING}"]
        r = snap.rates
        if len(r["t_s"]):
            near = np.abs(r["t_s"] - x) <= 0.5
            if near.any():
                # the latest rate of each request near x
                ids, last = np.unique(r["request"][near][::-1], return_index=True)
                vals = r["tokens_per_s"][near][::-1][last]
                if len(ids) == 1:
                    parts.append(f"{snap.request_ids[int(ids[0])]} {fmt(float(vals[0]))} tok/s")
                else:
                    parts.append(f"{len(ids)} requests within ±0.5 s: mean {fmt(float(np.mean(vals)))}, "
                                 f"min {fmt(float(np.min(vals)))}, max {fmt(float(np.max(vals)))} tok/s")
        return "   ".join(parts)


class LatencyChart(TimeChart):
    title = "Latency per finished request"
    y_label = "ms (log)"
    legend = (("TTFT", AMBER), ("ITL p50", GREEN), ("ITL p95", PURPLE))
    description = "Time to first token and inter-token latency p50/p95 of each request, at its finish time"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("latency", theme, parent)
        self.plot.setLogMode(y=True)
        self._ticks_key: tuple | None = None
        self.add_series("ttft", _scatter(AMBER, "o", name="TTFT"))
        self.add_series("itl_p50", _scatter(GREEN, "t1", name="ITL p50", size=6))
        self.add_series("itl_p95", _scatter(PURPLE, "t", name="ITL p95", size=6))

    def draw(self, snap: Snapshot) -> None:
        lat = snap.latency
        t = lat["t_s"]
        for key in ("ttft", "itl_p50", "itl_p95"):
            ms = lat[f"{key}_s"] * 1000.0
            keep = np.isfinite(ms) & (ms > 0)
            self.set_series(key, t[keep], ms[keep])
        # whole decades (log10 units): clean 1 / 10 / 100 ms ticks, and a range that rarely moves
        shown = np.concatenate([lat[f"{k}_s"] for k in ("ttft", "itl_p50", "itl_p95")]) * 1000.0
        shown = shown[np.isfinite(shown) & (shown > 0)]
        low, high = (np.floor(np.log10(shown.min())), np.ceil(np.log10(shown.max()))) if len(shown) else (0.0, 3.0)
        target = (low, max(high, low + 1.0))
        if target != self._y_range:
            self._y_range = target
            self.plot.setYRange(*target, padding=0.1)  # room for the edge decades' labels
        self._set_log_ticks(*target)

    def _set_log_ticks(self, low: float, high: float) -> None:
        """Labels on whole decades only (1, 2, 5 within a single decade), every n-th decade
        when the plot is short, so labels never stack; unlabelled ticks at 2..9 x 10^n."""
        height = max(self.plot.getViewBox().height(), 1.0)
        line = QFontMetrics(self.font()).height()
        key = (low, high, int(height))
        if key == self._ticks_key:
            return
        self._ticks_key = key
        decades = int(round(high - low))
        px_per_decade = height / max(decades, 1)
        every = next(n for n in (1, 2, 3, 5, 10, 100) if n * px_per_decade >= 2.2 * line)
        major = [(float(d), log_tick_label(10.0 ** d)) for d in range(int(low), int(high) + 1)
                 if (d - int(low)) % every == 0]
        if decades == 1 and px_per_decade * np.log10(2.0) >= 2.2 * line:
            major += [(float(np.log10(k * 10.0 ** low)), log_tick_label(k * 10.0 ** low)) for k in (2, 5)]
        minor = [(float(np.log10(k * 10.0 ** d)), "") for d in range(int(low), int(high)) for k in range(2, 10)]
        self.plot.getAxis("left").setTicks([sorted(major), minor])

    def readout_at(self, snap: Snapshot, x: float) -> str:
        lat = snap.latency
        i = self._pick(lat["t_s"], x)
        if i is None:
            return "no request finished here" if self._hover_x is not None else "no finished request yet"
        rid = snap.request_ids[int(lat["request"][i])] if np.isfinite(lat["request"][i]) else "?"
        return (f"{rid} ({lat['t_s'][i]:,.1f} s): TTFT {format_ms(lat['ttft_s'][i])}   "
                f"ITL p50 {format_ms(lat['itl_p50_s'][i])} · p95 {format_ms(lat['itl_p95_s'][i])}   "
                f"{int(lat['completion_tokens'][i])} tok")


class MemoryChart(TimeChart):
    title = "Memory"
    y_label = "MiB"
    legend = (("weights", BLUE), ("KV cache", GREEN), ("prefix", YELLOW), ("other", SLATE), ("device", RED))
    description = ("Stacked: model weights, KV cache, prefix cache and the rest of the process footprint; "
                   "accelerator memory as a line where there is one")
    LAYERS = (("other", SLATE, "other_bytes"), ("prefix", YELLOW, "prefix_cache_bytes"),
              ("kv", GREEN, "kv_cache_bytes"), ("weights", BLUE, "weights_bytes"))

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("memory", theme, parent)
        for name, colour, _ in self.LAYERS:  # tallest first, so each lower layer paints over it
            # 'other' (runtime, allocator, Python) is background: a paler fill
            fill = _alpha(colour, 110 if name == "other" else 200)
            # subsample, not peak: a zigzag top would stripe the filled area
            self.add_series(name, _curve(colour, 1.2, name=name, fillLevel=0.0, brush=fill, downsample="subsample",
                                         antialias=False))
        accelerator = _curve(RED, 2.0, name="accelerator", antialias=False)
        accelerator.setPen(pg.mkPen(RED, width=2, style=Qt.PenStyle.DashLine))
        self.add_series("accelerator", accelerator)

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        t = s["t_s"]
        bottom_up = [s[col] / MIB for _, _, col in reversed(self.LAYERS)]  # weights, kv, prefix, other
        tops = np.cumsum(np.vstack(bottom_up), axis=0)
        for (name, _, _), top in zip(reversed(self.LAYERS), tops):
            self.set_series(name, t, top)
        accel = s["accelerator_bytes"] / MIB
        self.set_series("accelerator", t, accel)
        self._set_y_top(_nanmax(tops[-1], accel))

    def data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The layer's own size in MiB (the curve draws its top: the sum of the layers below)."""
        x, y = super().data(name)
        order = [n for n, _, _ in reversed(self.LAYERS)]
        if name in order and order.index(name) > 0:
            _, below = super().data(order[order.index(name) - 1])
            y = y - below
        return x, y

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return ""
        parts = [f"weights {fmt(s['weights_bytes'][i] / MIB)}", f"KV {fmt(s['kv_cache_bytes'][i] / MIB, digits=2)}",
                 f"prefix {fmt(s['prefix_cache_bytes'][i] / MIB, digits=2)}", f"other {fmt(s['other_bytes'][i] / MIB)}"]
        if np.isfinite(s["accelerator_bytes"][i]):
            parts.append(f"device {fmt(s['accelerator_bytes'][i] / MIB)}")
        return "   ".join(parts) + " MiB"


class BatchChart(TimeChart):
    title = "Batch size and queue"
    y_label = "requests"
    legend = (("batch size", BLUE), ("waiting", ORANGE))
    description = "Sequences computed per step and requests waiting to be scheduled"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("batch", theme, parent)
        self.add_series("batch", _curve(BLUE, 2.0, name="batch size", antialias=False))
        self.add_series("queue", _curve(ORANGE, 2.0, name="queue depth", antialias=False))

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        t, batch, queue = broken_at_idle(s, "batch_size", "num_waiting")
        self.set_series("batch", t, batch)
        self.set_series("queue", t, queue)
        self._set_y_top(_nanmax(s["batch_size"], s["num_waiting"]))

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return ""
        return (f"batch {int(s['batch_size'][i])}   waiting {int(s['num_waiting'][i])}   "
                f"step {format_ms(s['step_time_s'][i])}")


class AcceptanceChart(TimeChart):
    title = "Speculative acceptance"
    y_label = "% accepted"
    legend = (("accepted / drafted, 2 s rolling", PURPLE),)
    description = "Accepted draft tokens over drafted tokens, rolling over 2 s; empty while speculation is off"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("acceptance", theme, parent)
        self.add_series("acceptance", _curve(PURPLE, 2.0, name="acceptance rate"))
        self.plot.setYRange(0, 105, padding=0)

    def draw(self, snap: Snapshot) -> None:
        t, rate = broken_at_idle(snap.steps, "acceptance_rate")
        self.set_series("acceptance", t, rate * 100.0)

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return "no data here"
        if not np.isfinite(s["acceptance_rate"][i]):
            return "speculation off"
        return f"acceptance {fmt(s['acceptance_rate'][i] * 100)} %"


class VerifyChart(TimeChart):
    title = "Tokens per verify step"
    y_label = "tokens"
    legend = (("mean, 2 s rolling", CYAN),)
    description = "Accepted draft tokens plus the target's own token, per verify step; 1 = no gain"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("verify", theme, parent)
        self.add_series("tokens_per_verify", _curve(CYAN, 2.0, name="tokens per verify"))
        self.plot.addItem(pg.InfiniteLine(pos=1.0, angle=0, pen=pg.mkPen(_alpha(SLATE, 150), width=1,
                                                                         style=Qt.PenStyle.DotLine)))

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        self.set_series("tokens_per_verify", *broken_at_idle(s, "tokens_per_verify"))
        self._set_y_top(_nanmax(s["tokens_per_verify"], default=2.0))

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return "no data here"
        if not np.isfinite(s["tokens_per_verify"][i]):
            return "speculation off"
        return f"{fmt(s['tokens_per_verify'][i], digits=2)} tokens per verify step"


class BarChart(ChartFrame):
    x_label = ""

    def __init__(self, key: str, theme: ChartTheme, parent=None) -> None:
        super().__init__(key, theme, parent)
        self.plot.setLabel("bottom", self.x_label)
        self._bars: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self.hover_left.connect(self._show_summary)

    def on_hover(self, x: float, y: float) -> None:
        xs = self._bars[0]
        if not len(xs):
            return
        i = int(np.argmin(np.abs(xs - x)))
        if abs(xs[i] - x) <= 0.5:
            self.readout.setText(self.bar_text(i))

    def bar_text(self, i: int) -> str:
        return ""

    def _show_summary(self) -> None:
        self.readout.setText(self.summary())

    def summary(self) -> str:
        return ""

    def _ticks(self, n: int) -> None:
        self.plot.getAxis("bottom").setTicks([[(i, str(i)) for i in range(1, n + 1)]])
        self.plot.setXRange(0.4, max(n, 1) + 0.6, padding=0)


class PositionChart(BarChart):
    title = "Acceptance by draft position"
    y_label = "% accepted"
    x_label = "position in the draft"
    legend = (("since reset", PURPLE),)
    description = "How often the i-th drafted token was accepted, over everything recorded"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("positions", theme, parent)
        self.add_series("acceptance", pg.BarGraphItem(x=[], height=[], width=0.7, brush=_alpha(PURPLE, 200),
                                                      pen=pg.mkPen(PURPLE)))
        self.plot.setYRange(0, 105, padding=0)
        self._ticks(4)
        self._snap: Snapshot | None = None
        self._key: tuple[bytes, bytes] | None = None

    def update_from(self, snap: Snapshot) -> None:
        key = (snap.accepted_per_position.tobytes(), snap.drafted_per_position.tobytes())
        if self._snap is not None and key == self._key:
            return
        self._key = key
        self._snap = snap
        pct = snap.acceptance_per_position * 100.0
        x = np.arange(1, len(pct) + 1, dtype=float)
        keep = np.isfinite(pct)
        self.series["acceptance"].setOpts(x=x[keep], height=pct[keep])
        self._bars = (x[keep], pct[keep])
        self._ticks(max(len(pct), 4))
        self._show_summary()

    def bar_text(self, i: int) -> str:
        snap = self._snap
        pos = int(self._bars[0][i])
        return (f"position {pos}: {fmt(self._bars[1][i])} % "
                f"({int(snap.accepted_per_position[pos - 1]):,} of {int(snap.drafted_per_position[pos - 1]):,})")

    def summary(self) -> str:
        snap = self._snap
        if snap is None or not snap.drafted_per_position.sum():
            return "no drafts yet"
        drafted, accepted = int(snap.drafted_per_position.sum()), int(snap.accepted_per_position.sum())
        return f"{drafted:,} draft tokens, {accepted:,} accepted"


class SpeedupChart(BarChart):
    title = "Advisor: expected speedup by k"
    y_label = "× plain decoding"
    x_label = "draft length k"
    legend = (("expected", SLATE), ("recommended", AMBER), ("break-even", RED))
    description = ("The break-even advisor's expected speedup for k = 1..8 drafted tokens at the measured "
                   "acceptance rate and draft cost; above 1 speculation pays")

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("speedup", theme, parent)
        self.add_series("speedup", pg.BarGraphItem(x=[], height=[], width=0.7, pen=pg.mkPen(SLATE),
                                                   brush=_alpha(SLATE, 210)))
        self.break_even = pg.InfiniteLine(pos=1.0, angle=0, pen=pg.mkPen(RED, width=1.2, style=Qt.PenStyle.DashLine))
        self.break_even.setZValue(10)
        self.plot.addItem(self.break_even)
        self._ticks(8)
        self.plot.setYRange(0, 2, padding=0)
        self._snap: Snapshot | None = None
        self.recommended_k: int | None = None

    def update_from(self, snap: Snapshot) -> None:
        if self._snap is not None and snap.advice == self._snap.advice:
            return
        self._snap = snap
        advice = snap.advice
        if advice is None:
            self.series["speedup"].setOpts(x=[], height=[], brushes=None, pens=None, pen=pg.mkPen(SLATE),
                                           brush=_alpha(SLATE, 210))
            self._bars = (np.zeros(0), np.zeros(0))
            self.recommended_k = None
        else:
            x = np.arange(1, len(advice.speedup_by_k) + 1, dtype=float)
            h = np.asarray(advice.speedup_by_k, dtype=float)
            colours = [AMBER if k == advice.recommended_k else SLATE for k in range(1, len(h) + 1)]
            self.series["speedup"].setOpts(x=x, height=h, brushes=[_alpha(c, 210) for c in colours],
                                           pens=[pg.mkPen(c) for c in colours])
            self._bars = (x, h)
            self.recommended_k = advice.recommended_k
            self.plot.setYRange(0, max(float(h.max()) * 1.15, 1.3), padding=0)
        self._show_summary()

    def bar_text(self, i: int) -> str:
        advice = self._snap.advice
        k = int(self._bars[0][i])
        return f"k = {k}: ×{self._bars[1][i]:.2f}" + ("  (recommended)" if k == advice.recommended_k else "")

    def summary(self) -> str:
        advice = self._snap.advice if self._snap else None
        if advice is None:
            return "speculative decoding off"
        verdict = "pays off" if advice.pays_off else "does not pay off"
        return (f"k = {advice.recommended_k}: ×{advice.speedup_by_k[advice.recommended_k - 1]:.2f}, {verdict}  "
                f"(acceptance {advice.acceptance_rate * 100:.0f} %, draft cost {advice.cost_ratio:.2f})")


def time_charts(theme: ChartTheme) -> list[TimeChart]:
    return [ThroughputChart(theme), LatencyChart(theme), MemoryChart(theme), BatchChart(theme),
            AcceptanceChart(theme), VerifyChart(theme)]


def bar_charts(theme: ChartTheme) -> list[BarChart]:
    return [PositionChart(theme), SpeedupChart(theme)]
