"""Engine configuration: frozen dataclasses with enums, never strings sniffed from paths."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class KVCacheMode(enum.Enum):
    OFF = "off"  # recompute the whole sequence every step
    ON = "on"  # per-request cache
    PREFIX = "prefix"  # per-request cache + reuse of earlier conversations' prefixes


class Quantisation(enum.Enum):
    NONE = "none"  # the model's own dtype
    BF16 = "bf16"
    INT8 = "int8"  # bitsandbytes LLM.int8
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
    token_budget: int = 2048  # tokens computed per step, all rows together

    def __post_init__(self) -> None:
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
        if not 1 <= self.num_draft_tokens <= 16:
            raise ValueError("num_draft_tokens must be between 1 and 16")


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

    def with_(self, **changes) -> "EngineConfig":
        return replace(self, **changes)

    def describe(self) -> str:
        """Short human label, e.g. for chart markers: 'kv on · batch 8 · none · spec off'."""
        batch = f"batch {self.batching.max_batch_size}" if self.batching.enabled else "batching off"
        spec = self.speculative
        if spec.mode is SpeculativeMode.OFF:
            spec_label = "spec off"
        else:
            k = "adaptive" if spec.adaptive else f"k={spec.num_draft_tokens}"
            spec_label = f"spec {spec.mode.value} {k}"
        return f"kv {self.kv_cache.value} · {batch} · {self.quantisation.value} · {spec_label}"

    def to_dict(self) -> dict:
        return {
            "kv_cache": self.kv_cache.value,
            "batching": {
                "enabled": self.batching.enabled,
                "max_batch_size": self.batching.max_batch_size,
                "token_budget": self.batching.token_budget,
            },
            "quantisation": self.quantisation.value,
            "speculative": {
                "mode": self.speculative.mode.value,
                "num_draft_tokens": self.speculative.num_draft_tokens,
                "adaptive": self.speculative.adaptive,
                "draft_model": self.speculative.draft_model,
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EngineConfig":
        b = data.get("batching", {})
        s = data.get("speculative", {})
        return cls(
            kv_cache=KVCacheMode(data.get("kv_cache", "on")),
            batching=BatchingConfig(
                enabled=bool(b.get("enabled", True)),
                max_batch_size=int(b.get("max_batch_size", 8)),
                token_budget=int(b.get("token_budget", 2048)),
            ),
            quantisation=Quantisation(data.get("quantisation", "none")),
            speculative=SpeculativeConfig(
                mode=SpeculativeMode(s.get("mode", "off")),
                num_draft_tokens=int(s.get("num_draft_tokens", 4)),
                adaptive=bool(s.get("adaptive", False)),
                draft_model=s.get("draft_model"),
            ),
        )


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
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")

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
