"""Speculative decoding inside the engine step: propose drafts, verify, bookkeeping."""

from __future__ import annotations

from engine.config import EngineConfig, SpeculativeMode


def configure_spec(core, old: EngineConfig, new: EngineConfig):
    if new.speculative.mode is SpeculativeMode.OFF:
        return None
    raise ValueError("speculative decoding is not available yet")
