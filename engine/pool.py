"""Engines that share loaded weights: one engine per configuration, one copy of the weights
per (model, quantisation). Used to run configurations side by side (the compare view).

Inference forwards never mutate weights, so engines on different threads can share a model.
An engine built on shared weights must not change its quantisation level (that would reload
the weights under the others); the pool refuses such configurations up front.

`PoolBuilder` builds a pool's engines on a worker thread (loading weights takes seconds) and
reports each one as a plain result on a queue, so a GUI can drain it on its own thread.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from engine.config import EngineConfig, ModelSpec, Quantisation
from engine.engine import Engine
from engine.models import LoadedModel, load_model


class EnginePool:
    def __init__(self, *, collect_garbage: bool = True) -> None:
        self.collect_garbage = collect_garbage  # False under a GUI (see Engine)
        self._models: dict[tuple[ModelSpec, Quantisation], LoadedModel] = {}
        self._lock = threading.Lock()
        self.engines: list[Engine] = []

    def weights(self, spec: ModelSpec, level: Quantisation) -> LoadedModel:
        """Load once per (model, level); later calls return the same object."""
        key = (spec, level)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(spec, level)
            return self._models[key]

    def engine(self, spec: ModelSpec, config: EngineConfig) -> Engine:
        """A started engine for `config` on shared weights (loading them if needed)."""
        loaded = self.weights(spec, config.quantisation)
        engine = Engine(loaded, config, collect_garbage=self.collect_garbage).start()
        self.engines.append(engine)
        return engine

    @property
    def num_weight_copies(self) -> int:
        return len(self._models)

    def shutdown(self, timeout: float = 2.0) -> bool:
        ok = all([e.shutdown(timeout) for e in self.engines])
        self.engines.clear()
        self._models.clear()
        return ok



@dataclass(frozen=True)
class PoolStarted:
    generation: int
    pool: EnginePool


@dataclass(frozen=True)
class EngineBuilt:
    generation: int
    column: int
    engine: Engine


@dataclass(frozen=True)
class EngineFailed:
    generation: int
    column: int
    message: str


BuildResult = PoolStarted | EngineBuilt | EngineFailed


class PoolBuilder:
    """Builds one engine per job on a worker thread, one build at a time (a newer build waits for
    the older one and cancels it); results go to `results`, tagged with the build's generation
    so a reader can drop those of a superseded build."""

    def __init__(self, *, collect_garbage: bool = True) -> None:
        self.collect_garbage = collect_garbage
        self.results: queue.Queue[BuildResult] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel: threading.Event | None = None

    def start(self, generation: int, jobs: list[tuple[ModelSpec, EngineConfig]],
              retire: EnginePool | None = None) -> None:
        """Cancel the build in progress, shut `retire` down, then build `jobs` (all off this thread)."""
        self.cancel()
        cancel = threading.Event()
        self._cancel = cancel
        self._thread = threading.Thread(target=self._build, args=(generation, jobs, retire, cancel),
                                        name="pool-builder", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def join(self, timeout: float) -> bool:
        """True when no build thread is left running."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _build(self, generation: int, jobs: list, retire: EnginePool | None, cancel: threading.Event) -> None:
        if retire is not None:
            retire.shutdown()
        with self._lock:
            if cancel.is_set():
                return
            pool = EnginePool(collect_garbage=self.collect_garbage)
            self.results.put(PoolStarted(generation, pool))
            for i, (spec, config) in enumerate(jobs):
                if cancel.is_set():
                    break
                try:
                    engine = pool.engine(spec, config)
                except Exception as exc:  # noqa: BLE001 - reported for this job, the others go on
                    self.results.put(EngineFailed(generation, i, str(exc) or type(exc).__name__))
                    continue
                self.results.put(EngineBuilt(generation, i, engine))
            if cancel.is_set():
                pool.shutdown()


def retire_in_background(pool: EnginePool) -> threading.Thread:
    """Shut a pool's engines down on a thread of their own (joining them takes a while)."""
    thread = threading.Thread(target=pool.shutdown, name="pool-retire", daemon=True)
    thread.start()
    return thread
