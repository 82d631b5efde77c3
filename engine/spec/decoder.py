"""Speculative decoding inside the engine step: propose drafts, verify them, keep the books."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from engine.config import ModelSpec, SamplingParams, SpeculativeConfig, SpeculativeMode
from engine.events import TokenOrigin
from engine.metrics import SpecStats
from engine.models import LoadedModel, ModelLoadError, context_length, embedding_rows, load_model
from engine.spec.advisor import Advice, advise, next_k
from engine.spec.drafters import Draft, Drafter, DraftRequest, ModelDrafter, NgramDrafter
from engine.spec.verify import accept_greedy, accept_sampling
from engine.sampling import filtered_probs

EMA = 0.1  # weight of the newest step in the running acceptance / cost estimates


@dataclass(frozen=True)
class VerifyResult:
    token_ids: list[int]  # accepted drafts, then the target's own token
    origins: list[TokenOrigin]  # one per token id
    stats: SpecStats
    num_rejected: int  # draft tokens computed with the row and rejected (now holes in the cache)

    @property
    def num_draft_kept(self) -> int:
        return len(self.token_ids) - 1


class SpecDecoder:
    def __init__(self, drafter: Drafter, config: SpeculativeConfig, draft_name: str | None = None) -> None:
        self.drafter = drafter
        self.config = config
        self.draft_name = draft_name
        self._k: dict[str, int] = {}
        self._pending: dict[str, Draft] = {}
        self.acceptance_ema: float | None = None
        self.draft_token_s: float | None = None  # seconds per drafted token (all rows)
        self.verify_step_s: float | None = None
        self._step_drafted = 0
        self._step_draft_s = 0.0

    # ---- per step
    def k_for(self, request_id: str) -> int:
        return self._k.get(request_id, self.config.num_draft_tokens)

    def propose(self, requests: list[DraftRequest], use_cache: bool) -> dict[str, list[int]]:
        """Drafts for rows that sample this step; each request's k already fits its room."""
        requests = [r for r in requests if r.k > 0]
        t0 = time.perf_counter()
        drafts = self.drafter.propose(requests, use_cache) if requests else {}
        self._step_draft_s = time.perf_counter() - t0
        self._step_drafted = sum(len(d.tokens) for d in drafts.values())
        self._pending = drafts
        return {rid: d.tokens for rid, d in drafts.items()}

    def verify(self, request_id: str, draft: list[int], logits: torch.Tensor, sampling: SamplingParams,
               generator: torch.Generator) -> VerifyResult:
        """logits: [len(draft)+1, vocab] from the target -> the tokens to commit, and the books."""
        pending = self._pending.pop(request_id)
        if sampling.greedy:
            new_ids = accept_greedy(draft, logits)
        else:
            p = filtered_probs(logits, sampling)
            new_ids = accept_sampling(draft, p, pending.probs, generator)
        accepted = len(new_ids) - 1
        k = len(draft)
        self.drafter.observe(request_id, k, accepted)
        if self.config.adaptive:
            self._k[request_id] = next_k(self.k_for(request_id), accepted, 1, 16)
        origins = [TokenOrigin.DRAFT] * accepted + [TokenOrigin.TARGET]
        share = self._step_draft_s * (k / self._step_drafted) if self._step_drafted else 0.0
        stats = SpecStats(
            num_drafts=1,
            num_draft_tokens=k,
            num_accepted_tokens=accepted,
            accepted_per_position=tuple(1 if i < accepted else 0 for i in range(k)),
            drafted_per_position=(1,) * k,
            draft_time_s=share,
        )
        rate = accepted / k
        self.acceptance_ema = rate if self.acceptance_ema is None else (1 - EMA) * self.acceptance_ema + EMA * rate
        return VerifyResult(token_ids=new_ids, origins=origins, stats=stats, num_rejected=k - accepted)

    def after_step(self, forward_s: float) -> None:
        if self._step_drafted:
            per_token = self._step_draft_s / self._step_drafted
            self.draft_token_s = per_token if self.draft_token_s is None else (1 - EMA) * self.draft_token_s + EMA * per_token
            self.verify_step_s = forward_s if self.verify_step_s is None else (1 - EMA) * self.verify_step_s + EMA * forward_s
        if isinstance(self.drafter, ModelDrafter):
            self.drafter.compact()
        self._pending.clear()

    def advice(self) -> Advice | None:
        if self.acceptance_ema is None or not self.verify_step_s or self.draft_token_s is None:
            return None
        return advise(self.acceptance_ema, self.draft_token_s / self.verify_step_s)

    # ---- lifecycle
    def forget(self, request_id: str) -> None:
        self._k.pop(request_id, None)
        self._pending.pop(request_id, None)
        self.drafter.forget(request_id)

    def reset(self) -> None:
        self.drafter.reset()

    def kv_bytes(self) -> int:
        return self.drafter.kv_bytes()

    def weights_bytes(self) -> int:
        return self.drafter.weights_bytes()


def check_same_tokenizer(target_tok, draft_tok, draft_name: str) -> None:
    if target_tok.get_vocab() != draft_tok.get_vocab():
        raise ModelLoadError(
            f"The draft model {draft_name} uses a different tokenizer from the target "
            f"({len(draft_tok)} vs {len(target_tok)} tokens, or different ids); speculative decoding "
            "needs a draft that shares the target's tokenizer"
        )


def check_draft_fits(target, draft, draft_name: str) -> None:
    """The draft's logits must index the target's vocabulary, and its context must hold every
    sequence the target can run; refuse at configure time rather than fail every request."""
    t_rows, d_rows = embedding_rows(target), embedding_rows(draft)
    t_out = target.get_output_embeddings().weight.shape[0] if target.get_output_embeddings() is not None else t_rows
    d_out = draft.get_output_embeddings().weight.shape[0] if draft.get_output_embeddings() is not None else d_rows
    if d_out != t_out or (t_rows is not None and d_rows is not None and d_rows < t_rows):
        raise ModelLoadError(
            f"The draft model {draft_name} has a vocabulary of {d_out} tokens and the target {t_out}; "
            "speculative decoding needs the same vocabulary size")
    t_ctx, d_ctx = context_length(target.config), context_length(draft.config)
    if t_ctx is not None and d_ctx is not None and d_ctx < t_ctx:
        raise ModelLoadError(
            f"The draft model {draft_name} has a context of {d_ctx} tokens, shorter than the target's {t_ctx}; "
            "it could not draft for long conversations")


def configure_spec(current: SpecDecoder | None, target: LoadedModel | None, cfg: SpeculativeConfig,
                   progress: Callable[[float, str], None]) -> SpecDecoder | None:
    """The decoder for `cfg` over `target`: the current one kept where it still fits, a draft
    model loaded (and checked against the target) where one is needed."""
    if cfg.mode is SpeculativeMode.OFF:
        if current is not None:
            current.reset()
        return None
    if cfg.mode is SpeculativeMode.NGRAM:
        if current is not None and isinstance(current.drafter, NgramDrafter):
            current.config = cfg
            return current
        return SpecDecoder(NgramDrafter(cfg.ngram_max, cfg.ngram_min), cfg)
    if target is None:
        raise ModelLoadError("load a target model before choosing a draft model")
    if not cfg.draft_model:
        raise ModelLoadError("speculative decoding with a draft model needs a draft model: choose one")
    if current is not None and isinstance(current.drafter, ModelDrafter) and current.draft_name == cfg.draft_model:
        current.config = cfg
        return current
    draft = load_model(ModelSpec(cfg.draft_model, device=target.spec.device, dtype=target.spec.dtype),
                       progress=progress)
    check_same_tokenizer(target.tokenizer, draft.tokenizer, cfg.draft_model)
    check_draft_fits(target.model, draft.model, cfg.draft_model)
    drafter = ModelDrafter(draft.model, draft.device, target.tokenizer.pad_token_id, draft.info.weights_bytes)
    if current is not None:
        current.reset()
    progress(1.0, "draft ready")
    return SpecDecoder(drafter, cfg, draft_name=cfg.draft_model)
