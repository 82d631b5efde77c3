"""Step timeline: a Gantt view of the last engine steps, one lane per request, scrolling live.

Fed by the bridge's step_completed (StepStats), config_applied and model_loaded signals into a
Qt-free TimelineRecorder; painted on a timer (never once per step) and only the visible steps.
Click a step for its measured phases; click a lane to highlight that request (request_selected).
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QPushButton,
    QScrollBar,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ui.charts.base import AMBER, BLUE, GREEN, PURPLE, RED, SLATE
from ui.fill_layout import FillColumn
from ui.theme import LIGHT, Theme
from ui.viewmodels.timeline import DECODE, KINDS, PREEMPTED, PREFILL, SPEC, WAITING, Step, TimelineRecorder
from ui.widgets import label, named

REPAINT_MS = 100
LANE_H = 22  # the smallest lane height; lanes grow to fill the view when there are few
MAX_LANE_H = 40
AXIS_H = 22
LANE_LABEL_W = 92
COLOURS = {PREFILL: AMBER, DECODE: BLUE, SPEC: GREEN, WAITING: SLATE, PREEMPTED: RED}
WINDOWS = (("last 0.5 s", 0.5), ("last 2 s", 2.0), ("last 10 s", 10.0), ("last 60 s", 60.0), ("all", 0.0))


class TimelineCanvas(QWidget):
    """Paints the recorder's visible window; maps clicks to a step and a lane."""

    step_clicked = Signal(object)  # Step
    lane_clicked = Signal(str)  # request id

    def __init__(self, recorder: TimelineRecorder, parent=None) -> None:
        super().__init__(parent)
        named(self, "timeline_canvas", "Step timeline", "one lane per request; block width is step wall time")
        self.recorder = recorder
        self.x0, self.x1 = 0.0, 1.0
        self.row0 = 0
        self.selected_step: Step | None = None
        self.highlighted: str | None = None
        self.theme = LIGHT
        self.setMinimumHeight(AXIS_H + 4 * LANE_H)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)  # hover: the step's figures as a tooltip

    @property
    def lane_h(self) -> int:
        rows = max(self.recorder.num_rows(), 4)
        return int(min(MAX_LANE_H, max(LANE_H, (self.height() - AXIS_H) / rows)))

    def visible_rows(self) -> int:
        return max(1, (self.height() - AXIS_H) // self.lane_h)

    def _sx(self, x: float) -> float:
        span = max(self.x1 - self.x0, 1e-9)
        return LANE_LABEL_W + (x - self.x0) / span * (self.width() - LANE_LABEL_W - 4)

    def _x_of(self, px: float) -> float:
        span = max(self.x1 - self.x0, 1e-9)
        return self.x0 + (px - LANE_LABEL_W) / max(self.width() - LANE_LABEL_W - 4, 1) * span

    def paintEvent(self, _event) -> None:  # Qt override
        t = self.theme
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(t.surface))
        rec = self.recorder
        lh = self.lane_h  # this paint's lane height
        rows = self.visible_rows()
        steps = rec.visible(self.x0, self.x1)
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1.5))
        p.setFont(small)
        # lanes: label on the left (the request on that row at the window's right edge)
        for r in range(rows):
            y = AXIS_H + r * lh
            if r % 2:
                p.fillRect(QRectF(0, y, self.width(), lh), QColor(t.surface_alt))
        shown: dict[int, object] = {}  # row -> the latest request on it in the window
        for lane in rec.lanes.values():
            if lane.last_x >= self.x0 and lane.first_x <= self.x1:
                if lane.row not in shown or lane.first_x > shown[lane.row].first_x:
                    shown[lane.row] = lane
        for lane in shown.values():
            r = lane.row - self.row0
            if 0 <= r < rows:
                y = AXIS_H + r * lh
                p.setPen(QColor(t.accent if lane.request_id == self.highlighted else t.muted))
                p.drawText(QRectF(4, y, LANE_LABEL_W - 8, lh), Qt.AlignmentFlag.AlignVCenter,
                           p.fontMetrics().elidedText(lane.request_id, Qt.TextElideMode.ElideLeft,
                                                      LANE_LABEL_W - 8))
        # blocks
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        for s in steps:
            xa, xb = self._sx(max(s.start, self.x0)), self._sx(min(s.end, self.x1))
            w = max(xb - xa, 1.0)
            for b in s.blocks:
                lane = rec.lanes.get(b.request_id)
                if lane is None:
                    continue
                r = lane.row - self.row0
                if not 0 <= r < rows:
                    continue
                y = AXIS_H + r * lh + 3
                colour = QColor(COLOURS[b.kind])
                if self.highlighted and b.request_id != self.highlighted:
                    colour.setAlpha(90)
                p.fillRect(QRectF(xa, y, w, lh - 6), colour)
                if b.kind == SPEC and b.drafted > b.accepted and w > 3:  # the rejected share, hatched
                    rej = (b.drafted - b.accepted) / b.drafted
                    p.fillRect(QRectF(xa + w * (1 - rej), y, w * rej, lh - 6),
                               QBrush(QColor(t.text), Qt.BrushStyle.BDiagPattern))
                if w > 26 and b.kind in (PREFILL, SPEC):
                    p.setPen(QColor("#111827"))
                    text = str(b.prefill_tokens) if b.kind == PREFILL else f"{b.accepted}/{b.drafted}"
                    p.drawText(QRectF(xa, y, w, lh - 6), Qt.AlignmentFlag.AlignCenter, text)
                if b.finished:
                    p.setPen(QPen(QColor(t.text), 2))
                    p.drawLine(QPointF(xa + w, y - 2), QPointF(xa + w, y + lh - 4))
        # step boundaries where they are far enough apart to read
        if steps and (self._sx(steps[-1].end) - self._sx(steps[0].start)) / len(steps) > 6:
            p.setPen(QPen(QColor(t.border), 1))
            for s in steps:
                xs = self._sx(s.start)
                if xs >= LANE_LABEL_W:
                    p.drawLine(QPointF(xs, AXIS_H), QPointF(xs, self.height()))
        # under the lanes: each wide-enough step's batch size and tokens computed
        y_steps = AXIS_H + (rec.num_rows() - self.row0) * lh
        if AXIS_H <= y_steps < self.height() - lh:
            p.setPen(QColor(t.muted))
            for s in steps:
                xa, xb = self._sx(max(s.start, self.x0)), self._sx(min(s.end, self.x1))
                text = f"×{s.batch_size} · {s.tokens_computed} tok"
                if xb - xa > p.fontMetrics().horizontalAdvance(text) + 6:
                    p.drawText(QRectF(xa, y_steps, xb - xa, lh), Qt.AlignmentFlag.AlignCenter, text)
        if self.selected_step is not None:
            s = self.selected_step
            p.setPen(QPen(QColor(t.accent), 2))
            p.drawRect(QRectF(self._sx(s.start), AXIS_H, max(self._sx(s.end) - self._sx(s.start), 2),
                              self.height() - AXIS_H - 1))
        # axis: busy time in ms and the markers
        p.setPen(QColor(t.muted))
        span = self.x1 - self.x0
        tick = _tick(span)
        if tick > 0:
            k = int(self.x0 / tick) + 1
            while k * tick < self.x1:
                xs = self._sx(k * tick)
                p.drawLine(QPointF(xs, AXIS_H - 5), QPointF(xs, AXIS_H))
                p.drawText(QRectF(xs - 40, 0, 80, AXIS_H - 5), Qt.AlignmentFlag.AlignCenter, _fmt_s(k * tick))
                k += 1
        p.drawText(QRectF(4, 0, LANE_LABEL_W, AXIS_H), Qt.AlignmentFlag.AlignVCenter, "busy time")
        for m in rec.markers:
            if self.x0 <= m.x <= self.x1:
                xs = self._sx(m.x)
                p.setPen(QPen(QColor("#c026d3"), 2, Qt.PenStyle.DashLine))
                p.drawLine(QPointF(xs, AXIS_H), QPointF(xs, self.height()))
                text = m.text[:40]
                box = QRectF(xs + 3, self.height() - lh, p.fontMetrics().horizontalAdvance(text) + 8, lh - 4)
                p.fillRect(box, QColor(t.surface))
                p.setPen(QColor("#c026d3"))
                p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        p.end()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # Qt override
        pos = event.position()
        step = self.recorder.step_at(self._x_of(pos.x())) if pos.x() >= LANE_LABEL_W else None
        text = step.describe() if step is not None else ""
        if text != self.toolTip():
            self.setToolTip(text)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # Qt override
        pos = event.position()
        row = int((pos.y() - AXIS_H) // self.lane_h) + self.row0
        if pos.x() < LANE_LABEL_W:
            lane = next((lane for lane in self.recorder.lanes.values() if lane.row == row
                         and lane.last_x >= self.x0 and lane.first_x <= self.x1), None)
            if lane is not None:
                self.lane_clicked.emit(lane.request_id)
            return
        x = self._x_of(pos.x())
        step = self.recorder.step_at(x)
        if step is not None:
            self.selected_step = step
            self.step_clicked.emit(step)
        if pos.y() >= AXIS_H:
            lane = self.recorder.lane_at_row(row, x, tolerance=abs(self._x_of(pos.x() + 3) - x))
            if lane is not None:
                self.lane_clicked.emit(lane.request_id)
        self.update()


def _tick(span: float) -> float:
    if span <= 0:
        return 0.0
    raw = span / 6
    for unit in (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60, 120, 300):
        if unit >= raw:
            return unit
    return 600.0


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.1f} s"


class TimelineView(QWidget):
    """The Timeline panel: the canvas, Pause, a window width, a scroll bar and the clicked step's numbers."""

    request_selected = Signal(str)  # a lane was clicked: highlight that request elsewhere

    def __init__(self, bridge=None, *, recorder: TimelineRecorder | None = None, theme: Theme = LIGHT,
                 parent=None) -> None:
        super().__init__(parent)
        named(self, "timeline_view", "Step timeline")
        self.recorder = recorder or TimelineRecorder()
        self.paused = False
        self._dirty = True
        self.canvas = TimelineCanvas(self.recorder)
        self.pause_button = named(QPushButton("Pause"), "timeline_pause", "Pause the timeline",
                                  "paused: steps are still recorded, the view stops following")
        self.pause_button.setCheckable(True)
        self.window_combo = named(QComboBox(), "timeline_window", "Time shown")
        for text, secs in WINDOWS:
            self.window_combo.addItem(text, secs)
        self.window_combo.setCurrentIndex(1)
        self.clear_button = named(QPushButton("Clear"), "timeline_clear", "Clear the timeline")
        self.hscroll = named(QScrollBar(Qt.Orientation.Horizontal), "timeline_hscroll", "Scroll back in time")
        self.vscroll = named(QScrollBar(Qt.Orientation.Vertical), "timeline_vscroll", "Scroll the request lanes")
        self.details = label("Click a step for its measured phases; click a lane to highlight its request.",
                             "timeline_step_details", "Selected step", role="muted")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary = label("", "timeline_summary", "Timeline summary", role="muted")
        legend = " ".join(f"<span style='color:{COLOURS[k]}'>■</span> {k}" for k in KINDS)
        self.legend = label(legend + " · ▨ rejected share of a draft (label: accepted/drafted) · "
                            "<span style='color:#c026d3'>┆</span> reconfigured / model loaded · "
                            "│ request finished",
                            "timeline_legend", "Timeline colours", role="muted")
        self.legend.setWordWrap(True)

        bar = QHBoxLayout()
        bar.setSpacing(6)
        bar.addWidget(label("Timeline", "timeline_title", role="section"))
        bar.addWidget(self.pause_button)
        bar.addWidget(self.window_combo)
        bar.addWidget(self.clear_button)
        bar.addWidget(self.summary, 1)
        mid = QHBoxLayout()
        mid.setSpacing(0)
        mid.addWidget(self.canvas, 1)
        mid.addWidget(self.vscroll)
        box = FillColumn(self)
        box.setContentsMargins(8, 6, 8, 6)
        box.setSpacing(4)
        box.addLayout(bar)
        box.addWidget(self.legend)
        box.addLayout(mid, 1)
        box.addWidget(self.hscroll)
        box.addWidget(self.details)

        self.pause_button.toggled.connect(self.set_paused)
        self.window_combo.currentIndexChanged.connect(self._on_window_changed)
        self.clear_button.clicked.connect(self.clear)
        self.hscroll.valueChanged.connect(self._on_scrolled)
        self.vscroll.valueChanged.connect(self._on_lane_scrolled)
        self.canvas.step_clicked.connect(self._on_step_clicked)
        self.canvas.lane_clicked.connect(self._on_lane_clicked)
        self._timer = QTimer(self)
        self._timer.setInterval(REPAINT_MS)
        self._timer.timeout.connect(self._repaint)
        self._timer.start()
        if bridge is not None:
            bridge.step_completed.connect(self._on_step_completed)
            bridge.config_applied.connect(self._on_config_applied)
            bridge.model_loaded.connect(self._on_model_loaded)
            bridge.request_finished.connect(self._on_request_finished)

    # ---- feeding
    def _on_step_completed(self, event) -> None:
        self.recorder.record(event.stats)
        self._dirty = True

    def _on_request_finished(self, event) -> None:
        self.recorder.finish(event.request_id, event.reason.value)
        self._dirty = True

    def _on_config_applied(self, event) -> None:
        self.recorder.mark("config", "⚙ " + (", ".join(event.changes) or event.label))
        self._dirty = True

    def _on_model_loaded(self, info) -> None:
        self.recorder.mark("model", f"⟳ {info.name_or_path.rstrip('/').split('/')[-1]} · {info.quantisation}")
        self._dirty = True

    # ---- controls
    def set_theme(self, theme: Theme) -> None:
        self.canvas.theme = theme
        self.canvas.update()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume" if paused else "Pause")
        self._dirty = True
        self._repaint()

    def clear(self) -> None:
        self.recorder.clear()
        self.canvas.selected_step = None
        self._dirty = True
        self._repaint()

    def window_s(self) -> float:
        secs = self.window_combo.currentData()
        return secs if secs else max(self.recorder.end_x - self.recorder.start_x, 1e-3)

    def _on_window_changed(self, *_args) -> None:
        self._dirty = True
        self._repaint()

    def _on_scrolled(self, value: int) -> None:
        if self.paused:
            self._place(value / 1000.0)
            self.canvas.update()

    def _on_lane_scrolled(self, value: int) -> None:
        self.canvas.row0 = value
        self.canvas.update()

    def _place(self, right: float) -> None:
        w = self.window_s()
        lo = self.recorder.start_x + w
        self.canvas.x1 = min(max(right, lo), max(self.recorder.end_x, lo))
        self.canvas.x0 = self.canvas.x1 - w

    def _repaint(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        rec = self.recorder
        self.hscroll.blockSignals(True)
        lo, hi = int(rec.start_x * 1000), int(rec.end_x * 1000)
        self.hscroll.setRange(lo, max(hi, lo))
        self.hscroll.setPageStep(int(self.window_s() * 1000))
        if not self.paused:
            self.hscroll.setValue(hi)
            self._place(rec.end_x)
        else:
            self._place(self.canvas.x1)  # a new window width keeps the right edge where it was
        self.hscroll.blockSignals(False)
        rows = rec.num_rows()
        self.vscroll.setRange(0, max(0, rows - self.canvas.visible_rows()))
        live = sum(1 for lane in rec.lanes.values() if not lane.ended)
        self.summary.setText(f"{rec.num_recorded} steps · {len(rec.lanes)} requests shown, {live} live"
                             + (" · paused" if self.paused else ""))
        self.canvas.update()

    def _on_step_clicked(self, step: Step) -> None:
        lines = [step.describe()]
        for b in step.blocks[:8]:
            lines.append(f"{b.request_id}: {b.describe()}" + (" · finished" if b.finished else ""))
        if len(step.blocks) > 8:
            lines.append(f"… and {len(step.blocks) - 8} more")
        self.details.setText("\n".join(lines))

    def _on_lane_clicked(self, request_id: str) -> None:
        self.canvas.highlighted = None if self.canvas.highlighted == request_id else request_id
        self.canvas.update()
        self.request_selected.emit(request_id)
