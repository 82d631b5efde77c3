"""Event-loop stall probe: a precise QTimer whose lateness measures how long the GUI thread was busy.

Each tick records `actual interval - expected interval` (clamped at 0). A responsive GUI shows
p99 of a few milliseconds; a GUI thread that waits on the engine or renders too much shows it here.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from engine.metrics import percentile


@dataclass(frozen=True)
class StallSummary:
    num_samples: int
    interval_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    def describe(self) -> str:
        return (f"event-loop stall over {self.num_samples} ticks of {self.interval_ms:.0f} ms: "
                f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms")


class StallProbe(QObject):
    sampled = Signal(float)  # stall of the latest tick, ms

    def __init__(self, interval_ms: int = 20, window: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._stalls_ms: collections.deque[float] = collections.deque(maxlen=window)
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_tick)
        self._last: float | None = None

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._last = None

    def reset(self) -> None:
        self._stalls_ms.clear()
        if self._last is not None:
            self._last = time.perf_counter()

    @property
    def samples_ms(self) -> tuple[float, ...]:
        return tuple(self._stalls_ms)

    def summary(self) -> StallSummary:
        xs = list(self._stalls_ms)
        return StallSummary(
            num_samples=len(xs),
            interval_ms=float(self.interval_ms),
            p50_ms=percentile(xs, 50) or 0.0,
            p99_ms=percentile(xs, 99) or 0.0,
            max_ms=max(xs, default=0.0),
        )

    def _on_tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            stall = max(0.0, (now - self._last) * 1000.0 - self.interval_ms)
            self._stalls_ms.append(stall)
            self.sampled.emit(stall)
        self._last = now
