"""Events the engine thread emits. Frozen dataclasses of plain values: no tensors, no Qt."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from engine.config import EngineConfig
from engine.metrics import RequestStats, StepStats


def now_s() -> float:
    return time.monotonic()


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS or a stop string
    LENGTH = "length"  # max_new_tokens
    CANCELLED = "cancelled"  # abort() or shutdown
    ERROR = "error"


class TokenOrigin(enum.Enum):
    TARGET = "target"  # produced by the target model's own step
    DRAFT = "draft"  # proposed by the drafter and accepted by the target


class EngineState(enum.Enum):
    IDLE = "idle"
    LOADING = "loading"
    RUNNING = "running"
    STOPPED = "stopped"


class ErrorSite(str, enum.Enum):
    """Where an EngineErrorEvent came from (a str enum: compares equal to its value)."""

    LOAD = "load"  # loading a model failed; the previous one stays
    CONFIG = "config"  # a configuration was refused or applied with a warning
    ENGINE = "engine"  # a step failed


class LoadTarget(str, enum.Enum):
    """What a LoadProgress is about (a str enum: compares equal to its value)."""

    MODEL = "model"
    DRAFT = "draft"
    QUANTISE = "quantise"


@dataclass(frozen=True)
class EngineEvent:
    timestamp_s: float = field(default_factory=now_s, kw_only=True)


@dataclass(frozen=True)
class RequestQueued(EngineEvent):
    request_id: str
    prompt_tokens: int
    tag: str = ""


@dataclass(frozen=True)
class TokensGenerated(EngineEvent):
    """New output of one request from one engine step (one or more tokens)."""

    request_id: str
    text: str  # the new text delta (may be empty while a multi-byte char is incomplete)
    token_ids: tuple[int, ...]
    origins: tuple[TokenOrigin, ...]  # one per token id
    token_texts: tuple[str, ...] = ()  # per-token pieces, for colouring by origin


@dataclass(frozen=True)
class ConfigSpan:
    """One configuration a request ran under, from output token `first_token` on."""

    first_token: int
    label: str  # EngineConfig.describe()


@dataclass(frozen=True)
class RequestFinished(EngineEvent):
    """The one terminal event of every request."""

    request_id: str
    reason: FinishReason
    text: str  # the whole completion
    token_ids: tuple[int, ...]
    stats: RequestStats
    config_label: str = ""  # EngineConfig.describe() when it finished
    error: str | None = None
    tag: str = ""
    # every configuration the request ran under, in order (the last one is config_label)
    config_spans: tuple[ConfigSpan, ...] = ()


@dataclass(frozen=True)
class StepCompleted(EngineEvent):
    stats: StepStats


@dataclass(frozen=True)
class ModelInfo:
    name_or_path: str
    architecture: str
    num_params: int
    dtype: str
    device: str
    weights_bytes: int
    quantisation: str
    vocab_size: int
    has_chat_template: bool
    dtype_note: str = ""  # how the dtype was chosen, e.g. "auto: float16, 7.9x float32 on this CPU (measured)"
    context_length: int | None = None
    # quantisation levels this device cannot run, with the reason: (level value, why)
    unavailable_levels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LoadProgress(EngineEvent):
    what: LoadTarget
    fraction: float  # 0..1
    message: str


@dataclass(frozen=True)
class ModelLoaded(EngineEvent):
    info: ModelInfo


@dataclass(frozen=True)
class ConfigApplied(EngineEvent):
    config_dict: dict  # config.to_dict(), for consumers that store it
    label: str
    changes: tuple[str, ...]  # human labels of what changed, e.g. ('kv off',)
    config: EngineConfig | None = None  # the configuration now in force


@dataclass(frozen=True)
class EngineErrorEvent(EngineEvent):
    """A failure that did not end a request (a failed load, a refused config)."""

    message: str
    where: ErrorSite


@dataclass(frozen=True)
class StateChanged(EngineEvent):
    state: EngineState
    detail: str = ""
