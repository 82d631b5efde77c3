"""Metric records (plain dataclasses) and the pure functions that compute them.

Definitions follow the serving world: TTFT is submit -> first output token (queue wait
included); ITL the gaps between a request's successive token emissions; TPOT is
(e2e - TTFT) / (tokens - 1); tokens/s counts committed output tokens per wall second.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class SpecStats:
    num_drafts: int = 0  # verify steps that had a draft
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: tuple[int, ...] = ()  # how often position i of a draft was accepted
    drafted_per_position: tuple[int, ...] = ()
    draft_time_s: float = 0.0

    @property
    def acceptance_rate(self) -> float | None:
        if self.num_draft_tokens == 0:
            return None
        return self.num_accepted_tokens / self.num_draft_tokens

    @property
    def mean_tokens_per_verify(self) -> float | None:
        """Tokens committed per verify step: accepted drafts plus the target's own token."""
        if self.num_drafts == 0:
            return None
        return (self.num_accepted_tokens + self.num_drafts) / self.num_drafts

    def merged(self, other: "SpecStats") -> "SpecStats":
        n = max(len(self.accepted_per_position), len(other.accepted_per_position))

        def add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
            a = a + (0,) * (n - len(a))
            b = b + (0,) * (n - len(b))
            return tuple(x + y for x, y in zip(a, b))

        return SpecStats(
            num_drafts=self.num_drafts + other.num_drafts,
            num_draft_tokens=self.num_draft_tokens + other.num_draft_tokens,
            num_accepted_tokens=self.num_accepted_tokens + other.num_accepted_tokens,
            accepted_per_position=add(self.accepted_per_position, other.accepted_per_position),
            drafted_per_position=add(self.drafted_per_position, other.drafted_per_position),
            draft_time_s=self.draft_time_s + other.draft_time_s,
        )


@dataclass(frozen=True)
class RequestStats:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int  # prompt tokens served from the prefix cache
    submitted_s: float
    first_token_s: float | None
    finished_s: float
    ttft_s: float | None
    e2e_s: float
    tpot_s: float | None
    itl_s: tuple[float, ...]
    tokens_per_s: float | None  # completion tokens / (finished - first token)... see request_stats()
    prefill_tokens_per_s: float | None
    spec: SpecStats = field(default_factory=SpecStats)
    # per emission after the first: its gap over the tokens it brought (accepted drafts or a
    # burst of decode steps bring several), the time a decode step took per token
    token_gaps_s: tuple[float, ...] = ()


def percentile(values: list[float] | tuple[float, ...], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def request_stats(
    *,
    prompt_tokens: int,
    cached_prompt_tokens: int,
    submitted_s: float,
    emission_times_s: list[float],
    emission_counts: list[int],
    finished_s: float,
    prefill_time_s: float | None,
    spec: SpecStats,
) -> RequestStats:
    """Derive a request's figures from its emission timeline.

    emission_times_s[i] is when the engine emitted emission_counts[i] tokens (speculative steps
    emit several at once).
    """
    completion = sum(emission_counts)
    first = emission_times_s[0] if emission_times_s else None
    ttft = None if first is None else first - submitted_s
    e2e = finished_s - submitted_s
    itl = tuple(b - a for a, b in zip(emission_times_s, emission_times_s[1:]))
    gaps = tuple(g / n for g, n in zip(itl, emission_counts[1:]) if n > 0)
    tpot = None
    if ttft is not None and completion > 1:
        tpot = (e2e - ttft) / (completion - 1)
    tps = completion / e2e if e2e > 0 and completion else None
    prefill_tps = None
    if prefill_time_s and prefill_time_s > 0:
        prefill_tps = (prompt_tokens - cached_prompt_tokens) / prefill_time_s
    return RequestStats(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        cached_prompt_tokens=cached_prompt_tokens,
        submitted_s=submitted_s,
        first_token_s=first,
        finished_s=finished_s,
        ttft_s=ttft,
        e2e_s=e2e,
        tpot_s=tpot,
        itl_s=itl,
        tokens_per_s=tps,
        prefill_tokens_per_s=prefill_tps,
        spec=spec,
        token_gaps_s=gaps,
    )


@dataclass(frozen=True)
class StepPhases:
    """Where a step's wall time went, measured around each part (they partition the step)."""

    schedule_s: float = 0.0  # planning, prefix lookups, preemption
    draft_s: float = 0.0  # the drafter's proposals
    forward_s: float = 0.0  # the target's forward (prefill chunks, decode, verification rows)
    verify_s: float = 0.0  # accepting drafts / sampling tokens
    host_s: float = 0.0  # building inputs, bookkeeping, detokenising, emitting

    @property
    def total_s(self) -> float:
        return self.schedule_s + self.draft_s + self.forward_s + self.verify_s + self.host_s


@dataclass(frozen=True)
class RowActivity:
    """What one request did in one step (a lane of the step timeline)."""

    request_id: str
    num_prefill_tokens: int = 0  # prompt tokens computed this step
    num_output_tokens: int = 0  # tokens committed this step (0 during a prefill chunk)
    num_drafted: int = 0
    num_accepted: int = 0
    finished: bool = False


@dataclass(frozen=True)
class StepStats:
    timestamp_s: float
    step_time_s: float
    batch_size: int  # sequences computed this step
    num_waiting: int
    num_prefill_tokens: int  # prompt tokens computed this step
    num_output_tokens: int  # tokens committed this step (all rows)
    kv_cache_bytes: int  # bytes held by running sequences' cache tensors
    prefix_cache_bytes: int
    weights_bytes: int
    rss_bytes: int
    accelerator_bytes: int | None
    tokens_per_s: float  # engine-wide, sliding window
    spec: SpecStats = field(default_factory=SpecStats)
    spec_advice: object = None  # engine.spec.advisor.Advice while speculative decoding is on
    phases: StepPhases = field(default_factory=StepPhases)
    rows: tuple[RowActivity, ...] = ()  # one per request computed this step
    waiting_ids: tuple[str, ...] = ()  # requests queued, not computed this step
    preempted_ids: tuple[str, ...] = ()  # sent back to the queue this step
    prefix_cache_hits: int = 0  # lookups that found a cached prefix, since the engine started
    prefix_cache_misses: int = 0
    num_cached_prompt_tokens: int = 0  # prompt tokens adopted from the prefix cache this step
    decode_steps: int = 1  # forward steps this schedule ran (a burst of greedy decode steps runs several)


class SlidingRate:
    """Events per second over a sliding wall-clock window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    def add(self, t: float, count: int) -> None:
        self._events.append((t, count))
        self._total += count
        self._trim(t)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window_s:
            _, c = self._events.popleft()
            self._total -= c

    def rate(self, now: float) -> float:
        self._trim(now)
        if not self._events:
            return 0.0
        span = max(now - self._events[0][0], 1e-3)
        # with a single burst the span is tiny; bound it below by the window's fill time
        return self._total / max(span, min(self.window_s, 0.25))


_PROCESS = psutil.Process(os.getpid())


_RSS_CACHE = {"t": -1.0, "rss": 0}
RSS_REFRESH_S = 0.05


def process_rss_bytes(max_age_s: float = RSS_REFRESH_S) -> int:
    """Resident set size, re-read at most every max_age_s (the call costs a syscall)."""
    import time

    now = time.monotonic()
    if now - _RSS_CACHE["t"] > max_age_s:
        _RSS_CACHE["rss"] = _PROCESS.memory_info().rss
        _RSS_CACHE["t"] = now
    return _RSS_CACHE["rss"]


def accelerator_bytes() -> int | None:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.memory_allocated())
    return None
