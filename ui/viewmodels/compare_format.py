"""How the comparison's figures read: rates, ratios, medians with ranges, agreement. Qt-free;
the view's column footers, its summary table and the exported reports all use these."""

from __future__ import annotations

from engine.quality import Agreement
from ui.formatting import MISSING, format_bytes, format_ms
from ui.viewmodels.compare_records import Spread

HIGHER_IS_BETTER = {"speed": True, "ttft": False, "tpot": False, "memory": False}

# (key, header) of the summary table, in order; the view and the Markdown report both use it.
SUMMARY_COLUMNS = (
    ("column", "Column"),
    ("config", "Configuration"),
    ("tokens_per_s", "tok/s"),
    ("speed", "Speed ×"),
    ("ttft", "TTFT"),
    ("ttft_ratio", "TTFT ×"),
    ("tpot", "TPOT"),
    ("tpot_ratio", "TPOT ×"),
    ("memory", "Memory"),
    ("memory_ratio", "Memory ×"),
    ("acceptance", "Acceptance"),
    ("agreement", "Agreement"),
)


def fmt_rate(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_ratio(r: float | None) -> str:
    return MISSING if r is None else f"{r:.2f}×"


def fmt_percent(v: float) -> str:
    return f"{v * 100:.0f}%"


FORMATTERS = {
    "tokens_per_s": lambda v: f"{fmt_rate(v)} tok/s",
    "ttft_s": format_ms,
    "tpot_s": format_ms,
    "memory_bytes": format_bytes,
    "weights_bytes": format_bytes,
    "peak_kv_bytes": format_bytes,
    "acceptance_rate": fmt_percent,
}


def fmt_spread(s: Spread | None, metric: str) -> str:
    """'412 tok/s' for one run; '412 tok/s (398–430)': median (min–max) over repeats that differ."""
    if s is None:
        return MISSING
    fmt = FORMATTERS[metric]
    text = fmt(s.median)
    low, high = fmt(s.low), fmt(s.high)
    if s.n > 1 and low != high:
        unit_low, unit_high = low.rpartition(" ")[2], high.rpartition(" ")[2]
        if unit_low == unit_high and " " in low:  # '4.9–5.5' under '5.2 ms'
            low, high = low.rpartition(" ")[0], high.rpartition(" ")[0]
        text += f" ({low}–{high})"
    return text


def fmt_agreement(a: Agreement | None, *, baseline: bool = False) -> str:
    if baseline:
        return "reference"
    if a is None:
        return MISSING
    if a.first_divergence is None:
        return "identical"
    return f"{fmt_percent(a.share)} same · differs from token {a.first_divergence}"


def ratio_quality(key: str, r: float | None, tolerance: float = 0.05) -> str:
    """'better' | 'worse' | 'same' | '' for colouring a ratio cell."""
    if r is None:
        return ""
    if abs(r - 1.0) <= tolerance:
        return "same"
    return "better" if (r > 1.0) == HIGHER_IS_BETTER[key] else "worse"


def fmt_value(metric: str, value) -> str:
    return MISSING if value is None else FORMATTERS[metric](value)
