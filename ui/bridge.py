"""The one object through which the UI talks to the engine.

It owns the engine handle, drains the engine's event queue on the GUI thread at a fixed
rate, and re-emits each event as a Qt signal carrying the same plain-data object.
Widgets never touch the engine; the engine never touches a widget.
"""

from __future__ import annotations

import queue

from PySide6.QtCore import QObject, QTimer, Signal

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, ModelSpec
from engine.engine import Engine

DRAIN_INTERVAL_MS = 33  # ~30 Hz: smooth streaming, bounded GUI work
MAX_EVENTS_PER_DRAIN = 2000  # never let one drain stall the event loop


class EngineBridge(QObject):
    request_queued = Signal(object)  # ev.RequestQueued
    tokens_received = Signal(object)  # ev.TokensGenerated
    request_finished = Signal(object)  # ev.RequestFinished
    step_completed = Signal(object)  # ev.StepCompleted
    config_applied = Signal(object)  # ev.ConfigApplied
    model_loaded = Signal(object)  # ev.ModelInfo
    load_progressed = Signal(object)  # ev.LoadProgress
    error_occurred = Signal(object)  # ev.EngineErrorEvent
    state_changed = Signal(object)  # ev.StateChanged

    def __init__(self, engine: Engine, parent: QObject | None = None, *,
                 events: queue.Queue | None = None) -> None:
        """events: where to read the engine's events; by default the engine's own queue. Give a
        queue of an engine.event_hub.EventHub when other consumers (the HTTP server) read them too."""
        super().__init__(parent)
        self._engine = engine
        self._events = engine.events if events is None else events
        self.model_info: ev.ModelInfo | None = None
        self.state: ev.EngineState = ev.EngineState.IDLE
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self.drain)
        self._dispatch = {
            ev.RequestQueued: self.request_queued,
            ev.TokensGenerated: self.tokens_received,
            ev.RequestFinished: self.request_finished,
            ev.StepCompleted: self.step_completed,
            ev.ConfigApplied: self.config_applied,
            ev.LoadProgress: self.load_progressed,
            ev.EngineErrorEvent: self.error_occurred,
            ev.StateChanged: self.state_changed,
        }

    # ---- lifecycle
    def start(self) -> None:
        if not self._engine.is_alive:
            self._engine.start()
        self._timer.start()

    def shutdown(self, timeout: float = 2.0) -> bool:
        self._timer.stop()
        joined = self._engine.shutdown(timeout)
        self.drain()
        return joined

    # ---- commands
    def submit(self, request: GenerateRequest) -> str:
        return self._engine.submit(request)

    def abort(self, request_id: str) -> None:
        self._engine.abort(request_id)

    def reconfigure(self, config: EngineConfig) -> None:
        self._engine.reconfigure(config)

    def load_model(self, spec: ModelSpec | str) -> None:
        self._engine.load_model(spec)

    @property
    def config(self) -> EngineConfig:
        return self._engine.config

    # ---- event pump (GUI thread)
    def drain(self) -> int:
        handled = 0
        while handled < MAX_EVENTS_PER_DRAIN:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            if isinstance(event, ev.ModelLoaded):
                self.model_info = event.info
                self.model_loaded.emit(event.info)
                continue
            if isinstance(event, ev.StateChanged):
                self.state = event.state
            signal = self._dispatch.get(type(event))
            if signal is not None:
                signal.emit(event)
        return handled
