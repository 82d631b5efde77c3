"""Status bar: engine state, device, model, memory and event-loop responsiveness."""

from __future__ import annotations

import os

import psutil
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QStatusBar

from engine import events as ev
from ui.formatting import MISSING, format_bytes, model_display_name
from ui.stall_probe import StallProbe
from ui.widgets import label, named, set_style_state

IDLE_MEMORY_REFRESH_MS = 2000


class StatusBarView(QStatusBar):
    def __init__(self, bridge, probe: StallProbe | None = None, parent=None, *, model_names=None) -> None:
        super().__init__(parent)
        named(self, "status_bar", "Status bar")
        self.setSizeGripEnabled(False)
        self._bridge = bridge
        self._names = model_names or model_display_name  # ui.model_names.ModelNames in the app
        self._probe = probe
        self._in_flight: set[str] = set()
        self._process = psutil.Process(os.getpid())
        self._last_step: ev.StepStats | None = None
        self.state_label = label("", "engine_state_label", "Engine state", role="state")
        self.device_label = label("", "device_label", "Device", role="status")
        self.model_label = label("", "status_model_label", "Model", role="status")
        self.memory_label = label("", "memory_label", "Memory", role="status")
        self.speed_label = label("", "speed_label", "Engine throughput", role="status")
        self.stall_label = label("", "stall_label", "Interface responsiveness", role="status")
        self.stall_label.setToolTip("Event-loop stall (p99) measured by a precise timer: how long the "
                                    "window could not react")
        self.addWidget(self.state_label)
        for w in (self.model_label, self.device_label, self.memory_label, self.speed_label, self.stall_label):
            self.addPermanentWidget(w)
        self._timer = QTimer(self)
        self._timer.setInterval(IDLE_MEMORY_REFRESH_MS)
        self._timer.timeout.connect(self._refresh_periodic)
        self._timer.start()
        bridge.state_changed.connect(lambda _e: self._refresh_state())
        bridge.request_queued.connect(self._on_request_queued)
        bridge.request_finished.connect(self._on_request_finished)
        bridge.model_loaded.connect(self._on_model_loaded)
        bridge.step_completed.connect(self._on_step)
        bridge.error_occurred.connect(self._on_error)
        self._on_model_loaded(bridge.model_info)
        self._refresh_state()
        self._refresh_periodic()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _on_request_queued(self, event: ev.RequestQueued) -> None:
        self._in_flight.add(event.request_id)
        self._refresh_state()

    def _on_request_finished(self, event: ev.RequestFinished) -> None:
        self._in_flight.discard(event.request_id)
        self._refresh_state()

    def _on_error(self, event: ev.EngineErrorEvent) -> None:
        if event.where == "load":
            self._refresh_state()

    def _refresh_state(self) -> None:
        state = self._bridge.state
        if state is ev.EngineState.LOADING:
            text, key = "● Loading…", "loading"
        elif state is ev.EngineState.STOPPED:
            text, key = "● Stopped", "stopped"
        elif self._in_flight:
            n = len(self._in_flight)
            text, key = f"● Generating · {n} request{'s' if n != 1 else ''}", "running"
        elif self._bridge.model_info is None:
            text, key = "● No model", "stopped"
        else:
            text, key = "● Ready", "idle"
        self.state_label.setText(text)
        self.state_label.setAccessibleDescription(text)
        set_style_state(self.state_label, "state", key)

    def _on_model_loaded(self, info: ev.ModelInfo | None) -> None:
        if info is None:
            self.model_label.setText("no model")
            self.device_label.setText("device –")
        else:
            quant = info.quantisation if info.quantisation is not None else MISSING  # unknown on a server
            self.model_label.setText(f"{self._names(info.name_or_path)} · {quant}")
            self.model_label.setToolTip(info.name_or_path)
            self.device_label.setText(info.device)
        self._refresh_state()

    def _on_step(self, event: ev.StepCompleted) -> None:
        self._last_step = event.stats
        if event.stats.rss_bytes is not None:  # a remote server's memory is not ours to measure
            self._show_memory(event.stats.rss_bytes, event.stats.kv_cache_bytes, event.stats.accelerator_bytes)
        tps = event.stats.tokens_per_s
        self.speed_label.setText(MISSING + " tok/s" if tps is None else f"{tps:.0f} tok/s")

    def _refresh_periodic(self) -> None:
        if not self._in_flight:
            self._show_memory(self._process.memory_info().rss, 0, None)
            self.speed_label.setText("idle")
        if self._probe is not None and self._probe.running:
            s = self._probe.summary()
            self.stall_label.setText(f"UI p99 {s.p99_ms:.0f} ms")
            self.stall_label.setAccessibleDescription(s.describe())
            self.stall_label.setToolTip(s.describe())

    def _show_memory(self, rss: int, kv: int, accel: int | None) -> None:
        parts = [f"RSS {format_bytes(rss)}"]
        if kv:
            parts.append(f"KV {format_bytes(kv)}")
        if accel is not None:
            parts.append(f"GPU {format_bytes(accel)}")
        self.memory_label.setText(" · ".join(parts))
