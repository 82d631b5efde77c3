"""Engine state and the step function, run only on the engine thread (see engine.engine).

Who owns what: the scheduler (engine.scheduler) counts tokens; the KV manager
(engine.kv_manager) holds every cached tensor; the speculative decoder (engine.spec)
drafts and verifies; model loading lives in engine.loading. `step` reads as the plan:
schedule -> propose -> forward -> verify/sample -> update -> emit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, KVCacheMode, ModelSpec
from engine.events import FinishReason, TokenOrigin, now_s
from engine.kv import PrefixCache
from engine.kv_manager import KVManager, make_kv_manager
from engine.loading import ModelHost
from engine.metrics import (
    RowActivity,
    SlidingRate,
    SpecStats,
    StepPhases,
    StepStats,
    accelerator_bytes,
    process_rss_bytes,
    request_stats,
)
from engine.models import LoadedModel, ModelLoadError, context_length, embedding_rows
from engine.prompts import encode_request
from engine.runner import ModelRunner, RowInput
from engine.sampling import make_generator, sample
from engine.scheduler import PlanEntry, RowOutcome, SchedulePlan, Scheduler, Sequence
from engine.spec.decoder import SpecDecoder, VerifyResult
from engine.spec.drafters import DraftRequest
from engine.stopping import TextStream, finish_reason


MAX_DECODE_BURST = 8  # greedy decode steps one schedule may run in one native call
DECODE_BURST_BUDGET_S = 0.010  # forward time a burst may take (a late request waits at most this)


@dataclass
class Request:
    """Engine-side bookkeeping of one request; `seq` is what the scheduler sees of it."""

    seq: Sequence
    request: GenerateRequest
    submitted_s: float
    stream: TextStream
    generator: torch.Generator
    eos_ids: set[int]
    cached_prompt_tokens: int = 0
    emission_times: list[float] = field(default_factory=list)
    emission_counts: list[int] = field(default_factory=list)
    origins: list[TokenOrigin] = field(default_factory=list)
    prefill_time_s: float = 0.0
    spec: SpecStats = field(default_factory=SpecStats)
    config_spans: list[ev.ConfigSpan] = field(default_factory=list)  # every config it ran under


class EngineCore(ModelHost):
    def __init__(self, emit: Callable[[ev.EngineEvent], None], config: EngineConfig,
                 initial_model: ModelSpec | LoadedModel | None) -> None:
        self.emit = emit
        self.config = config
        self.initial_model = initial_model
        self.loaded: LoadedModel | None = None
        self._context_of: tuple[LoadedModel, int | None] | None = None
        self.max_decode_burst = MAX_DECODE_BURST  # 1: one decode step per schedule, always
        self._decode_s: dict[int, float] = {}  # batch size -> forward time of its last decode step
        self.runner: ModelRunner | None = None
        self.scheduler = Scheduler(config.batching, chunked_prefill=config.kv_cache is not KVCacheMode.OFF)
        self.prefix_cache = PrefixCache(config.prefix_cache_max_bytes)
        self.kv: KVManager = make_kv_manager(config.kv_cache is not KVCacheMode.OFF,
                                             config.kv_cache is KVCacheMode.PREFIX, self.prefix_cache)
        self.rate = SlidingRate(5.0)
        self.stop_event = threading.Event()  # set by Engine.shutdown from another thread
        self.collect_garbage = True  # False when hosted by a GUI that collects on its own thread
        self.spec: SpecDecoder | None = None
        self._reqs: dict[str, Request] = {}
        self._suspects: set[str] = set()  # requests of a failed batched step, stepped one at a time
        self._plan_ids: tuple[str, ...] = ()  # requests of the step in progress

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> None:
        self.emit(ev.StateChanged(ev.EngineState.IDLE, "started"))
        if isinstance(self.initial_model, LoadedModel):
            self._install(self.initial_model)  # weights shared with other engines (engine.pool)
            self.emit(ev.ModelLoaded(info=self.initial_model.info))
            self._configure_spec_after_load()
        elif self.initial_model is not None:
            self.load(self.initial_model)

    def has_work(self) -> bool:
        return self.loaded is not None and self.scheduler.has_work()

    # ------------------------------------------------------------------ commands
    def add_request(self, request: GenerateRequest, submitted_s: float) -> None:
        """Admit a request, or end it at once with one clear error; never raises."""
        try:
            req = self._make_request(request, submitted_s)
        except Exception as exc:  # noqa: BLE001 - a bad request ends alone, with its reason
            message = str(exc) if isinstance(exc, (ValueError, ModelLoadError)) else f"{type(exc).__name__}: {exc}"
            self.refuse(request, submitted_s, message)
            return
        self._reqs[req.seq.request_id] = req
        self.scheduler.add(req.seq)
        self.emit(ev.RequestQueued(request_id=req.seq.request_id, prompt_tokens=len(req.seq.prompt_ids),
                                   tag=request.tag))

    def _make_request(self, request: GenerateRequest, submitted_s: float) -> Request:
        rid = request.request_id
        if self.loaded is None:
            raise ValueError("no model is loaded")
        if rid in self._reqs:
            raise ValueError(f"request id {rid!r} is already in use")
        tok = self.loaded.tokenizer
        try:
            prompt_ids = encode_request(request, tok)
        except Exception as exc:  # noqa: BLE001 - chat templates raise anything (TemplateError, ...)
            raise ValueError(f"could not build the prompt: {type(exc).__name__}: {exc}") from exc
        rows = embedding_rows(self.loaded.model)
        if rows is not None and prompt_ids and max(prompt_ids) >= rows:
            raise ValueError(f"prompt token id {max(prompt_ids)} is outside the model's vocabulary (0..{rows - 1})")
        max_ctx = self._max_context()
        if max_ctx and len(prompt_ids) >= max_ctx:
            raise ValueError(f"prompt is {len(prompt_ids)} tokens; the model's context is {max_ctx}")
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        gen_eos = getattr(getattr(self.loaded.model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return Request(
            seq=Sequence(request_id=rid, prompt_ids=list(prompt_ids)),
            request=request,
            submitted_s=submitted_s,
            stream=TextStream(tok, stop=tuple(request.sampling.stop)),
            generator=make_generator(request.sampling.seed, self.loaded.device),
            eos_ids=eos_ids,
            config_spans=[ev.ConfigSpan(0, self.config.describe())],
        )

    def refuse(self, request: GenerateRequest, submitted_s: float, error: str) -> None:
        """End a request that never started with its one terminal event."""
        stats = request_stats(prompt_tokens=0, cached_prompt_tokens=0, submitted_s=submitted_s,
                              emission_times_s=[], emission_counts=[], finished_s=now_s(),
                              prefill_time_s=None, spec=SpecStats())
        self.emit(ev.RequestFinished(request_id=request.request_id, reason=FinishReason.ERROR, text="",
                                     token_ids=(), stats=stats, config_label=self.config.describe(),
                                     error=error, tag=request.tag))

    def abort(self, request_id: str) -> None:
        if request_id in self._reqs:
            self._finish(self._reqs[request_id], FinishReason.CANCELLED)

    def apply_config(self, new: EngineConfig) -> None:
        old = self.config
        if new == old:
            self.emit(ev.ConfigApplied(config_dict=new.to_dict(), label=new.describe(), changes=(), config=new))
            return
        changes = describe_changes(old, new)
        if new.quantisation is not old.quantisation and self.loaded is not None:
            self._requantise(new)
        try:
            self._apply_speculative(new)
        except Exception:
            # keep what did apply (a new quantisation level) and the old speculative setting
            self.config = new.with_(speculative=old.speculative)
            raise
        self.config = new
        self.scheduler.config = new.batching
        self.prefix_cache.set_max_bytes(new.prefix_cache_max_bytes)
        self._set_kv_mode(old.kv_cache, new.kv_cache)
        self._mark_config_spans()
        self.emit(ev.ConfigApplied(config_dict=new.to_dict(), label=new.describe(), changes=changes, config=new))

    def _set_kv_mode(self, old: KVCacheMode, new: KVCacheMode) -> None:
        was_on, on = old is not KVCacheMode.OFF, new is not KVCacheMode.OFF
        if was_on != on:
            self._drop_cache()
            self.kv = make_kv_manager(on, new is KVCacheMode.PREFIX, self.prefix_cache)
            self.scheduler.chunked_prefill = on
        elif on:
            self.kv.reuse_prefixes = new is KVCacheMode.PREFIX
        if new is not KVCacheMode.PREFIX:
            self.prefix_cache.clear()

    def _mark_config_spans(self) -> None:
        label = self.config.describe()
        for req in self._reqs.values():
            spans, first = req.config_spans, len(req.seq.output_ids)
            if spans and spans[-1].label == label:
                continue
            if spans and spans[-1].first_token == first:
                spans.pop()  # nothing ran under the previous one
            if not spans or spans[-1].label != label:
                spans.append(ev.ConfigSpan(first, label))

    def _drop_cache(self) -> None:
        self.kv.drop()
        self.scheduler.reset_computed()
        if self.spec is not None:
            self.spec.reset()

    def cancel_all(self, why: str = "") -> None:
        for req in list(self._reqs.values()):
            self._finish(req, FinishReason.CANCELLED, error=why or None)

    def step_failed(self, exc: BaseException) -> None:
        """An exception escaped a step. Fail only the request that caused it: a step of one
        request fails that request; a batched step's requests are stepped one at a time until
        the culprit fails alone (the others go on). The cache may be half-written: drop it."""
        message = f"{type(exc).__name__}: {exc}"
        live = [rid for rid in self._plan_ids if rid in self._reqs]
        self._plan_ids = ()
        self._drop_cache()
        if len(live) == 1:
            self._suspects.discard(live[0])
            self.emit(ev.EngineErrorEvent(message=f"request {live[0]} failed: {message}", where=ev.ErrorSite.ENGINE))
            self._finish(self._reqs[live[0]], FinishReason.ERROR, error=message)
        elif live:
            self._suspects.update(live)
            self.emit(ev.EngineErrorEvent(
                message=f"a batched step failed ({message}); running its {len(live)} requests one at a time "
                        "to find the one that caused it", where=ev.ErrorSite.ENGINE))
        else:
            self.emit(ev.EngineErrorEvent(message=message, where=ev.ErrorSite.ENGINE))
        self.scheduler.max_batch_override = 1 if self._suspects else None

    # ------------------------------------------------------------------ the step
    def step(self) -> None:
        if self.stop_event.is_set():
            return
        t0 = time.perf_counter()
        cached_now = self._adopt_prefix_hits()
        plan = self.scheduler.schedule()
        for seq in plan.preempted:
            self.kv.preempt(seq)
            if self.spec is not None:
                self.spec.forget(seq.request_id)
        if not plan:
            return
        self._plan_ids = tuple(e.seq.request_id for e in plan.entries)
        t_sched = time.perf_counter()
        drafts = self._propose(plan)
        t_draft = time.perf_counter()
        prefill = self._count_prefill(plan)
        burst = self._burst_length(plan, drafts)
        t_fwd = time.perf_counter()
        tokens = self.kv.greedy_burst(self.runner, plan, burst) if burst > 1 else None
        if tokens is not None:
            t_verify = t_host = time.perf_counter()
            self._decode_s[len(plan.entries)] = (t_verify - t_fwd) / burst
            outputs = {rid: VerifyResult(token_ids=ids, origins=[TokenOrigin.TARGET] * len(ids), stats=SpecStats(),
                                         num_rejected=0) for rid, ids in tokens.items()}
            # each row computed the token it was fed and the burst's first burst - 1 outputs
            kept = {rid: RowOutcome(burst - 1) for rid in outputs}
        else:
            burst = 1
            rows = [RowInput(e.seq.request_id, self.kv.tokens_to_compute(e) + drafts.get(e.seq.request_id, []),
                             (1 + len(drafts.get(e.seq.request_id, []))) if e.completes else 0)
                    for e in plan.entries]
            logits = self.kv.forward(self.runner, plan, rows)
            t_verify = time.perf_counter()
            if not drafts and not prefill:
                self._decode_s[len(plan.entries)] = t_verify - t_fwd
            greedy = self._greedy_tokens(plan, drafts, logits)
            outputs = {e.seq.request_id: self._verify_or_sample(e, drafts, logits, greedy)
                       for e in plan.entries if e.completes}
            t_host = time.perf_counter()
            kept = {rid: RowOutcome(o.num_draft_kept) for rid, o in outputs.items()}
        self.scheduler.update(plan, kept, cache_kept=self.kv.keeps_cache)
        for rid, out in outputs.items():
            if out.num_rejected:
                self.kv.reject_tail(rid, out.num_rejected)
        phases = StepPhases(schedule_s=t_sched - t0, draft_s=t_draft - t_sched, forward_s=t_verify - t_fwd,
                            verify_s=t_host - t_verify, host_s=t_fwd - t_draft)  # + emit time, added there
        self._emit_step(plan, outputs, prefill, phases, cached_now, t0, t_host, burst)

    def _burst_length(self, plan: SchedulePlan, drafts: dict[str, list[int]]) -> int:
        """How many decode steps this schedule runs in one native call (1 = an ordinary step).

        A step of a small model on a CPU spends ~0.5 ms in Python around a ~1 ms forward
        (scheduling, inputs, sampling, detokenising, events). When every row of the batch is
        decoding greedily, the next steps' inputs are the previous steps' argmaxes, so several
        steps can run in C back to back (as vLLM's multi-step scheduling does) and the Python
        around them is paid once. The burst is kept to about DECODE_BURST_BUDGET_S of forward
        time (measured on this batch size's last decode step), so a request arriving meanwhile,
        a cancel or a settings change waits no longer than that; it never passes a row's
        max_new_tokens or the context window. An EOS or a stop string inside a burst ends the
        row there (the steps after it are computed and dropped)."""
        if not self.config.batching.decode_bursts or self.max_decode_burst < 2 or self.spec is not None \
                or drafts or not self.kv.keeps_cache:
            return 1
        entries = plan.entries
        fast = self.runner.fast if self.runner is not None else None
        if not entries or self._suspects or fast is None or not fast.can_greedy_steps \
                or len(entries) != len(self.kv.batch.row_ids):
            return 1
        per_step = self._decode_s.get(len(entries))
        if not per_step:
            return 1  # an ordinary step measures it first
        n = min(self.max_decode_burst, int(DECODE_BURST_BUDGET_S / per_step))
        max_ctx = self._max_context()
        for e in entries:
            seq = e.seq
            if not e.completes or e.num_new_tokens != 1 or seq.request_id not in self.kv.batch.row_ids:
                return 1
            req = self._reqs[seq.request_id]
            if not req.request.sampling.greedy:
                return 1
            n = min(n, req.request.sampling.max_new_tokens - len(seq.output_ids))
            if max_ctx:
                n = min(n, max_ctx - seq.num_tokens)
            if n < 2:
                return 1
        return n

    def _adopt_prefix_hits(self) -> int:
        waiting = list(self.scheduler.waiting)[: self.config.batching.effective_max_batch]
        hits = self.kv.lookup_prefixes(waiting)
        for rid, n in hits.items():
            req = self._reqs[rid]
            self.scheduler.adopt_cached(req.seq, n)
            req.cached_prompt_tokens = n
        return sum(hits.values())

    def _propose(self, plan: SchedulePlan) -> dict[str, list[int]]:
        """Drafts for this step; a drafter that fails turns speculation off, not the requests."""
        if self.spec is None:
            return {}
        asks = []
        for entry in plan.entries:
            if entry.completes:
                req = self._reqs[entry.seq.request_id]
                k = min(self.spec.k_for(req.seq.request_id), self._draft_room(req))
                asks.append(DraftRequest(req.seq.request_id, req.seq.token_ids, k, req.request.sampling,
                                         req.generator))
        try:
            return self.spec.propose(asks, self.kv.keeps_cache)
        except Exception as exc:  # noqa: BLE001 - the target can go on without drafts
            self.spec.reset()
            self.spec = None
            self.config = self.config.with_(speculative=EngineConfig().speculative)
            self._mark_config_spans()
            self.emit(ev.EngineErrorEvent(message=f"speculative decoding turned off: the drafter failed "
                                                  f"({type(exc).__name__}: {exc})", where=ev.ErrorSite.CONFIG))
            self.emit(ev.ConfigApplied(config_dict=self.config.to_dict(), label=self.config.describe(),
                                       changes=("spec off",), config=self.config))
            return {}

    def _draft_room(self, req: Request) -> int:
        """Draft no more tokens than the request may still emit or the context can hold."""
        room = req.request.sampling.max_new_tokens - len(req.seq.output_ids) - 1
        max_ctx = self._max_context()
        if max_ctx:
            room = min(room, max_ctx - req.seq.num_tokens - 1)
        return room

    def _count_prefill(self, plan: SchedulePlan) -> dict[str, int]:
        """Prompt tokens each row computes this step (a cache-less step recomputes, not prefills)."""
        if not self.kv.keeps_cache:
            return {}
        out = {}
        for e in plan.entries:
            done = e.seq.num_computed_tokens
            n = max(0, min(len(e.seq.prompt_ids), done + e.num_new_tokens) - done)
            if n:
                out[e.seq.request_id] = n
        return out

    def _greedy_tokens(self, plan: SchedulePlan, drafts: dict[str, list[int]],
                       logits: dict[str, torch.Tensor]) -> dict[str, int]:
        """The argmax of every greedy row without drafts, in one operation over the batch (one
        argmax per row cost ~10 us a row at batch 8); the same first maximum as per row."""
        rows = [e.seq.request_id for e in plan.entries
                if e.completes and not drafts.get(e.seq.request_id) and self._reqs[e.seq.request_id].request.sampling.greedy]
        if len(rows) < 2:
            return {}
        best = torch.stack([logits[rid][-1] for rid in rows]).argmax(dim=-1).tolist()
        return dict(zip(rows, best))

    def _verify_or_sample(self, entry: PlanEntry, drafts: dict[str, list[int]],
                          logits: dict[str, torch.Tensor], greedy: dict[str, int]) -> VerifyResult:
        req = self._reqs[entry.seq.request_id]
        draft = drafts.get(entry.seq.request_id)
        row_logits = logits[entry.seq.request_id]  # [1 + len(draft), vocab]
        if draft:
            return self.spec.verify(entry.seq.request_id, draft, row_logits, req.request.sampling, req.generator)
        token = greedy.get(entry.seq.request_id)
        if token is None:
            token = sample(row_logits[-1], req.request.sampling, req.generator)
        return VerifyResult(token_ids=[token], origins=[TokenOrigin.TARGET], stats=SpecStats(), num_rejected=0)

    def _emit_step(self, plan: SchedulePlan, outputs: dict[str, VerifyResult], prefill: dict[str, int],
                   phases: StepPhases, cached_now: int, t0: float, t_host: float, decode_steps: int = 1) -> None:
        t_emit = now_s()
        committed = 0
        step_spec = SpecStats()
        activity = []
        for rid in prefill:
            self._reqs[rid].prefill_time_s += phases.forward_s
        for entry in plan.entries:
            rid = entry.seq.request_id
            out = outputs.get(rid)
            n = 0
            if out is not None:
                req = self._reqs[rid]
                if out.stats.num_drafts:
                    req.spec = req.spec.merged(out.stats)
                    step_spec = step_spec.merged(out.stats)
                n = self._append_tokens(req, out.token_ids, out.origins, t_emit)
                committed += n
            activity.append(RowActivity(
                request_id=rid, num_prefill_tokens=prefill.get(rid, 0), num_output_tokens=n,
                num_drafted=out.stats.num_draft_tokens if out is not None else 0,
                num_accepted=out.stats.num_accepted_tokens if out is not None else 0,
                finished=rid not in self._reqs))
        if self.spec is not None:
            self.spec.after_step(phases.forward_s)
        self.rate.add(t_emit, committed)
        self._plan_ids = ()
        if self._suspects:
            self._suspects.difference_update(e.seq.request_id for e in plan.entries)
            self._suspects.intersection_update(self._reqs)
            if not self._suspects:
                self.scheduler.max_batch_override = None  # culprit gone or never found: batch again
        self.kv.after_step()
        stats = self._step_stats(t_emit, len(plan.entries), sum(prefill.values()), committed, step_spec, cached_now)
        t_end = time.perf_counter()
        phases = replace(phases, host_s=phases.host_s + (t_end - t_host))
        self.emit(ev.StepCompleted(stats=replace(
            stats, step_time_s=t_end - t0, phases=phases, rows=tuple(activity), decode_steps=decode_steps,
            waiting_ids=tuple(s.request_id for s in self.scheduler.waiting),
            preempted_ids=tuple(s.request_id for s in plan.preempted))))

    def _append_tokens(self, req: Request, new_ids: list[int], origins: list[TokenOrigin], t: float) -> int:
        seq, sampling = req.seq, req.request.sampling
        # cut at EOS and at max_new_tokens (speculative steps may overshoot both)
        room = sampling.max_new_tokens - len(seq.output_ids)
        new_ids, origins = new_ids[:room], origins[:room]
        if not sampling.ignore_eos:
            for i, tok in enumerate(new_ids):
                if tok in req.eos_ids:
                    new_ids, origins = new_ids[: i + 1], origins[: i + 1]
                    break
        # an EOS can only be the last of new_ids now: the visible tokens are a prefix of them
        visible = [x for x in new_ids if x not in req.eos_ids] if not sampling.ignore_eos else new_ids
        delta, pieces = req.stream.add(visible)
        if req.stream.kept < len(visible):  # a stop string ended the text inside these tokens
            new_ids, origins = new_ids[:req.stream.kept], origins[:req.stream.kept]
        seq.output_ids.extend(new_ids)
        req.origins.extend(origins)
        req.emission_times.append(t)
        req.emission_counts.append(len(new_ids))
        self.emit(ev.TokensGenerated(request_id=seq.request_id, text=delta, token_ids=tuple(new_ids),
                                     origins=tuple(origins), token_texts=pieces, timestamp_s=t))
        max_ctx = self._max_context()
        reason = finish_reason(new_ids=new_ids, num_output=len(seq.output_ids),
                               max_new_tokens=sampling.max_new_tokens, eos_ids=req.eos_ids,
                               ignore_eos=sampling.ignore_eos, stopped_by_string=req.stream.stopped_by_string,
                               context_full=bool(max_ctx) and seq.num_tokens >= max_ctx)
        if reason is not None:
            self._finish(req, reason)
        return len(new_ids)

    def _finish(self, req: Request, reason: FinishReason, error: str | None = None) -> None:
        seq = req.seq
        rid = seq.request_id
        self.kv.release(seq, reusable=reason is not FinishReason.ERROR)
        if self.spec is not None:
            self.spec.forget(rid)
        self.scheduler.remove(rid)
        self._reqs.pop(rid, None)
        tail = req.stream.flush()
        if tail:
            self.emit(ev.TokensGenerated(request_id=rid, text=tail, token_ids=(), origins=()))
        stats = request_stats(
            prompt_tokens=len(seq.prompt_ids),
            cached_prompt_tokens=req.cached_prompt_tokens,
            submitted_s=req.submitted_s,
            emission_times_s=req.emission_times,
            emission_counts=req.emission_counts,
            finished_s=now_s(),
            prefill_time_s=req.prefill_time_s or None,
            spec=req.spec,
        )
        self.emit(ev.RequestFinished(request_id=rid, reason=reason, text=req.stream.text,
                                     token_ids=tuple(seq.output_ids), stats=stats,
                                     config_label=self.config.describe(), error=error, tag=req.request.tag,
                                     config_spans=tuple(req.config_spans)))

    # ------------------------------------------------------------------ helpers
    def _max_context(self) -> int | None:
        """The loaded model's context window (asked for every row of every step: kept per model)."""
        loaded = self.loaded
        if loaded is None:
            return None
        if self._context_of is None or self._context_of[0] is not loaded:
            self._context_of = (loaded, context_length(loaded.model.config))
        return self._context_of[1]

    def _step_stats(self, t: float, batch: int, prefill: int, committed: int,
                    spec: SpecStats, cached_now: int) -> StepStats:
        kv_bytes = self.kv.nbytes + (self.spec.kv_bytes() if self.spec is not None else 0)
        return StepStats(
            timestamp_s=t,
            step_time_s=0.0,  # set when the step's last part is timed
            batch_size=batch,
            num_waiting=len(self.scheduler.waiting),
            num_prefill_tokens=prefill,
            num_output_tokens=committed,
            kv_cache_bytes=kv_bytes,
            prefix_cache_bytes=self.prefix_cache.nbytes,
            weights_bytes=self.loaded.info.weights_bytes + (self.spec.weights_bytes() if self.spec else 0),
            rss_bytes=process_rss_bytes(),
            accelerator_bytes=accelerator_bytes(),
            tokens_per_s=self.rate.rate(t),
            spec=spec,
            spec_advice=self.spec.advice() if self.spec is not None else None,
            prefix_cache_hits=self.prefix_cache.hits,
            prefix_cache_misses=self.prefix_cache.misses,
            num_cached_prompt_tokens=cached_now,
        )


def describe_changes(old: EngineConfig, new: EngineConfig) -> tuple[str, ...]:
    out = []
    if old.kv_cache is not new.kv_cache:
        out.append(f"kv {new.kv_cache.value}")
    if old.batching != new.batching:
        out.append(f"batch {new.batching.max_batch_size}" if new.batching.enabled else "batching off")
    if old.quantisation is not new.quantisation:
        out.append(new.quantisation.value)
    if old.speculative != new.speculative:
        s = new.speculative
        if s.mode.value == "off":
            out.append("spec off")
        else:
            out.append(f"spec {s.mode.value} " + ("adaptive" if s.adaptive else f"k={s.num_draft_tokens}"))
    return tuple(out)
