"""Engine configuration: frozen dataclasses with enums, never strings sniffed from paths."""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from dataclasses import dataclass, field, replace


class KVCacheMode(enum.Enum):
    OFF = "off"  # recompute the whole sequence every step
    ON = "on"  # per-request cache
    PREFIX = "prefix"  # per-request cache + reuse of earlier conversations' prefixes


class Quantisation(enum.Enum):
    NONE = "none"  # the model's own dtype
    BF16 = "bf16"
    INT8 = "int8"  # bitsandbytes 8-bit weights (LLM.int8() in its own forward; weight-only on our CPU kernel)
    NF4 = "nf4"  # bitsandbytes 4-bit NormalFloat
    FP4 = "fp4"  # bitsandbytes 4-bit float


class SpeculativeMode(enum.Enum):
    OFF = "off"
    DRAFT = "draft"  # a smaller causal LM with the same tokenizer
    NGRAM = "ngram"  # prompt lookup, no extra model


class DType(enum.Enum):
    AUTO = "auto"  # float32 on CPU, the checkpoint's dtype elsewhere
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class DeviceKind(enum.Enum):
    AUTO = "auto"  # cuda > mps > cpu
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 8
    # tokens computed per step, all rows together: long prompts are prefilled in chunks of this
    # size, so running rows keep decoding between chunks and a shutdown waits one chunk at most
    token_budget: int = 512
    # greedy rows decode several steps per schedule in one native call (engine.core._burst_length):
    # the Python around a step is paid once per burst, and tokens stream a few at a time
    decode_bursts: bool = True

    def __post_init__(self) -> None:
        _check_int("max_batch_size", self.max_batch_size)
        _check_int("token_budget", self.token_budget)
        if not isinstance(self.enabled, bool):
            raise ValueError("batching.enabled must be true or false")
        if not isinstance(self.decode_bursts, bool):
            raise ValueError("batching.decode_bursts must be true or false")
        if self.max_batch_size > 256:
            raise ValueError("max_batch_size must be at most 256")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.token_budget < 1:
            raise ValueError("token_budget must be at least 1")

    @property
    def effective_max_batch(self) -> int:
        return self.max_batch_size if self.enabled else 1


@dataclass(frozen=True)
class SpeculativeConfig:
    mode: SpeculativeMode = SpeculativeMode.OFF
    num_draft_tokens: int = 4  # k
    adaptive: bool = False
    draft_model: str | None = None  # local path or hub id; None = the bundled draft
    ngram_max: int = 3
    ngram_min: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.mode, SpeculativeMode):
            raise ValueError(f"speculative mode must be a SpeculativeMode, got {self.mode!r}")
        _check_int("num_draft_tokens", self.num_draft_tokens)
        _check_int("ngram_max", self.ngram_max)
        _check_int("ngram_min", self.ngram_min)
        if not 1 <= self.num_draft_tokens <= 16:
            raise ValueError("num_draft_tokens must be between 1 and 16")
        if not 1 <= self.ngram_min <= self.ngram_max <= 16:
            raise ValueError("n-gram sizes must satisfy 1 <= ngram_min <= ngram_max <= 16")
        if not isinstance(self.adaptive, bool):
            raise ValueError("adaptive must be true or false")
        if self.draft_model is not None and (not isinstance(self.draft_model, str) or not self.draft_model):
            raise ValueError("draft_model must be a path or hub id")


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a local directory or a hub id."""

    name_or_path: str
    device: DeviceKind = DeviceKind.AUTO
    dtype: DType = DType.AUTO
    trust_remote_code: bool = False


@dataclass(frozen=True)
class EngineConfig:
    kv_cache: KVCacheMode = KVCacheMode.ON
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    quantisation: Quantisation = Quantisation.NONE
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    prefix_cache_max_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        for name, kind in (("kv_cache", KVCacheMode), ("quantisation", Quantisation),
                           ("batching", BatchingConfig), ("speculative", SpeculativeConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        _check_int("prefix_cache_max_bytes", self.prefix_cache_max_bytes)
        if self.prefix_cache_max_bytes < 0:
            raise ValueError("prefix_cache_max_bytes must be >= 0")

    def with_(self, **changes) -> "EngineConfig":
        return replace(self, **changes)

    def describe(self) -> str:
        """Short human label, e.g. for chart markers: 'kv on · batch 8 · none · spec off'."""
        batch = f"batch {self.batching.max_batch_size}" if self.batching.enabled else "batching off"
        if not self.batching.decode_bursts:
            batch += " (no bursts)"
        spec = self.speculative
        if spec.mode is SpeculativeMode.OFF:
            spec_label = "spec off"
        else:
            k = "adaptive" if spec.adaptive else f"k={spec.num_draft_tokens}"
            spec_label = f"spec {spec.mode.value} {k}"
        return f"kv {self.kv_cache.value} · {batch} · {self.quantisation.value} · {spec_label}"

    def to_dict(self) -> dict:
        """Plain JSON-able values, derived from the fields (enums by value, nested dicts)."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineConfig":
        """The inverse of to_dict; missing keys take their defaults, unknown keys are refused."""
        return _from_plain(cls, data)


def _to_plain(obj):
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return obj


def _from_plain(cls, data):
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        target = args[0] if args and value is not None else hint
        if value is None and type(None) in typing.get_args(hint):
            kwargs[name] = None
        elif isinstance(target, type) and issubclass(target, enum.Enum):
            kwargs[name] = target(value)
        elif dataclasses.is_dataclass(target):
            kwargs[name] = _from_plain(target, value)
        elif target is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{cls.__name__}.{name}: expected true/false, got {value!r}")
            kwargs[name] = value
        elif target is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{cls.__name__}.{name}: expected an integer, got {value!r}")
            kwargs[name] = value
        elif target is str:
            if not isinstance(value, str):
                raise ValueError(f"{cls.__name__}.{name}: expected text, got {value!r}")
            kwargs[name] = value
        else:
            kwargs[name] = value
    return cls(**kwargs)


MIN_TEMPERATURE = 1e-3  # below this, logits / T overflows float32: use 0 (greedy)
MAX_TEMPERATURE = 100.0


def _check_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        # every field is untrusted (CLI, GUI, HTTP): refuse what would break a step later
        _check_number("temperature", self.temperature)
        _check_number("top_p", self.top_p)
        _check_int("top_k", self.top_k)
        _check_int("max_new_tokens", self.max_new_tokens)
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if 0 < self.temperature < MIN_TEMPERATURE or self.temperature > MAX_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.seed is not None:
            _check_int("seed", self.seed)
            if not 0 <= self.seed < 2**63:
                raise ValueError("seed must be between 0 and 2**63 - 1")
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)  # one stop string, not its characters
        if not isinstance(stop, (tuple, list)) or not all(isinstance(x, str) for x in stop):
            raise ValueError("stop must be a list of strings")
        if any(x == "" for x in stop):
            raise ValueError("a stop string must not be empty")
        object.__setattr__(self, "stop", tuple(stop))
        if not isinstance(self.ignore_eos, bool):
            raise ValueError("ignore_eos must be true or false")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerateRequest:
    """A prompt (raw text) or a chat conversation (list of {role, content} mappings)."""

    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    prompt_token_ids: tuple[int, ...] | None = None  # bypasses the tokenizer (bench, tests)
    request_id: str | None = None  # assigned by the engine when None
    tag: str = ""  # free label for consumers (e.g. 'loadgen', 'compare:2')

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.prompt, self.messages, self.prompt_token_ids))
        if given != 1:
            raise ValueError("give exactly one of prompt, messages or prompt_token_ids")
        if not isinstance(self.sampling, SamplingParams):
            raise ValueError("sampling must be SamplingParams")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError("prompt must be text")
        if self.messages is not None:
            object.__setattr__(self, "messages", _normalise_messages(self.messages))
        if self.prompt_token_ids is not None:
            ids = self.prompt_token_ids
            if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
                raise ValueError("prompt_token_ids must be a list of integers")
            ids = tuple(ids)
            if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
                raise ValueError("prompt_token_ids must be non-negative integers")
            object.__setattr__(self, "prompt_token_ids", ids)
        if self.request_id is not None and (not isinstance(self.request_id, str) or not self.request_id):
            raise ValueError("request_id must be non-empty text")
        if not isinstance(self.tag, str):
            raise ValueError("tag must be text")


def _normalise_messages(messages) -> tuple[tuple[str, str], ...]:
    """(role, content) pairs or {"role", "content"} mappings -> pairs of text; refuse the rest."""
    if isinstance(messages, (str, bytes, dict)) or not hasattr(messages, "__iter__"):
        raise ValueError("messages must be a list of (role, content) pairs")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, dict):
            role, content = m.get("role"), m.get("content")
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            role, content = m
        else:
            raise ValueError(f"message {i} must be a (role, content) pair or a {{role, content}} mapping")
        if not isinstance(role, str) or not role:
            raise ValueError(f"message {i}: role must be non-empty text, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be text, got {type(content).__name__}")
        out.append((role, content))
    if not out:
        raise ValueError("messages must not be empty")
    return tuple(out)
