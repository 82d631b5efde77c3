"""The Compare tab's named configurations (Qt-free): engine.presets plus "custom"."""

from __future__ import annotations

from engine.config import EngineConfig
from engine.presets import Preset
from engine.presets import preset_config as _engine_preset

PRESETS = tuple(p.value for p in Preset) + ("custom",)
DEFAULT_PRESETS = (Preset.BASELINE.value, Preset.KV_CACHE.value, Preset.ALL.value)
NEXT_PRESETS = (Preset.SPECULATIVE.value, Preset.NF4.value, "custom")


def preset_config(preset: str, draft_model: str | None) -> EngineConfig:
    """The configuration behind a preset name; speculation uses the draft when there is one."""
    try:
        return _engine_preset(Preset(preset), draft_model)
    except ValueError:
        raise ValueError(f"unknown preset {preset!r}") from None
