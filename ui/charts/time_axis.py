"""Charts on the shared time axis: change markers with labels that stay whole, a crosshair
that follows the mouse on any of them, and a read-out of the values at a time."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from ui.charts.base import MARKER_LABEL_STEP, MARKER_LABEL_TOP, ChartFrame, ChartTheme, alpha, nearest, nice_ceiling
from ui.viewmodels.dashboard_records import Marker, Snapshot


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
        self.crosshair = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(alpha(theme.muted, 170), width=1,
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
            self.crosshair.setPen(pg.mkPen(alpha(theme.muted, 170), width=1, style=Qt.PenStyle.DashLine))

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
                           "fill": alpha(theme.background, 215)},
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
        i = nearest(t, x)
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
