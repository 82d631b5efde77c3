"""The one object through which the UI talks to the engine.

It owns the engine handle, drains the engine's event queue on the GUI thread at a fixed
rate, and re-emits each event as a Qt signal carrying the same plain-data object.
Widgets never touch the engine; the engine never touches a widget.

The bridge drives one backend at a time: the local engine (at start) or a remote one
(engine.remote.RemoteBackend, or a launch profile's ProfileBackend), switched at runtime with
use_remote() / use_local(). Both queues are drained: request events (queued, tokens, finished)
of either backend reach the views (an answer started before a switch still ends), while the
backend-wide events (model, state, steps, errors) come from the active one only. The local
engine keeps its model while a remote one is active, so switching back is instant.
"""

from __future__ import annotations

import queue
import threading

from PySide6.QtCore import QObject, QTimer, Signal

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, ModelSpec
from engine.engine import Engine
from engine.remote.events import RemoteConnected, ServerMetricsSampled

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
    server_metrics_sampled = Signal(object)  # engine.remote.events.ServerMetricsSampled
    remote_connected = Signal(object)  # engine.remote.events.RemoteConnected
    backend_changed = Signal(object)  # the remote backend now active, or None for the local engine

    def __init__(self, engine: Engine, parent: QObject | None = None, *,
                 events: queue.Queue | None = None) -> None:
        """events: where to read the engine's events; by default the engine's own queue. Give a
        queue of an engine.event_hub.EventHub when other consumers (the HTTP server) read them too."""
        super().__init__(parent)
        self._engine = engine
        self._events = engine.events if events is None else events
        self.model_info: ev.ModelInfo | None = None
        self.state: ev.EngineState = ev.EngineState.IDLE
        self.remote = None  # the active RemoteBackend; None: the local engine
        self.remote_info: RemoteConnected | None = None  # what the active remote said about itself
        self.server_snapshot = None  # the last ServerMetricsSampled of the active remote
        self._local_info: ev.ModelInfo | None = None
        self._local_state: ev.EngineState = ev.EngineState.IDLE
        self._retiring: list[threading.Thread] = []  # their shutdowns
        self._retired: list = []  # remote backends switched away from, drained until their requests end
        self._owners: dict[str, object] = {}  # request id -> backend, for abort
        self._owners_lock = threading.Lock()  # the load generator submits from its own thread
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
            ServerMetricsSampled: self.server_metrics_sampled,
            RemoteConnected: self.remote_connected,
        }

    # ---- lifecycle
    def start(self) -> None:
        if not self._engine.is_alive:
            self._engine.start()
        self._timer.start()

    def shutdown(self, timeout: float = 2.0) -> bool:
        self._timer.stop()
        joined = self.remote.shutdown(timeout) if self.remote is not None else True
        for t in self._retiring:
            t.join(timeout)
            joined = joined and not t.is_alive()
        joined = self._engine.shutdown(timeout) and joined
        self.drain()
        return joined

    # ---- backends
    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def use_remote(self, backend) -> None:
        """Make `backend` (a RemoteBackend, not yet started) the active one; the previous remote,
        if any, is shut down (its requests end cancelled)."""
        previous = self.remote
        if previous is None:
            self._local_info, self._local_state = self.model_info, self.state
        else:
            self._retire(previous)
        self.remote, self.remote_info, self.server_snapshot = backend, None, None
        self.model_info, self.state = None, ev.EngineState.LOADING
        backend.start()
        self.backend_changed.emit(backend)
        self.state_changed.emit(ev.StateChanged(ev.EngineState.LOADING, detail=backend.spec.base_url))

    def use_local(self) -> None:
        """Back to the local engine (the remote one is shut down)."""
        if self.remote is None:
            return
        self._retire(self.remote)
        self.remote, self.remote_info, self.server_snapshot = None, None, None
        self.model_info, self.state = self._local_info, self._local_state
        self.backend_changed.emit(None)
        if self.model_info is not None:
            self.model_loaded.emit(self.model_info)
        self.state_changed.emit(ev.StateChanged(self.state))

    def _retire(self, backend) -> None:
        """Shut it down off the GUI thread (a launch profile's server takes seconds to stop); its
        requests' terminal events are still drained."""
        self._retired.append(backend)
        t = threading.Thread(target=backend.shutdown, kwargs={"timeout": 5.0}, name="workbench-remote-retire",
                             daemon=True)
        t.start()
        self._retiring.append(t)

    # ---- commands
    def _active(self):
        return self.remote if self.remote is not None else self._engine

    def submit(self, request: GenerateRequest) -> str:
        backend = self._active()
        rid = backend.submit(request)
        with self._owners_lock:
            self._owners[rid] = backend
        return rid

    def abort(self, request_id: str) -> None:
        with self._owners_lock:
            backend = self._owners.get(request_id)
        (backend or self._active()).abort(request_id)

    def reconfigure(self, config: EngineConfig) -> None:
        """The local engine applies it; a remote one refuses with its reason (launch flags)."""
        self._active().reconfigure(config)

    def load_model(self, spec: ModelSpec | str) -> None:
        """A local model: asking for one while a remote backend is active switches back to local."""
        self.use_local()
        self._engine.load_model(spec)

    @property
    def config(self) -> EngineConfig:
        """The local engine's configuration (a remote server has none of ours: see remote_info)."""
        return self._engine.config

    @property
    def config_label(self) -> str:
        """What runs now, in words: the local configuration or the remote server and model."""
        return self.remote.config_label if self.remote is not None else self._engine.config.describe()

    # ---- event pump (GUI thread)
    def drain(self) -> int:
        handled = self._drain_queue(self._events, None)
        for backend in [self.remote, *self._retired]:
            if backend is not None:
                handled += self._drain_queue(backend.events, backend)
        with self._owners_lock:
            owners = list(self._owners.values())
        self._retired = [b for b in self._retired if b.is_alive or not b.events.empty() or any(
            o is b for o in owners)]
        self._retiring = [t for t in self._retiring if t.is_alive()]
        return handled

    def _drain_queue(self, events: queue.Queue, backend) -> int:
        """backend: the remote backend the queue belongs to (None: the local engine's queue)."""
        active = backend is self.remote
        handled = 0
        while handled < MAX_EVENTS_PER_DRAIN:
            try:
                event = events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            if isinstance(event, (ev.RequestQueued, ev.TokensGenerated, ev.RequestFinished)):
                if isinstance(event, ev.RequestFinished):
                    with self._owners_lock:
                        self._owners.pop(event.request_id, None)
                self._dispatch[type(event)].emit(event)  # a request's events reach its view from any backend
                continue
            if not active:
                self._note_inactive(event, backend)
                continue
            if isinstance(event, ev.ModelLoaded):
                self.model_info = event.info
                self.model_loaded.emit(event.info)
                continue
            if isinstance(event, ev.StateChanged):
                self.state = event.state
            elif isinstance(event, RemoteConnected):
                self.remote_info = event
            elif isinstance(event, ServerMetricsSampled):
                self.server_snapshot = event
            signal = self._dispatch.get(type(event))
            if signal is not None:
                signal.emit(event)
        return handled

    def _note_inactive(self, event, backend) -> None:
        """The local engine's own news while a remote one is active: kept for the switch back."""
        if backend is not None:
            return  # a retired remote: only its requests' events matter
        if isinstance(event, ev.ModelLoaded):
            self._local_info = event.info
        elif isinstance(event, ev.StateChanged):
            self._local_state = event.state
