"""Bar charts: acceptance by draft position, and the advisor's expected speedup by k."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from ui.charts.base import AMBER, PURPLE, RED, SLATE, ChartFrame, ChartTheme, alpha, fmt
from ui.viewmodels.dashboard_records import Snapshot


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
        self.add_series("acceptance", pg.BarGraphItem(x=[], height=[], width=0.7, brush=alpha(PURPLE, 200),
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
                                                   brush=alpha(SLATE, 210)))
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
                                           brush=alpha(SLATE, 210))
            self._bars = (np.zeros(0), np.zeros(0))
            self.recommended_k = None
        else:
            x = np.arange(1, len(advice.speedup_by_k) + 1, dtype=float)
            h = np.asarray(advice.speedup_by_k, dtype=float)
            colours = [AMBER if k == advice.recommended_k else SLATE for k in range(1, len(h) + 1)]
            self.series["speedup"].setOpts(x=x, height=h, brushes=[alpha(c, 210) for c in colours],
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
                f"(acceptance {advice.acceptance_rate * 100:.0f}\u00a0%, draft cost {advice.cost_ratio:.2f})")
