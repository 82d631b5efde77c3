"""The engine: one background thread running our own decoding loop over a HF causal LM.

Commands go in through a queue (submit, abort, reconfigure, load, shutdown); events come
out through another, as frozen dataclasses of plain values. The loop blocks on its command
queue when idle, drains commands between steps, and applies a new config at a step boundary.
"""

from __future__ import annotations

import itertools
import os
import logging
import queue
import threading
from dataclasses import dataclass, replace

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, ModelSpec
from engine.events import EngineState, FinishReason, now_s
from engine.fastpath import StepInterrupted
from engine.models import LoadedModel, ModelLoadError
from engine.quant import QuantisationUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Submit:
    request: GenerateRequest
    submitted_s: float


@dataclass(frozen=True)
class _Abort:
    request_id: str


@dataclass(frozen=True)
class _Reconfigure:
    config: EngineConfig


@dataclass(frozen=True)
class _Load:
    spec: ModelSpec


@dataclass(frozen=True)
class _Stop:
    pass


_Command = _Submit | _Abort | _Reconfigure | _Load | _Stop


class EngineClosed(RuntimeError):
    """submit() after shutdown(): nothing would ever answer the request."""


class Engine:
    """Thread-safe handle. All model work happens on the engine thread."""

    def __init__(self, model: "ModelSpec | str | LoadedModel | None" = None, config: EngineConfig | None = None,
                 *, event_queue: queue.Queue | None = None, collect_garbage: bool = True) -> None:
        self.events: queue.Queue[ev.EngineEvent] = event_queue or queue.Queue()
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(2).hex()  # ids stay unique when several engines run side by side
        self._ids_lock = threading.Lock()  # guards _ids, _live and _closed
        self._live: set[str] = set()  # ids submitted and not yet finished
        self._closed = False
        initial = ModelSpec(model) if isinstance(model, str) else model
        from engine.core import EngineCore

        self._core = EngineCore(emit=self._emit, config=config or EngineConfig(), initial_model=initial)
        self._core.collect_garbage = collect_garbage

    # ---- lifecycle
    def start(self) -> "Engine":
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._thread = threading.Thread(target=self._run, name="workbench-engine", daemon=True)
        self._thread.start()
        return self

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Cancel everything in flight, stop the thread; True when it joined in time.

        A step in progress notices the stop at its next chunk boundary (core.interrupted)."""
        with self._ids_lock:
            self._closed = True
        if self._thread is None:
            return True
        self._core.stop_event.set()
        self._commands.put(_Stop())
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _emit(self, event: ev.EngineEvent) -> None:
        if isinstance(event, ev.RequestFinished):
            with self._ids_lock:
                self._live.discard(event.request_id)
        self.events.put(event)

    # ---- commands (any thread)
    def submit(self, request: GenerateRequest) -> str:
        """Queue a request; its events follow on `events`. Raises ValueError for a request id
        already in use and EngineClosed after shutdown(), so no caller waits for nothing."""
        if not isinstance(request, GenerateRequest):
            raise TypeError(f"submit() takes a GenerateRequest, got {type(request).__name__}")
        with self._ids_lock:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            if request.request_id is None:
                request = replace(request, request_id=f"req-{self._id_prefix}-{next(self._ids)}")
            elif request.request_id in self._live:
                raise ValueError(f"request id {request.request_id!r} is already in use")
            self._live.add(request.request_id)
            self._commands.put(_Submit(request, now_s()))
        return request.request_id

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def reconfigure(self, config: EngineConfig) -> None:
        if not isinstance(config, EngineConfig):
            raise TypeError(f"reconfigure() takes an EngineConfig, got {type(config).__name__}")
        self._commands.put(_Reconfigure(config))

    def load_model(self, spec: ModelSpec | str) -> None:
        spec = ModelSpec(spec) if isinstance(spec, str) else spec
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"load_model() takes a ModelSpec or a path, got {type(spec).__name__}")
        self._commands.put(_Load(spec))

    @property
    def config(self) -> EngineConfig:
        return self._core.config

    # ---- thread body
    def _run(self) -> None:
        import torch

        with torch.inference_mode():  # the engine never trains: no autograd bookkeeping anywhere
            self._loop()

    def _loop(self) -> None:
        core = self._core
        core.startup()
        running = True
        busy = False
        while running:
            try:
                if busy != core.has_work():
                    busy = core.has_work()
                    core.emit(ev.StateChanged(EngineState.RUNNING if busy else EngineState.IDLE))
                if not core.has_work():
                    running = self._handle(self._commands.get())  # blocks while idle
                while running:
                    try:
                        cmd = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    running = self._handle(cmd)
                if running and core.has_work():
                    core.step()
            except StepInterrupted:
                continue  # shutting down: the stop command is next in the queue
            except Exception as exc:  # noqa: BLE001 - the loop must survive and report
                log.exception("engine step failed")  # the traceback goes to the log
                core.step_failed(exc)
        core.cancel_all("the engine was shut down")
        # anything queued behind the stop command still gets its one terminal event
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            if isinstance(cmd, _Submit):
                core.refuse(cmd.request, cmd.submitted_s, "the engine was shut down")
        core.emit(ev.StateChanged(EngineState.STOPPED))

    def _handle(self, cmd: _Command) -> bool:
        core = self._core
        match cmd:
            case _Stop():
                return False
            case _Submit(request, submitted_s):
                core.add_request(request, submitted_s)
            case _Abort(request_id):
                core.abort(request_id)
            case _Reconfigure(config):
                try:
                    core.apply_config(config)
                except (QuantisationUnavailable, ModelLoadError, ValueError) as exc:
                    core.emit(ev.EngineErrorEvent(message=str(exc), where=ev.ErrorSite.CONFIG))
                except Exception as exc:  # noqa: BLE001 - a bad config must not fail the requests
                    log.exception("reconfigure failed")
                    core.emit(ev.EngineErrorEvent(message=f"{type(exc).__name__}: {exc}",
                                                  where=ev.ErrorSite.CONFIG))
            case _Load(spec):
                core.load(spec)
        return True
