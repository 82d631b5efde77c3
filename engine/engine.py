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
import traceback
from dataclasses import dataclass

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, ModelSpec
from engine.events import EngineState, FinishReason, now_s
from engine.models import LoadedModel, ModelLoadError
from engine.quant import QuantisationUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Cmd:
    kind: str  # submit | abort | config | load | stop
    payload: object = None


class Engine:
    """Thread-safe handle. All model work happens on the engine thread."""

    def __init__(self, model: "ModelSpec | str | LoadedModel | None" = None, config: EngineConfig | None = None,
                 *, event_queue: queue.Queue | None = None, collect_garbage: bool = True) -> None:
        self.events: queue.Queue[ev.EngineEvent] = event_queue or queue.Queue()
        self._commands: queue.Queue[_Cmd] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(2).hex()  # ids stay unique when several engines run side by side
        self._ids_lock = threading.Lock()
        initial = ModelSpec(model) if isinstance(model, str) else model
        from engine.core import EngineCore

        self._core = EngineCore(emit=self.events.put, config=config or EngineConfig(), initial_model=initial)
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
        """Cancel everything in flight, stop the thread; True when it joined in time."""
        if self._thread is None:
            return True
        self._core.stop_requested = True
        self._commands.put(_Cmd("stop"))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- commands (any thread)
    def submit(self, request: GenerateRequest) -> str:
        if request.request_id is None:
            with self._ids_lock:
                rid = f"req-{self._id_prefix}-{next(self._ids)}"
            from dataclasses import replace

            request = replace(request, request_id=rid)
        self._commands.put(_Cmd("submit", (request, now_s())))
        return request.request_id

    def abort(self, request_id: str) -> None:
        self._commands.put(_Cmd("abort", request_id))

    def reconfigure(self, config: EngineConfig) -> None:
        self._commands.put(_Cmd("config", config))

    def load_model(self, spec: ModelSpec | str) -> None:
        self._commands.put(_Cmd("load", ModelSpec(spec) if isinstance(spec, str) else spec))

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
            except Exception as exc:  # noqa: BLE001 - the loop must survive and report
                log.exception("engine step failed")
                core.fail_all(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        core.cancel_all()
        core.emit(ev.StateChanged(EngineState.STOPPED))

    def _handle(self, cmd: _Cmd) -> bool:
        core = self._core
        if cmd.kind == "stop":
            return False
        if cmd.kind == "submit":
            request, submitted_s = cmd.payload
            core.add_request(request, submitted_s)
        elif cmd.kind == "abort":
            core.abort(cmd.payload)
        elif cmd.kind == "config":
            try:
                core.apply_config(cmd.payload)
            except (QuantisationUnavailable, ModelLoadError, ValueError) as exc:
                core.emit(ev.EngineErrorEvent(message=str(exc), where="config"))
        elif cmd.kind == "load":
            core.load(cmd.payload)
        return True
