"""Speculative decoding inside the engine step: propose drafts, verify them, keep the books."""

from __future__ import annotations

import time

import torch

from engine.config import EngineConfig, ModelSpec, SpeculativeConfig, SpeculativeMode
from engine.events import LoadProgress, LoadTarget, TokenOrigin
from engine.metrics import SpecStats
from engine.models import ModelLoadError, context_length, embedding_rows, load_model
from engine.scheduler import SchedulePlan, Sequence
from engine.spec.advisor import Advice, advise, next_k
from engine.spec.drafters import Draft, Drafter, DraftRequest, ModelDrafter, NgramDrafter
from engine.spec.verify import accept_greedy, accept_sampling
from engine.sampling import filtered_probs

EMA = 0.1  # weight of the newest step in the running acceptance / cost estimates


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

    def propose(self, plan: SchedulePlan, kv_on: bool, room) -> dict[str, list[int]]:
        """Drafts for the rows that will sample this step. room(seq) caps k per row."""
        reqs = []
        for entry in plan.entries:
            if not entry.completes:
                continue
            seq = entry.seq
            k = min(self.k_for(seq.request_id), room(seq))
            if k <= 0:
                continue
            st = seq.state["r"]
            reqs.append(DraftRequest(seq.request_id, seq.token_ids, k, st.request.sampling, st.generator))
        t0 = time.perf_counter()
        drafts = self.drafter.propose(reqs, kv_on)
        self._step_draft_s = time.perf_counter() - t0
        self._step_drafted = sum(len(d.tokens) for d in drafts.values())
        self._pending = drafts
        return {rid: d.tokens for rid, d in drafts.items()}

    def verify(self, seq: Sequence, draft: list[int], logits: torch.Tensor, st) -> tuple[list[int], list[TokenOrigin], SpecStats]:
        """logits: [len(draft)+1, vocab] from the target. Returns committed ids, origins, stats."""
        pending = self._pending.pop(seq.request_id)
        sampling = st.request.sampling
        if sampling.greedy:
            new_ids = accept_greedy(draft, logits)
        else:
            p = filtered_probs(logits, sampling)
            new_ids = accept_sampling(draft, p, pending.probs, st.generator)
        accepted = len(new_ids) - 1
        k = len(draft)
        self.drafter.observe(seq.request_id, k, accepted)
        if self.config.adaptive:
            self._k[seq.request_id] = next_k(self.k_for(seq.request_id), accepted, 1, 16)
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
        return new_ids, origins, stats

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


def configure_spec(core, old: EngineConfig, new: EngineConfig) -> SpecDecoder | None:
    """Build (or keep) the decoder for the new config, loading a draft model if needed."""
    cfg = new.speculative
    current: SpecDecoder | None = core.spec
    if cfg.mode is SpeculativeMode.OFF:
        if current is not None:
            current.reset()
        return None
    if cfg.mode is SpeculativeMode.NGRAM:
        if current is not None and isinstance(current.drafter, NgramDrafter):
            current.config = cfg
            return current
        return SpecDecoder(NgramDrafter(cfg.ngram_max, cfg.ngram_min), cfg)
    if core.loaded is None:
        raise ModelLoadError("load a target model before choosing a draft model")
    if not cfg.draft_model:
        raise ModelLoadError("speculative decoding with a draft model needs a draft model: choose one")
    if current is not None and isinstance(current.drafter, ModelDrafter) and current.draft_name == cfg.draft_model:
        current.config = cfg
        return current

    def progress(fraction: float, message: str) -> None:
        core.emit(LoadProgress(what=LoadTarget.DRAFT, fraction=fraction, message=message))

    draft = load_model(ModelSpec(cfg.draft_model, device=core.loaded.spec.device, dtype=core.loaded.spec.dtype),
                       progress=progress)
    check_same_tokenizer(core.loaded.tokenizer, draft.tokenizer, cfg.draft_model)
    check_draft_fits(core.loaded.model, draft.model, cfg.draft_model)
    drafter = ModelDrafter(draft.model, draft.device, core.loaded.tokenizer.pad_token_id, draft.info.weights_bytes)
    if current is not None:
        current.reset()
    progress(1.0, "draft ready")
    return SpecDecoder(drafter, cfg, draft_name=cfg.draft_model)
