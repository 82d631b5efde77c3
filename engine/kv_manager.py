"""All of the target's KV in one owner: the batch cache, the prefix cache, the caches of
preempted or prefix-hit sequences waiting to rejoin, staging of joining rows, compaction.

Two managers behind one surface, so the engine step has no KV-on/off branches:
`CachedKV` keeps every computed token; `NoKV` keeps nothing after a step (every step
recomputes each sequence from its first token).
"""

from __future__ import annotations

import abc

import torch

from engine.kv import BatchKV, PrefixCache, RowKV, compact_if_holey
from engine.runner import ModelRunner, RowInput
from engine.scheduler import PlanEntry, SchedulePlan, Sequence


class KVManager(abc.ABC):
    keeps_cache: bool  # whether computed tokens stay computed after a step

    def __init__(self, prefix: PrefixCache) -> None:
        self.prefix = prefix  # outlives a switch between managers (kept, bounded, LRU)

    @abc.abstractmethod
    def tokens_to_compute(self, entry: PlanEntry) -> list[int]:
        """The token ids the plan entry feeds to the model this step."""

    @abc.abstractmethod
    def forward(self, runner: ModelRunner, plan: SchedulePlan, rows: list[RowInput]) -> dict[str, torch.Tensor]:
        """One step of the plan; logits per row that asked for them."""

    def reject_tail(self, request_id: str, num_tokens: int) -> None:
        """The row's last num_tokens computed tokens were rejected drafts: make them holes."""

    def lookup_prefixes(self, waiting: list[Sequence]) -> dict[str, int]:
        """Prefix hits for waiting sequences: request id -> cached tokens adopted."""
        return {}

    def preempt(self, seq: Sequence) -> None:
        """The sequence goes back to waiting: keep what it computed to rejoin with."""

    def release(self, seq: Sequence, *, reusable: bool) -> None:
        """The sequence ended; when reusable and prefix reuse is on, offer its cache to the prefix cache."""

    def drop(self) -> None:
        """Forget everything computed (weights changed, a step failed half-way)."""

    def after_step(self) -> None:
        """Housekeeping between steps (compaction)."""

    @property
    def nbytes(self) -> int:
        return 0


class NoKV(KVManager):
    keeps_cache = False

    def tokens_to_compute(self, entry: PlanEntry) -> list[int]:
        return entry.seq.token_ids

    def forward(self, runner, plan, rows):
        return runner.step_uncached(rows)


class CachedKV(KVManager):
    keeps_cache = True

    def __init__(self, prefix: PrefixCache, *, reuse_prefixes: bool) -> None:
        super().__init__(prefix)
        self.batch = BatchKV()
        self.reuse_prefixes = reuse_prefixes
        self._stash: dict[str, RowKV] = {}  # caches of sequences not in the batch right now

    def tokens_to_compute(self, entry: PlanEntry) -> list[int]:
        seq = entry.seq
        return seq.token_ids[seq.num_computed_tokens: seq.num_computed_tokens + entry.num_new_tokens]

    def forward(self, runner, plan, rows):
        """Rows already in the batch cache step together; sequences joining this step are
        prefilled in a forward of their own and then merged in. Computing a joiner's prompt
        inside the running batch would pad every running row to the prompt's length."""
        batch = self.batch
        joining = [e.seq for e in plan.entries if e.seq.request_id not in batch.row_ids]
        if not batch.row_ids:
            # nobody is running: the joiners are the batch (their cached prefixes copied in once)
            batch.add_rows([s.request_id for s in joining], [self._take_stash(s) for s in joining])
            return runner.step_cached(rows, kv=batch)
        joining_ids = {s.request_id for s in joining}
        logits = runner.step_cached([r for r in rows if r.row_id not in joining_ids], kv=batch)
        if joining:
            staging = BatchKV()
            staging.add_rows([s.request_id for s in joining], [self._take_stash(s) for s in joining])
            logits.update(runner.step_cached([r for r in rows if r.row_id in joining_ids], kv=staging))
            # views are enough: add_rows copies them into the batch before staging goes away
            batch.add_rows([s.request_id for s in joining],
                           [staging.extract(s.request_id, copy=False) for s in joining])
        return logits

    def greedy_burst(self, runner, plan, steps: int) -> dict[str, list[int]] | None:
        """`steps` greedy decode steps of every row of the batch in one native call, each row
        fed its last token, then its own argmax (ModelRunner.greedy_steps); None where that
        loop does not run (the caller takes one ordinary step)."""
        first = {e.seq.request_id: e.seq.token_ids[e.seq.num_computed_tokens] for e in plan.entries}
        return runner.greedy_steps(self.batch, first, steps)

    def _take_stash(self, seq: Sequence) -> RowKV | None:
        """The cache a joining sequence brings (prefix hit or preemption), if it still matches."""
        stash = self._stash.pop(seq.request_id, None)
        if stash is None or stash.num_tokens != seq.num_computed_tokens:
            return None
        return stash

    def reject_tail(self, request_id: str, num_tokens: int) -> None:
        self.batch.invalidate_tail(request_id, num_tokens)

    def lookup_prefixes(self, waiting: list[Sequence]) -> dict[str, int]:
        if not self.reuse_prefixes:
            return {}
        hits = {}
        for seq in waiting:
            if seq.num_computed_tokens or seq.output_ids or seq.request_id in self._stash:
                continue
            row = self.prefix.lookup(tuple(seq.prompt_ids), max_tokens=len(seq.prompt_ids) - 1)
            if row is not None:
                self._stash[seq.request_id] = row
                hits[seq.request_id] = row.num_tokens
        return hits

    def preempt(self, seq: Sequence) -> None:
        if seq.request_id in self.batch.row_ids:
            self._stash[seq.request_id] = self.batch.extract(seq.request_id)
            self.batch.remove_rows([seq.request_id])

    def release(self, seq: Sequence, *, reusable: bool) -> None:
        rid = seq.request_id
        self._stash.pop(rid, None)
        if rid not in self.batch.row_ids:
            return
        if reusable and self.reuse_prefixes and seq.num_computed_tokens > 0:
            # a step may have computed past where the sequence ended (an EOS or a stop string
            # inside a burst of decode steps or inside accepted drafts): its first len(token_ids)
            # columns are exactly its tokens' keys
            row = self.batch.extract(rid, num_tokens=len(seq.token_ids))
            self.prefix.store(tuple(seq.token_ids[: row.num_tokens]), row)
        self.batch.remove_rows([rid])

    def drop(self) -> None:
        self.batch.clear()
        self._stash.clear()

    def after_step(self) -> None:
        compact_if_holey(self.batch)

    @property
    def nbytes(self) -> int:
        return self.batch.nbytes


def make_kv_manager(kv_on: bool, reuse_prefixes: bool, prefix: PrefixCache) -> KVManager:
    return CachedKV(prefix, reuse_prefixes=reuse_prefixes) if kv_on else NoKV(prefix)
