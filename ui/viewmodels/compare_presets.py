"""The Compare tab's named configurations (Qt-free)."""

from __future__ import annotations

from engine.config import (
    BatchingConfig,
    EngineConfig,
    KVCacheMode,
    Quantisation,
    SpeculativeConfig,
    SpeculativeMode,
)

PRESETS = ("baseline", "KV cache", "all optimisations", "speculative", "nf4", "custom")
DEFAULT_PRESETS = ("baseline", "KV cache", "all optimisations")
NEXT_PRESETS = ("speculative", "nf4", "custom")


def preset_config(preset: str, draft_model: str | None) -> EngineConfig:
    """The configuration behind a preset name; speculation uses the draft when there is one."""
    single = BatchingConfig(enabled=False)
    spec = (SpeculativeConfig(SpeculativeMode.DRAFT, 4, draft_model=draft_model) if draft_model
            else SpeculativeConfig(SpeculativeMode.NGRAM, 4))
    table = {
        "baseline": EngineConfig(kv_cache=KVCacheMode.OFF, batching=single),
        "KV cache": EngineConfig(kv_cache=KVCacheMode.ON, batching=single),
        "all optimisations": EngineConfig(kv_cache=KVCacheMode.ON, batching=BatchingConfig(), speculative=spec),
        "speculative": EngineConfig(kv_cache=KVCacheMode.ON, batching=single, speculative=spec),
        "nf4": EngineConfig(kv_cache=KVCacheMode.ON, batching=single, quantisation=Quantisation.NF4),
    }
    if preset not in table:
        raise ValueError(f"unknown preset {preset!r}")
    return table[preset]
