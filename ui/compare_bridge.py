"""The compare view's one link to the engines: one engine per column, from an EnginePool.

Columns that share a model and quantisation level share one copy of the weights (the pool
does that). Weights load on engine.pool's PoolBuilder thread, never on the GUI thread; its
results and every column engine's event queue are drained on a QTimer here and re-emitted
as (column index, event) signals.

A comparison runs in waves: `fair` submits one column at a time (round-robin over the
repeats, so drift hits every column alike); `race` submits all columns at once, each repeat
after the previous one has finished everywhere. Results go into a Qt-free `Comparison`.

A column can also be a remote server (engine.remote.RemoteSpec) or a launch profile
(engine.remote.launch.LaunchProfile, started by a ProfileBackend off this thread): it then runs
on that backend instead of a pool engine, so the local engine races a vLLM flag set, or two
flag sets race each other. A remote column's server-wide scrapes are not per run, so its
figures are the client-side ones (TTFT, TPOT, tokens/s) and acceptance only where the response
itself reports drafts.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque

from PySide6.QtCore import QObject, QTimer, Signal

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, ModelSpec, SamplingParams
from engine.engine import Engine
from engine.events import now_s
from engine.pool import EngineBuilt, EngineFailed, EnginePool, PoolBuilder, PoolStarted, retire_in_background
from engine.remote.backend import RemoteBackend, RemoteSpec
from engine.remote.launch import LaunchProfile
from engine.remote.profile_backend import ProfileBackend
from ui.viewmodels.compare import ColumnSpec, CompareJob, Comparison

log = logging.getLogger(__name__)

DRAIN_INTERVAL_MS = 33
MAX_EVENTS_PER_DRAIN = 2000  # all columns together: never let one drain stall the GUI


class CompareBridge(QObject):
    columns_building = Signal(int)  # number of columns being (re)built
    column_loaded = Signal(int, object)  # column, ev.ModelInfo
    column_ready = Signal(int)  # the column's engine has its model (and draft) and is idle
    column_failed = Signal(int, str)  # the column's engine could not be built
    columns_ready = Signal()  # every column is ready
    load_progressed = Signal(int, object)  # column, ev.LoadProgress
    error_occurred = Signal(int, object)  # column, ev.EngineErrorEvent
    tokens_received = Signal(int, object)  # column, ev.TokensGenerated
    step_completed = Signal(int, object)  # column, ev.StepCompleted
    request_finished = Signal(int, object)  # column, ev.RequestFinished
    run_started = Signal(int, object)  # column, CompareJob
    run_recorded = Signal(int, object)  # column, ui.viewmodels.compare_records.RunRecord
    comparison_started = Signal(object)  # Comparison
    comparison_finished = Signal(object)  # Comparison (finished or cancelled)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool: EnginePool | None = None
        self.columns: list[ColumnSpec] = []
        self.comparison: Comparison | None = None
        self._model_specs: list[ModelSpec] = []
        self._engines: list[Engine | RemoteBackend | None] = []
        self._remotes: list[RemoteSpec | LaunchProfile | None] = []  # per column: None = a pool engine
        self._local_columns: list[int] = []  # pool job index -> column
        self._remote_backends: list[RemoteBackend] = []
        self._loaded: list[bool] = []
        self._ready: list[bool] = []
        self._infos: list[ev.ModelInfo | None] = []
        self._notes: list[list[str]] = []  # engine errors per column (e.g. a draft that would not load)
        self._failed: dict[int, str] = {}
        self._generation = 0
        self._builder = PoolBuilder(collect_garbage=False)  # the GUI thread collects (ui/gc_guard.py)
        self._waves: deque[list[tuple[int, int]]] = deque()
        self._outstanding: dict[tuple[int, str], CompareJob] = {}  # engines number their requests alike
        self._start_when_ready = False
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self.drain)

    # ------------------------------------------------------------------ columns
    def set_columns(self, model_spec: ModelSpec | str, configs: list[EngineConfig], *,
                    names: list[str] | None = None, models: list[ModelSpec | str | None] | None = None,
                    presets: list[str] | None = None,
                    remotes: list[RemoteSpec | LaunchProfile | None] | None = None) -> bool:
        """(Re)build one engine per column; returns at once (loading happens on a worker).

        models[i], when given, replaces model_spec for column i; remotes[i], when given, makes
        column i a remote server or a launch profile (its config is then not used). Returns False
        when the columns are already these and built, True when a build started.
        """
        if not configs:
            raise ValueError("a comparison needs at least one column")
        default = ModelSpec(model_spec) if isinstance(model_spec, str) else model_spec
        specs_m = []
        for i in range(len(configs)):
            m = models[i] if models and i < len(models) and models[i] else default
            specs_m.append(ModelSpec(m) if isinstance(m, str) else m)
        remote_of = [remotes[i] if remotes and i < len(remotes) else None for i in range(len(configs))]
        columns = [ColumnSpec(name=(names[i] if names and i < len(names) else f"column {i + 1}"),
                              model=specs_m[i].name_or_path if remote_of[i] is None else remote_model(remote_of[i]),
                              config=c,
                              preset=(presets[i] if presets and i < len(presets) else "custom"),
                              backend_label=None if remote_of[i] is None else remote_label(remote_of[i]))
                   for i, c in enumerate(configs)]
        same_engines = (specs_m == self._model_specs and [c.config for c in columns] == [c.config for c in self.columns]
                        and remote_of == self._remotes and not self._failed and self._engines)
        if same_engines:
            self.columns = columns  # names may change without a rebuild
            return False
        self.stop()
        self._generation += 1
        old_pool, self.pool = self.pool, None
        self.columns, self._model_specs = columns, specs_m
        self._engines = [None] * len(columns)
        self._loaded = [False] * len(columns)
        self._ready = [False] * len(columns)
        self._infos = [None] * len(columns)
        self._notes = [[] for _ in columns]
        self._failed = {}
        self._retire_remotes()
        self._remotes = remote_of
        self._local_columns = [i for i, r in enumerate(remote_of) if r is None]
        jobs = [(specs_m[i], columns[i].config) for i in self._local_columns]
        if jobs:
            self._builder.start(self._generation, jobs, retire=old_pool)
        else:
            self._builder.cancel()
            if old_pool is not None:
                retire_in_background(old_pool)
        for i, remote in enumerate(remote_of):
            if remote is not None:
                backend = (ProfileBackend(remote) if isinstance(remote, LaunchProfile) else RemoteBackend(remote))
                self._engines[i] = backend.start()
                self._remote_backends.append(backend)
        self._timer.start()
        self.columns_building.emit(len(columns))
        return True

    @property
    def is_ready(self) -> bool:
        return bool(self._ready) and all(self._ready)

    @property
    def is_running(self) -> bool:
        return self.comparison is not None and not self.comparison.finished

    def failures(self) -> dict[int, str]:
        return dict(self._failed)

    # ------------------------------------------------------------------ runs
    def run(self, prompt: str | tuple | list | None = None, sampling: SamplingParams | None = None, *,
            messages: tuple[tuple[str, str], ...] | None = None, mode: str = "fair", repeats: int = 1,
            warmup: bool = False) -> Comparison:
        """Start a comparison over the current columns; returns its (filling) Comparison.

        `prompt` may be a plain string or a conversation ((role, content), ...). When the
        columns are still loading, the runs start as soon as every column is ready.
        """
        if not self.columns:
            raise RuntimeError("set_columns() first")
        if isinstance(prompt, (tuple, list)):
            prompt, messages = None, tuple((str(r), str(c)) for r, c in prompt)
        self.stop()
        comp = Comparison(self.columns, prompt=prompt, messages=messages, sampling=sampling or SamplingParams(),
                          mode=mode, repeats=repeats, warmup=warmup)
        for i, info in enumerate(self._infos):
            if info is not None:
                comp.set_model_info(i, info)
            comp.columns[i].errors.extend(self._notes[i])
        self.comparison = comp
        n = len(self.columns)
        repeat_ids = ([-1] if warmup else []) + list(range(repeats))
        for r in repeat_ids:
            if mode == "fair":
                self._waves.extend([[(c, r)] for c in range(n)])
            else:
                self._waves.append([(c, r) for c in range(n)])
        self.comparison_started.emit(comp)
        if self._failed:
            self._cancel_comparison()
        elif self.is_ready:
            self._next_wave()
        else:
            self._start_when_ready = True
        return comp

    def stop(self) -> None:
        """Abort the comparison in progress (if any); what finished so far stays in it."""
        self._start_when_ready = False
        self._waves.clear()
        for (column, rid) in list(self._outstanding):
            engine = self._engines[column] if column < len(self._engines) else None
            if engine is not None:
                engine.abort(rid)
        self._outstanding.clear()
        if self.comparison is not None and not self.comparison.finished:
            self._cancel_comparison()

    def _cancel_comparison(self) -> None:
        comp = self.comparison
        self._waves.clear()
        self._start_when_ready = False
        comp.cancelled = True
        comp.finished = True
        for col in comp.columns:
            col.live = None  # late tokens of aborted runs belong to no run
        self.comparison_finished.emit(comp)

    def _next_wave(self) -> None:
        comp = self.comparison
        if not self._waves:
            comp.finished = True
            self.comparison_finished.emit(comp)
            return
        for column, repeat in self._waves.popleft():
            request = GenerateRequest(prompt=comp.prompt, messages=comp.messages, sampling=comp.sampling,
                                      tag=f"compare:{column}")
            submitted = now_s()  # before submit: every step of this run is stamped later
            rid = self._engines[column].submit(request)
            job = CompareJob(column=column, repeat=repeat, request_id=rid, submitted_s=submitted)
            self._outstanding[(column, rid)] = job
            comp.begin(job)
            self.run_started.emit(column, job)

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self, timeout: float = 2.0) -> bool:
        """Abort runs, stop every engine and the builder; True when all threads joined in time."""
        self._timer.stop()
        self.stop()
        self._builder.cancel()
        ok = self._builder.join(timeout)
        self._drain_build_results()
        if self.pool is not None:
            ok = self.pool.shutdown(timeout) and ok
        self.pool = None
        for backend in self._remote_backends:  # a launch profile's server is stopped here too
            ok = backend.shutdown(timeout) and ok
        self._remote_backends = []
        self._engines = []
        return ok

    def _retire_remotes(self) -> None:
        """The previous build's remote backends stop off the GUI thread (a server takes seconds)."""
        for backend in self._remote_backends:
            threading.Thread(target=backend.shutdown, name="compare-remote-retire", daemon=True).start()
        self._remote_backends = []

    # ------------------------------------------------------------------ event pump (GUI thread)
    def drain(self) -> int:
        self._drain_build_results()
        handled = 0
        for column, engine in enumerate(list(self._engines)):
            if engine is None:
                continue
            while handled < MAX_EVENTS_PER_DRAIN:
                try:
                    event = engine.events.get_nowait()
                except queue.Empty:
                    break
                handled += 1
                if column < len(self._engines) and self._engines[column] is engine:
                    self._dispatch(column, event)
        return handled

    def _drain_build_results(self) -> None:
        while True:
            try:
                result = self._builder.results.get_nowait()
            except queue.Empty:
                return
            if result.generation != self._generation:
                if isinstance(result, PoolStarted):  # a superseded build's engines: stop them off this thread
                    retire_in_background(result.pool)
                continue
            if isinstance(result, PoolStarted):
                self.pool = result.pool
            elif isinstance(result, EngineBuilt):
                self._engines[self._local_columns[result.column]] = result.engine
            elif isinstance(result, EngineFailed):
                self._fail(self._local_columns[result.column], result.message)

    def _fail(self, column: int, message: str) -> None:
        self._failed[column] = message
        self.column_failed.emit(column, message)
        if self.comparison is not None and not self.comparison.finished:
            self.stop()

    def _dispatch(self, column: int, event: ev.EngineEvent) -> None:
        comp = self.comparison
        if isinstance(event, ev.TokensGenerated):
            if comp is not None:
                comp.add_tokens(column, event)
            self.tokens_received.emit(column, event)
        elif isinstance(event, ev.StepCompleted):
            if comp is not None and not comp.finished and self._remotes[column] is None:
                comp.add_step(column, event.stats)
            self.step_completed.emit(column, event)
        elif isinstance(event, ev.RequestFinished):
            self._on_finished(column, event)
        elif isinstance(event, ev.ModelLoaded):
            self._loaded[column] = True
            if comp is not None:
                comp.set_model_info(column, event.info)
            self._infos[column] = event.info
            self.column_loaded.emit(column, event.info)
        elif isinstance(event, ev.StateChanged):
            # the first idle state after the model is in: draft (if any) loaded, engine waiting
            if event.state is ev.EngineState.IDLE and self._loaded[column] and not self._ready[column]:
                self._ready[column] = True
                self.column_ready.emit(column)
                if self.is_ready:
                    self.columns_ready.emit()
                    if self._start_when_ready:
                        self._start_when_ready = False
                        self._next_wave()
        elif isinstance(event, ev.LoadProgress):
            self.load_progressed.emit(column, event)
        elif isinstance(event, ev.EngineErrorEvent):
            if self._remotes[column] is not None and event.where == "load" and not self._loaded[column]:
                self._fail(column, event.message)  # the server could not be reached or started
                return
            self._notes[column].append(event.message)
            if comp is not None and not comp.finished:
                comp.columns[column].errors.append(event.message)
            self.error_occurred.emit(column, event)

    def model_info(self, column: int) -> ev.ModelInfo | None:
        return self._infos[column] if column < len(self._infos) else None

    def _on_finished(self, column: int, event: ev.RequestFinished) -> None:
        job = self._outstanding.pop((column, event.request_id), None)
        comp = self.comparison
        if job is not None and comp is not None:
            record = comp.finish(column, event)
            self.run_recorded.emit(column, record)
        self.request_finished.emit(column, event)
        if job is not None and not self._outstanding and comp is not None and not comp.finished:
            self._next_wave()


def remote_model(remote: RemoteSpec | LaunchProfile) -> str:
    return remote.model or (remote.name if isinstance(remote, LaunchProfile) else remote.base_url)


def remote_label(remote: RemoteSpec | LaunchProfile) -> str:
    """What a remote column runs, in words (its configuration is the server's launch flags)."""
    if isinstance(remote, LaunchProfile):
        return f"profile {remote.name}: {' '.join(remote.argv)}"
    return f"remote {remote.base_url} · {remote.model or 'first model'}"
