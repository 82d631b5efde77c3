"""Prometheus `/metrics` text -> samples, with prometheus_client's own parser.

A Scrape is the plain result of one read: every sample as (name, labels) -> value, plus the
monotonic time it was taken. Mapping onto our figures lives in engine/remote/server_stats.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    taken_s: float
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.samples)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)

    def total(self, name: str, **match: str) -> float | None:
        """Sum of the samples named `name` whose labels include `match` (None when absent).

        Servers label by model, engine index, finish reason...; the sum is the server-wide figure.
        """
        found = False
        acc = 0.0
        for (n, labels), v in self.samples.items():
            if n != name:
                continue
            d = dict(labels)
            if all(d.get(k) == want for k, want in match.items()):
                found = True
                acc += v
        return acc if found else None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Samples of `name` summed per value of one label (e.g. position -> count)."""
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            if n == name:
                key = dict(labels).get(label)
                if key is not None:
                    out[key] = out.get(key, 0.0) + v
        return out


class MetricsParseError(ValueError):
    pass


def parse_metrics(text: str, taken_s: float) -> Scrape:
    """Parse exposition text; NaN samples (a gauge with no value yet) are dropped."""
    samples: dict[tuple[str, Labels], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                value = float(s.value)
                if math.isnan(value):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = samples.get(key, 0.0) + value
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsParseError(f"unreadable /metrics text: {exc}") from exc
    return Scrape(taken_s=taken_s, samples=samples)
