"""What the measured throughput costs: pure arithmetic, Qt-free.

cost per 1M output tokens = price per hour / (tokens/s * 3600 s/h) * 1e6

The projection serves N requests a day of T output tokens each at the measured throughput:
device-hours a day = N * T / tokens/s / 3600, cost a day = device-hours * price per hour,
devices needed = ceil(device-hours / 24). It assumes the measured throughput holds at that
volume, i.e. the same concurrency as the measurement (one device, load as generated).

The baseline is what the optimised configuration is compared against: a throughput the user
captured ("Use current as baseline"), else the dashboard's first *busy* stretch before any
configuration change (an idle stretch is no baseline). Each side states how many tokens over
how many seconds it rests on, and no ratio is given while either side is too thin
(ui.viewmodels.throughput.shortfall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ui.formatting import MISSING
from ui.viewmodels.throughput import Throughput, shortfall

SECONDS_PER_HOUR = 3600.0
TOKENS_PER_MILLION = 1_000_000.0


@dataclass(frozen=True)
class CostInputs:
    price_per_hour: float = 2.50  # hardware, per hour, in the user's currency
    requests_per_day: int = 100_000
    avg_output_tokens: float = 256.0

    def __post_init__(self) -> None:
        if self.price_per_hour < 0 or self.requests_per_day < 0 or self.avg_output_tokens < 0:
            raise ValueError("price, requests a day and output tokens must not be negative")


@dataclass(frozen=True)
class Baseline:
    tokens_per_s: float
    source: str  # 'captured' (the button) | 'auto' (first busy stretch before any change) | 'compare'
    label: str  # the configuration it measured
    t_from_s: float
    t_to_s: float
    num_tokens: int
    busy_s: float

    @classmethod
    def from_throughput(cls, m: Throughput, source: str, label: str) -> Baseline:
        return cls(m.tokens_per_s, source, label, m.t_from_s, m.t_to_s, m.num_tokens, m.busy_s)

    @classmethod
    def from_comparison(cls, comp, column: int = 0) -> Baseline | None:
        """A Compare column's measured runs as a baseline: their tokens over their wall time
        (one request at a time, so it is the single-stream rate); None without runs."""
        col = comp.columns[column]
        runs = [r for r in col.runs if r.completion_tokens and r.e2e_s > 0]
        if not runs:
            return None
        tokens = sum(r.completion_tokens for r in runs)
        seconds = sum(r.e2e_s for r in runs)
        label = f"Compare column '{col.spec.name}': {col.spec.label}"
        return cls(tokens / seconds, "compare", label, 0.0, seconds, tokens, seconds)

    def as_throughput(self) -> Throughput:
        return Throughput(self.tokens_per_s, self.t_from_s, self.t_to_s, self.num_tokens, self.busy_s)


@dataclass(frozen=True)
class CostLine:
    tokens_per_s: float
    cost_per_million: float
    device_hours_per_day: float
    cost_per_day: float
    devices_needed: int


@dataclass(frozen=True)
class CostComparison:
    current: CostLine | None
    baseline: CostLine | None
    speedup: float | None  # current tokens/s over baseline tokens/s
    saving_fraction: float | None  # 1 - current cost / baseline cost
    saving_per_day: float | None
    refusal: str | None = None  # why there is no ratio although both sides have a figure


def cost_per_million(tokens_per_s: float, price_per_hour: float) -> float | None:
    if not tokens_per_s or tokens_per_s <= 0 or not math.isfinite(tokens_per_s):
        return None
    return price_per_hour / (tokens_per_s * SECONDS_PER_HOUR) * TOKENS_PER_MILLION


def device_hours_per_day(tokens_per_s: float, requests_per_day: float, avg_output_tokens: float) -> float | None:
    if not tokens_per_s or tokens_per_s <= 0 or not math.isfinite(tokens_per_s):
        return None
    return requests_per_day * avg_output_tokens / tokens_per_s / SECONDS_PER_HOUR


def cost_line(tokens_per_s: float | None, inputs: CostInputs) -> CostLine | None:
    if tokens_per_s is None:
        return None
    per_million = cost_per_million(tokens_per_s, inputs.price_per_hour)
    hours = device_hours_per_day(tokens_per_s, inputs.requests_per_day, inputs.avg_output_tokens)
    if per_million is None or hours is None:
        return None
    return CostLine(tokens_per_s, per_million, hours, hours * inputs.price_per_hour, max(math.ceil(hours / 24.0), 0))


def compare(current_tps: float | None, baseline_tps: float | None, inputs: CostInputs) -> CostComparison:
    current = cost_line(current_tps, inputs)
    baseline = cost_line(baseline_tps, inputs)
    if current is None or baseline is None:
        return CostComparison(current, baseline, None, None, None)
    saving = 1.0 - current.cost_per_million / baseline.cost_per_million if baseline.cost_per_million else None
    return CostComparison(current, baseline, current.tokens_per_s / baseline.tokens_per_s, saving,
                          baseline.cost_per_day - current.cost_per_day)


class CostModel:
    """Inputs plus the baseline choice: a captured baseline wins over the automatic one."""

    def __init__(self, inputs: CostInputs | None = None) -> None:
        self.inputs = inputs or CostInputs()
        self.captured: Baseline | None = None

    def capture_baseline(self, baseline: Baseline) -> str | None:
        """Keep `baseline` unless it is too thin to compare on; returns the reason if it is."""
        reason = shortfall(baseline.as_throughput(), "the baseline")
        if reason is None:
            self.captured = baseline
        return reason

    def clear_baseline(self) -> None:
        self.captured = None

    def baseline(self, auto: Baseline | None) -> Baseline | None:
        return self.captured or auto

    def comparison(self, current: Throughput | None, auto: Baseline | None) -> CostComparison:
        """Current against the baseline; the ratios only when both sides rest on enough data."""
        base = self.baseline(auto)
        result = compare(None if current is None else current.tokens_per_s,
                         None if base is None else base.tokens_per_s, self.inputs)
        if result.speedup is None:
            return result
        reason = (shortfall(base.as_throughput(), "the baseline")
                  or shortfall(current, "the current measurement"))
        if reason is None:
            return result
        return CostComparison(result.current, result.baseline, None, None, None, refusal=reason)

    def to_dict(self) -> dict:
        b = self.captured
        return {
            "price_per_hour": self.inputs.price_per_hour,
            "requests_per_day": self.inputs.requests_per_day,
            "avg_output_tokens": self.inputs.avg_output_tokens,
            "captured_baseline": None if b is None else {
                "tokens_per_s": b.tokens_per_s, "source": b.source, "label": b.label,
                "t_from_s": b.t_from_s, "t_to_s": b.t_to_s, "num_tokens": b.num_tokens, "busy_s": b.busy_s},
        }


def describe_basis(m: Throughput | Baseline | None, *, short: bool = False) -> str:
    """What a figure rests on: '1,234 tokens over 20.0 s (96 % busy)'; short, two narrow lines
    for a table cell: '1,234 tok' / '20.0 s'."""
    if m is None:
        return MISSING
    t = m.as_throughput() if isinstance(m, Baseline) else m
    if short:
        return f"{t.num_tokens:,} tok\n{t.span_s:,.1f} s"
    return f"{t.num_tokens:,} tokens over {t.span_s:,.1f} s ({t.busy_fraction * 100:.0f} % busy)"


def format_money(value: float | None, currency: str = "$") -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if abs(value) >= 100:
        return f"{currency}{value:,.0f}"
    if abs(value) >= 1:
        return f"{currency}{value:,.2f}"
    return f"{currency}{value:.4f}"
