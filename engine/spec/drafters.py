"""Drafters behind one small interface: propose k tokens per row, learn from acceptance."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from engine.config import SamplingParams
from engine.kv import BatchKV, compact_if_holey
from engine.runner import ModelRunner, RowInput
from engine.sampling import filtered_probs


@dataclass(frozen=True)
class DraftRequest:
    row_id: str
    token_ids: list[int]  # the sequence so far
    k: int
    sampling: SamplingParams
    generator: torch.Generator


@dataclass(frozen=True)
class Draft:
    tokens: list[int]
    probs: torch.Tensor | None  # [k, vocab] draft distribution, None for deterministic drafters


class Drafter(abc.ABC):

    @abc.abstractmethod
    def propose(self, requests: list[DraftRequest], use_cache: bool) -> dict[str, Draft]:
        """Up to `k` draft tokens for each request (rows may get fewer, or none)."""

    def observe(self, row_id: str, num_drafted: int, num_accepted: int) -> None:
        """Called after verification with how many of the proposed tokens were accepted."""

    def forget(self, row_id: str) -> None:
        """The row left (finished, aborted, preempted)."""

    def reset(self) -> None:
        """All cached state is stale (cache dropped, weights changed)."""

    def kv_bytes(self) -> int:
        return 0

    def weights_bytes(self) -> int:
        return 0


class NgramDrafter(Drafter):
    """Prompt lookup: find the latest earlier occurrence of the sequence's last n tokens and
    propose the tokens that followed it. No extra model."""

    def __init__(self, n_max: int = 3, n_min: int = 1) -> None:
        self.n_max, self.n_min = n_max, n_min

    def propose(self, requests: list[DraftRequest], use_cache: bool) -> dict[str, Draft]:
        out = {}
        for r in requests:
            tokens = lookup(r.token_ids, r.k, self.n_max, self.n_min)
            if tokens:
                out[r.row_id] = Draft(tokens, None)
        return out


def lookup(ids: list[int], k: int, n_max: int, n_min: int) -> list[int]:
    """Tokens that followed an earlier occurrence of the last n tokens (longest n first).

    Among the occurrences, the most recent one that still has k tokens after it wins; the
    very latest match often overlaps the tail and would only offer a token or two.
    """
    length = len(ids)
    for n in range(min(n_max, length - 1), n_min - 1, -1):
        tail = ids[length - n:]
        best: list[int] = []
        for start in range(length - n - 1, -1, -1):
            if ids[start:start + n] == tail:
                follow = ids[start + n: start + n + k]
                if len(follow) > len(best):
                    best = follow
                    if len(best) == k:
                        break
        if best:
            return best
    return []


class ModelDrafter(Drafter):
    """A small causal LM drafting autoregressively with its own batch KV cache."""

    SINGLE_THREAD_MAX_PARAMS = 10_000_000

    def __init__(self, model: torch.nn.Module, device: torch.device, pad_token_id: int, weights: int) -> None:
        small = sum(p.numel() for p in model.parameters()) <= self.SINGLE_THREAD_MAX_PARAMS
        self.runner = ModelRunner(model, device, pad_token_id)
        # torch's forward of a small model is faster on one thread (too little work per operator
        # to pay for OpenMP's fork/join); the native decode forward is not (bundled draft, spec
        # with k=4: 369-409 tok/s on one thread, 426-472 on two), and switching the thread
        # count between draft and target steps made runs differ by 10 %
        fast = self.runner.fast
        if small and not (fast is not None and fast.native):
            self.runner.cpu_threads = 1 if device.type == "cpu" else None
        self.kv = BatchKV()  # the draft's own cache, one row per sequence it drafts for
        self._computed: dict[str, int] = {}  # tokens of each row held in the draft cache
        self._weights = weights

    def propose(self, requests: list[DraftRequest], use_cache: bool) -> dict[str, Draft]:
        if not requests:
            return {}
        if not use_cache:
            return self._propose_uncached(requests)
        kv = self.kv
        new_rows = [r.row_id for r in requests if r.row_id not in kv.row_ids]
        kv.add_rows(new_rows, [None] * len(new_rows))
        for rid in new_rows:
            self._computed[rid] = 0
        steps = self._greedy_from_one_token(requests)
        if steps is not None:
            return steps
        drafts = {r.row_id: [] for r in requests}
        probs: dict[str, list[torch.Tensor]] = {r.row_id: [] for r in requests}
        # first pass: catch up on everything the draft has not seen, take one logit
        rows = [RowInput(r.row_id, r.token_ids[self._computed[r.row_id]:], 1) for r in requests]
        for r in requests:
            self._computed[r.row_id] = len(r.token_ids)
        logits = self.runner.step_cached(rows, kv=self.kv)
        if self._greedy_in_one_call(requests, logits, drafts):
            return {rid: Draft(toks, None) for rid, toks in drafts.items()}
        active = list(requests)
        for step in range(max(r.k for r in requests)):
            for r in active:
                tok, pr = self._pick(logits[r.row_id][-1], r)
                drafts[r.row_id].append(tok)
                if pr is not None:
                    probs[r.row_id].append(pr)
            active = [r for r in active if len(drafts[r.row_id]) < r.k]
            if not active:
                break
            rows = [RowInput(r.row_id, [drafts[r.row_id][-1]], 1) for r in active]
            for r in active:
                self._computed[r.row_id] += 1
            logits = self.runner.step_cached(rows, kv=self.kv)
        return {rid: Draft(toks, torch.stack(probs[rid]) if probs[rid] else None) for rid, toks in drafts.items()}

    def _greedy_from_one_token(self, requests: list[DraftRequest]) -> dict[str, Draft] | None:
        """Greedy rows that each have one token the draft has not seen (the target's bonus token
        after a rejection) draft all k tokens in one native call, catch-up included: the same
        tokens as a catch-up pass and then k - 1 steps, without a second forward's Python
        (~0.15 ms of a bundled-draft proposal). None where the general path must run."""
        k = requests[0].k
        if k < 1 or any(r.k != k or not r.sampling.greedy or len(r.token_ids) - self._computed[r.row_id] != 1
                        for r in requests) or {r.row_id for r in requests} != set(self.kv.row_ids):
            return None
        out = self.runner.greedy_steps(self.kv, {r.row_id: r.token_ids[-1] for r in requests}, k)
        if out is None:
            return None
        for r in requests:
            self._computed[r.row_id] = len(r.token_ids) + k - 1  # the bonus token and drafts 1..k-1
        return {r.row_id: Draft(list(out[r.row_id]), None) for r in requests}

    def _greedy_in_one_call(self, requests: list[DraftRequest], logits: dict[str, torch.Tensor],
                            drafts: dict[str, list[int]]) -> bool:
        """Greedy rows that all draft k tokens: the first from the catch-up pass's logits, the
        other k - 1 in one native call (ModelRunner.greedy_steps) instead of k - 1 engine steps
        (each paid ~0.2 ms of Python around a 0.05 ms forward of the bundled draft)."""
        k = requests[0].k
        if k < 2 or any(r.k != k or not r.sampling.greedy for r in requests):
            return False
        first = {r.row_id: int(logits[r.row_id][-1].argmax()) for r in requests}
        rest = self.runner.greedy_steps(self.kv, first, k - 1)
        if rest is None:
            return False
        for r in requests:
            drafts[r.row_id] = [first[r.row_id], *rest[r.row_id]]
            self._computed[r.row_id] += k - 1
        return True

    def _propose_uncached(self, requests: list[DraftRequest]) -> dict[str, Draft]:
        self.kv.clear()
        self._computed.clear()
        seqs = {r.row_id: list(r.token_ids) for r in requests}
        drafts = {r.row_id: [] for r in requests}
        probs: dict[str, list[torch.Tensor]] = {r.row_id: [] for r in requests}
        active = list(requests)
        while active:
            logits = self.runner.step_uncached([RowInput(r.row_id, seqs[r.row_id], 1) for r in active])
            for r in active:
                tok, pr = self._pick(logits[r.row_id][-1], r)
                drafts[r.row_id].append(tok)
                seqs[r.row_id].append(tok)
                if pr is not None:
                    probs[r.row_id].append(pr)
            active = [r for r in active if len(drafts[r.row_id]) < r.k]
        return {rid: Draft(toks, torch.stack(probs[rid]) if probs[rid] else None) for rid, toks in drafts.items()}

    @staticmethod
    def _pick(logits: torch.Tensor, r: DraftRequest) -> tuple[int, torch.Tensor | None]:
        if r.sampling.greedy:
            return int(logits.argmax()), None
        p = filtered_probs(logits, r.sampling)
        return int(torch.multinomial(p.cpu(), 1, generator=r.generator)), p

    def observe(self, row_id: str, num_drafted: int, num_accepted: int) -> None:
        """Keep the accepted drafts' KV; the rejected ones become holes.

        The draft cache holds the sequence before this step plus drafts 1..k-1 (draft k was
        never fed back). After acceptance the sequence holds drafts 1..a plus a target token.
        """
        if row_id not in self.kv.row_ids or row_id not in self._computed:
            return
        fed = num_drafted - 1
        keep = min(num_accepted, fed)
        drop = fed - keep
        if drop:
            self.kv.invalidate_tail(row_id, drop)
        self._computed[row_id] -= drop

    def forget(self, row_id: str) -> None:
        if row_id in self.kv.row_ids:
            self.kv.remove_rows([row_id])
        self._computed.pop(row_id, None)

    def reset(self) -> None:
        self.kv.clear()
        self._computed.clear()

    def compact(self) -> None:
        compact_if_holey(self.kv)

    def kv_bytes(self) -> int:
        return self.kv.nbytes

    def weights_bytes(self) -> int:
        return self._weights
