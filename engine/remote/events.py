"""Events only a remote backend emits, beside the shared ones from engine/events.py."""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import EngineEvent
from engine.remote.server_stats import ServerEngine, ServerInterval, ServerSnapshot


@dataclass(frozen=True)
class ServerMetricsSampled(EngineEvent):
    """One /metrics scrape; `interval` holds the deltas since the previous one (None at first)."""

    snapshot: ServerSnapshot
    interval: ServerInterval | None


@dataclass(frozen=True)
class RemoteConnected(EngineEvent):
    """What the server said about itself when the backend connected."""

    base_url: str
    model: str
    engine: ServerEngine
    models: tuple[str, ...]  # every model the server lists
    has_metrics: bool
    max_model_len: int | None  # where /v1/models reports it (vLLM)
