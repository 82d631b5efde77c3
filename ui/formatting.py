"""Pure formatting of figures for labels and message footers (no widgets here)."""

from __future__ import annotations

import math
from pathlib import Path

from engine import events as ev
from engine.config import SamplingParams

MISSING = "–"  # the one mark for a figure that is not there (never 0, which is a value)


def plural(n: int, noun: str) -> str:
    """'1 request', '2 requests', '1,024 steps'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def format_bytes(n: float | None) -> str:
    if n is None:
        return MISSING
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def format_count(n: int | None) -> str:
    if n is None:
        return MISSING
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return str(n)


def format_ms(seconds: float | None) -> str:
    """The one millisecond formatter: '12 ms', '3.4 ms'; MISSING for None or NaN."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    ms = seconds * 1000.0
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def model_display_name(name_or_path: str | None) -> str:
    if not name_or_path:
        return "no model"
    p = Path(name_or_path)
    if p.is_absolute() or name_or_path.startswith((".", "~")):
        return p.name or name_or_path
    return name_or_path  # a hub id reads best whole: 'org/model'


def origin_runs(pieces: list[tuple[str, str]]) -> list[list[str]]:
    """Merge consecutive (text, origin) pieces of the same origin: compact enough to store."""
    runs: list[list[str]] = []
    for text, origin in pieces:
        if not text:
            continue
        if runs and runs[-1][1] == origin:
            runs[-1][0] += text
        else:
            runs.append([text, origin])
    return runs


def metrics_from_finished(event: ev.RequestFinished) -> dict:
    """The plain figures a message keeps (stored as JSON with it)."""
    s = event.stats
    spec = s.spec
    return {
        "reason": event.reason.value,
        "error": event.error,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "cached_prompt_tokens": s.cached_prompt_tokens,
        "tokens_per_s": s.tokens_per_s,
        "ttft_s": s.ttft_s,
        "tpot_s": s.tpot_s,
        "e2e_s": s.e2e_s,
        "acceptance_rate": spec.acceptance_rate,
        "mean_tokens_per_verify": spec.mean_tokens_per_verify,
    }


def sampling_label(p: SamplingParams) -> str:
    if p.greedy:
        text = "greedy"
    else:
        text = f"T {p.temperature:g}, top-p {p.top_p:g}" + (f", top-k {p.top_k}" if p.top_k else "")
    if p.seed is not None:
        text += f", seed {p.seed}"
    return text
