"""The plain records of a comparison: what a column is, what was submitted, what a run measured."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from engine import events as ev
from engine.config import EngineConfig
from engine.metrics import StepStats


@dataclass(frozen=True)
class ColumnSpec:
    """One column: a name, the model it runs and the engine configuration."""

    name: str
    model: str
    config: EngineConfig
    preset: str = "custom"
    backend_label: str | None = None  # a remote server or launch profile: what it runs, in words

    @property
    def label(self) -> str:
        """The configuration in words: the local engine's, or the remote backend's."""
        return self.backend_label or self.config.describe()

    def to_dict(self) -> dict:
        d = {"name": self.name, "preset": self.preset, "model": self.model,
             "config": None if self.backend_label else self.config.to_dict(), "config_label": self.label}
        if self.backend_label:
            d["backend"] = self.backend_label
        return d


@dataclass(frozen=True)
class CompareJob:
    """One request the bridge submitted for a column."""

    column: int
    repeat: int  # 0-based; warm-up runs have repeat -1
    request_id: str
    submitted_s: float

    @property
    def warmup(self) -> bool:
        return self.repeat < 0


@dataclass
class LiveRun:
    """A run in progress: tokens so far and the memory its engine's steps reported."""

    job: CompareJob
    token_ids: list[int] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    peak_kv_bytes: int = 0
    weights_bytes: int | None = None
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0

    def add_tokens(self, event: ev.TokensGenerated) -> None:
        ids = list(event.token_ids)
        pieces = list(event.token_texts)
        if not pieces and event.text:  # a remote server streams text, not one piece per token
            if not ids:
                self.pieces.append(event.text)
                self.origins.append(event.origins[0].value if event.origins else "target")
                return
            pieces = [event.text]
        # pieces cover the visible tokens; an EOS (always last) has none
        pieces += [""] * (len(ids) - len(pieces))
        self.token_ids += ids
        self.origins += [o.value for o in event.origins]
        self.pieces += pieces[: len(ids)]

    def add_step(self, stats: StepStats) -> None:
        if stats.timestamp_s < self.job.submitted_s:
            return  # the tail of an earlier run on the same engine
        self.peak_kv_bytes = max(self.peak_kv_bytes, stats.kv_cache_bytes)
        self.weights_bytes = stats.weights_bytes
        self.num_draft_tokens += stats.spec.num_draft_tokens
        self.num_accepted_tokens += stats.spec.num_accepted_tokens

    @property
    def acceptance_rate(self) -> float | None:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else None


@dataclass(frozen=True)
class RunRecord:
    """The figures of one finished run."""

    repeat: int
    token_ids: tuple[int, ...]
    origins: tuple[str, ...]
    pieces: tuple[str, ...]
    text: str
    reason: str
    error: str | None
    completion_tokens: int
    tokens_per_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float
    weights_bytes: int | None
    peak_kv_bytes: int | None  # None: a remote server's (not ours to measure)
    acceptance_rate: float | None

    @property
    def warmup(self) -> bool:
        return self.repeat < 0

    @property
    def memory_bytes(self) -> int | None:
        if self.weights_bytes is None or self.peak_kv_bytes is None:
            return None
        return self.weights_bytes + self.peak_kv_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory_bytes"] = self.memory_bytes
        return d


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int


def spread(values: list[float | None]) -> Spread | None:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return Spread(statistics.median(xs), min(xs), max(xs), len(xs))


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference
