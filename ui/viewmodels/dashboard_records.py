"""Plain records the dashboard model keeps and hands to the charts (no behaviour beyond reading)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Marker:
    t_s: float
    label: str


@dataclass(frozen=True)
class ConfigRecord:
    t_s: float
    label: str
    changes: tuple[str, ...]
    config: dict


@dataclass(frozen=True)
class AdviceView:
    """The advisor's latest figures (engine.spec.advisor.Advice, copied to plain values)."""

    acceptance_rate: float
    cost_ratio: float
    speedup_by_k: tuple[float, ...]
    recommended_k: int
    pays_off: bool


@dataclass
class Snapshot:
    """Copies of what the charts draw: never mutated by later recording."""

    t_now_s: float
    steps: dict[str, np.ndarray]
    latency: dict[str, np.ndarray]
    rates: dict[str, np.ndarray]
    request_ids: list[str]
    markers: list[Marker]
    accepted_per_position: np.ndarray
    drafted_per_position: np.ndarray
    advice: AdviceView | None

    @property
    def acceptance_per_position(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.drafted_per_position > 0,
                            self.accepted_per_position / np.maximum(self.drafted_per_position, 1), np.nan)
