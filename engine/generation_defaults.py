"""Sampling defaults from a model directory's generation_config.json."""

from __future__ import annotations

import json
from pathlib import Path

from engine.config import SamplingParams


def generation_defaults(model_dir: str) -> SamplingParams:
    """The model's own defaults where it has them; greedy, 128 tokens otherwise."""
    path = Path(model_dir) / "generation_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return SamplingParams()
    do_sample = bool(cfg.get("do_sample", False))
    stop = cfg.get("stop_strings") or ()
    if isinstance(stop, str):
        stop = (stop,)
    return SamplingParams(
        temperature=float(cfg.get("temperature", 1.0)) if do_sample else 0.0,
        top_k=int(cfg.get("top_k", 0) or 0) if do_sample else 0,
        top_p=float(cfg.get("top_p", 1.0) or 1.0) if do_sample else 1.0,
        max_new_tokens=int(cfg.get("max_new_tokens", 128) or 128),
        stop=tuple(stop),
    )
