"""Throughput over a time window of engine steps, and whether the engine was busy in it.

A window's throughput is the output tokens of the steps stamped in (t_from, t_to] over its
length. An idle engine steps not at all, so a window that straddles an idle stretch reads
low: the *busy* part of a window is its length minus the idle gaps in it (a gap between two
steps, less the later step's own compute time, longer than IDLE_GAP_S). A baseline for a
cost claim must be a busy window with enough tokens in it (see `shortfall`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDLE_GAP_S = 0.5  # a pause between steps longer than this is the engine waiting for work
MIN_MEASURE_S = 1.0  # shorter spans give no throughput figure at all
MIN_COMPARE_S = 5.0  # a side of a cost comparison covers at least this long…
MIN_COMPARE_TOKENS = 256  # …and this many output tokens…
MIN_BUSY_FRACTION = 0.8  # …with the engine busy this much of it


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float
    t_from_s: float
    t_to_s: float
    num_tokens: int
    busy_s: float

    @property
    def span_s(self) -> float:
        return self.t_to_s - self.t_from_s

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.span_s if self.span_s > 0 else 0.0


def idle_s(t: np.ndarray, step_time: np.ndarray, t_from: float, t_to: float) -> float:
    """Seconds of (t_from, t_to] in which the engine waited for work."""
    lo = int(np.searchsorted(t, t_from, side="right"))
    hi = int(np.searchsorted(t, t_to, side="right"))
    # each step's start: its stamp less its compute time; the waits end at those starts
    starts = t[lo:hi] - np.nan_to_num(step_time[lo:hi], nan=0.0)
    ends = np.concatenate(([t_from], t[lo:hi]))  # the previous step's end (or the window's start)
    waits = np.maximum(starts - ends[:-1], 0.0) if hi > lo else np.zeros(0)
    tail = t_to - (t[hi - 1] if hi > lo else t_from)  # after the last step in the window
    waits = np.append(waits, max(tail, 0.0))
    return float(np.sum(waits[waits > IDLE_GAP_S]))


def measure(t: np.ndarray, step_time: np.ndarray, tokens: np.ndarray, t_from: float,
            t_to: float | None = None) -> Throughput | None:
    """Throughput of the steps stamped in (t_from, t_to]; t_to defaults to the last step."""
    if not len(t):
        return None
    end = float(t[-1]) if t_to is None else t_to
    if end - t_from < MIN_MEASURE_S:
        return None
    lo = int(np.searchsorted(t, t_from, side="right"))
    hi = int(np.searchsorted(t, end, side="right"))
    if hi - lo < 2:
        return None
    n = int(np.nansum(tokens[lo:hi]))
    span = end - t_from
    return Throughput(n / span, t_from, end, n, max(span - idle_s(t, step_time, t_from, end), 0.0))


def idle_gap_starts(t: np.ndarray, step_time: np.ndarray) -> np.ndarray:
    """Indices i of the steps that came after an idle gap (the engine waited before step i)."""
    if len(t) < 2:
        return np.zeros(0, dtype=int)
    starts = t - np.nan_to_num(step_time, nan=0.0)
    return np.flatnonzero(starts[1:] - t[:-1] > IDLE_GAP_S) + 1


def busy_stretches(t: np.ndarray, step_time: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) of each run of steps with no idle gap between them."""
    if not len(t):
        return []
    starts = t - np.nan_to_num(step_time, nan=0.0)
    gaps = idle_gap_starts(t, step_time)
    bounds = np.concatenate(([0], gaps, [len(t)]))
    return [(float(starts[a]), float(t[b - 1])) for a, b in zip(bounds[:-1], bounds[1:])]


def first_busy_window(t: np.ndarray, step_time: np.ndarray, tokens: np.ndarray, *, before: float | None,
                      window_s: float) -> Throughput | None:
    """The first busy stretch (before `before`, a configuration change), window_s of it at
    most, once closed (by an idle gap, the change, or window_s); None until one is at least
    MIN_COMPARE_S long and holds MIN_COMPARE_TOKENS tokens."""
    last = float(t[-1]) if len(t) else None
    for start, end in busy_stretches(t, step_time):
        if before is not None and start >= before:
            return None
        if before is None and end == last and end - start < window_s:
            return None  # still filling: a baseline does not move once it is shown
        stop = min(end, start + window_s, before if before is not None else end)
        found = measure(t, step_time, tokens, start, stop)
        if found is not None and shortfall(found) is None:
            return found
        if before is not None and end >= before:
            return None  # the change cut the stretch short
    return None


def shortfall(m: Throughput | None, what: str = "the measurement") -> str | None:
    """Why `m` is too thin to compare on, or None when it is enough."""
    if m is None:
        return f"nothing measured for {what} yet"
    if m.num_tokens < MIN_COMPARE_TOKENS:
        return f"{what} rests on {m.num_tokens:,} tokens (need {MIN_COMPARE_TOKENS:,})"
    if m.span_s < MIN_COMPARE_S:
        return f"{what} covers {m.span_s:.1f} s (need {MIN_COMPARE_S:.0f} s)"
    if m.busy_fraction < MIN_BUSY_FRACTION:
        return (f"the engine was busy {m.busy_fraction * 100:.0f} % of {what}'s window "
                f"(need {MIN_BUSY_FRACTION * 100:.0f} %)")
    return None
