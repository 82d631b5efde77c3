"""Continuous batching as a plan: which sequences compute how many tokens this step.

Every sequence knows how many of its tokens exist and how many are computed (cached);
prefill and decode are the same thing with different counts. Runs without a model.

This module is the one place where `num_computed_tokens` changes: a plan's tokens are
counted in `update` (with the drafts each row kept), a prefix-cache hit in `adopt_cached`,
a dropped cache in `reset_computed`.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field

from engine.config import BatchingConfig


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    status: SeqStatus = SeqStatus.WAITING
    arrival: int = 0  # FIFO order

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_pending(self) -> int:
        return self.num_tokens - self.num_computed_tokens


@dataclass(frozen=True)
class PlanEntry:
    seq: Sequence
    num_new_tokens: int
    completes: bool  # after this step every token is computed, so the sequence samples one


def _entry(seq: Sequence, n: int) -> PlanEntry:
    return PlanEntry(seq, n, seq.num_computed_tokens + n == seq.num_tokens)


@dataclass(frozen=True)
class RowOutcome:
    """What one planned row's forward left in the cache beyond its planned tokens."""

    num_draft_kept: int = 0  # draft tokens computed with the row and accepted (the rejected are holes)


@dataclass(frozen=True)
class SchedulePlan:
    entries: tuple[PlanEntry, ...]
    preempted: tuple[Sequence, ...]  # sent back to waiting (batch limit shrank)

    @property
    def num_tokens(self) -> int:
        return sum(e.num_new_tokens for e in self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)


class Scheduler:
    def __init__(self, config: BatchingConfig | None = None, *, chunked_prefill: bool = True) -> None:
        self.config = config or BatchingConfig()
        self.chunked_prefill = chunked_prefill  # False when there is no KV cache to hold chunks
        self.max_batch_override: int | None = None  # the core's isolation of a failing request
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self._arrivals = 0

    # ---- membership
    def add(self, seq: Sequence) -> None:
        seq.arrival = self._arrivals
        self._arrivals += 1
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def remove(self, request_id: str) -> Sequence | None:
        """Take a sequence out wherever it is (finished or aborted)."""
        for seq in self.running:
            if seq.request_id == request_id:
                self.running.remove(seq)
                seq.status = SeqStatus.FINISHED
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                seq.status = SeqStatus.FINISHED
                return seq
        return None

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def __len__(self) -> int:
        return len(self.waiting) + len(self.running)

    # ---- planning
    def schedule(self) -> SchedulePlan:
        limit = self.config.effective_max_batch
        if self.max_batch_override is not None:
            limit = min(limit, self.max_batch_override)
        preempted: list[Sequence] = []
        # The batch limit may have shrunk (batching switched off): the newest runners wait again.
        while len(self.running) > limit:
            seq = max(self.running, key=lambda s: s.arrival)
            self.running.remove(seq)
            seq.status = SeqStatus.WAITING
            preempted.append(seq)
        for seq in sorted(preempted, key=lambda s: s.arrival, reverse=True):
            self.waiting.appendleft(seq)

        budget = self.config.token_budget
        entries: list[PlanEntry] = []
        # Running sequences first, oldest first: each gets what it needs (1 when decoding).
        for seq in sorted(self.running, key=lambda s: s.arrival):
            n = self._grant(seq, budget, first=not entries)
            entries.append(_entry(seq, n))
            budget -= n
        while self.waiting and len(self.running) < limit and budget > 0:
            seq = self.waiting[0]
            n = self._grant(seq, budget, first=not entries)
            if n == 0:
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            entries.append(_entry(seq, n))
            budget -= n
        return SchedulePlan(tuple(entries), tuple(preempted))

    def _grant(self, seq: Sequence, budget: int, *, first: bool) -> int:
        need = seq.num_pending
        if need <= budget:
            return need
        if self.chunked_prefill:
            return max(budget, 1 if first else 0)
        # Without a cache a sequence cannot be computed in pieces: the first one always runs whole.
        return need if first else 0

    def update(self, plan: SchedulePlan, outcomes: dict[str, RowOutcome] | None = None, *,
               cache_kept: bool = True) -> None:
        """Record what the plan's forward computed: each row's planned tokens plus the draft tokens
        it kept. Without a cache nothing stays computed. The caller appends sampled tokens after."""
        if not cache_kept:
            self.reset_computed()
            return
        outcomes = outcomes or {}
        for entry in plan.entries:
            outcome = outcomes.get(entry.seq.request_id)
            entry.seq.num_computed_tokens += entry.num_new_tokens + (outcome.num_draft_kept if outcome else 0)

    def adopt_cached(self, seq: Sequence, num_tokens: int) -> None:
        """A waiting sequence found its first num_tokens in a cache (a prefix hit)."""
        if seq.status is not SeqStatus.WAITING or seq.num_computed_tokens:
            raise ValueError("only a waiting sequence with nothing computed can adopt a cached prefix")
        if not 0 <= num_tokens < seq.num_tokens:
            raise ValueError("a cached prefix must leave at least one token to compute")
        seq.num_computed_tokens = num_tokens

    def reset_computed(self) -> None:
        """The cache was dropped (KV off / weights changed): everything must be recomputed."""
        for seq in list(self.running) + list(self.waiting):
            seq.num_computed_tokens = 0
