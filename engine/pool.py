"""Engines that share loaded weights: one engine per configuration, one copy of the weights
per (model, quantisation). Used to run configurations side by side (the compare view).

Inference forwards never mutate weights, so engines on different threads can share a model.
An engine built on shared weights must not change its quantisation level (that would reload
the weights under the others); the pool refuses such configurations up front.
"""

from __future__ import annotations

import threading
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

