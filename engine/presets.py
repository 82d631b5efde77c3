"""Named configurations, shared by the Compare tab and the bench."""

from __future__ import annotations

import enum

from engine.config import BatchingConfig, EngineConfig, KVCacheMode, Quantisation, SpeculativeConfig, SpeculativeMode


class Preset(enum.Enum):
    BASELINE = "baseline"  # no KV cache, one request at a time: every optimisation off
    KV_CACHE = "KV cache"
    ALL = "all optimisations"
    SPECULATIVE = "speculative"
    NF4 = "nf4"


def preset_config(preset: Preset, draft_model: str | None = None) -> EngineConfig:
    """The configuration behind a preset; speculation uses the draft model when there is one,
    else n-gram lookup."""
    single = BatchingConfig(enabled=False)
    spec = (SpeculativeConfig(SpeculativeMode.DRAFT, 4, draft_model=draft_model) if draft_model
            else SpeculativeConfig(SpeculativeMode.NGRAM, 4))
    return {
        Preset.BASELINE: EngineConfig(kv_cache=KVCacheMode.OFF, batching=single),
        Preset.KV_CACHE: EngineConfig(kv_cache=KVCacheMode.ON, batching=single),
        Preset.ALL: EngineConfig(kv_cache=KVCacheMode.ON, batching=BatchingConfig(), speculative=spec),
        Preset.SPECULATIVE: EngineConfig(kv_cache=KVCacheMode.ON, batching=single, speculative=spec),
        Preset.NF4: EngineConfig(kv_cache=KVCacheMode.ON, batching=single, quantisation=Quantisation.NF4),
    }[preset]
