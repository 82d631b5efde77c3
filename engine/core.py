"""Engine state and the step function, run only on the engine thread (see engine.engine)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, SpeculativeMode
from engine.events import EngineState, FinishReason, TokenOrigin, now_s
from engine.kv import BatchKV, PrefixCache
from engine.metrics import SlidingRate, SpecStats, StepStats, accelerator_bytes, process_rss_bytes, request_stats
from engine.models import LoadedModel, ModelLoadError, context_length, embedding_rows, load_model, resolve_dtype
from engine.quant import load_plan
from engine.prompts import encode_request
from engine.runner import ModelRunner, RowInput
from engine.sampling import make_generator, sample
from engine.scheduler import Scheduler, Sequence
from engine.spec.decoder import configure_spec
from engine.stopping import TextStream, finish_reason

COMPACT_HOLE_FRACTION = 0.5
COMPACT_MIN_WIDTH = 64


@dataclass
class ReqState:
    """Engine-side bookkeeping of one request (lives in Sequence.state['r'])."""

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
    stash: object = None  # RowKV kept while preempted / found in the prefix cache
    config_spans: list[ev.ConfigSpan] = field(default_factory=list)  # every config it ran under


class EngineCore:
    def __init__(self, emit: Callable[[ev.EngineEvent], None], config: EngineConfig,
                 initial_model: ModelSpec | LoadedModel | None) -> None:
        self.emit = emit
        self.config = config
        self.initial_model = initial_model
        self.loaded: LoadedModel | None = None
        self.runner: ModelRunner | None = None
        self.scheduler = Scheduler(config.batching, chunked_prefill=config.kv_cache is not KVCacheMode.OFF)
        self.prefix_cache = PrefixCache(config.prefix_cache_max_bytes)
        self.rate = SlidingRate(5.0)
        self.stop_event = threading.Event()  # set by Engine.shutdown from another thread
        self._suspects: set[str] = set()  # requests of a failed batched step, stepped one at a time
        self._plan_ids: tuple[str, ...] = ()  # requests of the step in progress
        self.collect_garbage = True  # False when hosted by a GUI that collects on its own thread
        self.spec = None  # engine.spec.SpecDecoder when speculative decoding is on
        self._seqs: dict[str, Sequence] = {}

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> None:
        self.emit(ev.StateChanged(EngineState.IDLE, "started"))
        if isinstance(self.initial_model, LoadedModel):
            self._install(self.initial_model)  # weights shared with other engines (engine.pool)
            self.emit(ev.ModelLoaded(info=self.initial_model.info))
            self._configure_spec_after_load()
        elif self.initial_model is not None:
            self.load(self.initial_model)

    def has_work(self) -> bool:
        return self.loaded is not None and self.scheduler.has_work()

    def load(self, spec: ModelSpec) -> None:
        """Load a model; on failure keep the previous one and say why."""
        self.emit(ev.StateChanged(EngineState.LOADING, spec.name_or_path))

        def progress(fraction: float, message: str) -> None:
            self.emit(ev.LoadProgress(what=ev.LoadTarget.MODEL, fraction=fraction, message=message))

        try:
            loaded = load_model(spec, self.config.quantisation, progress)
        except Exception as exc:  # noqa: BLE001 - any load failure keeps the old model
            message = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            self.emit(ev.EngineErrorEvent(message=message, where=ev.ErrorSite.LOAD))
            self.emit(ev.StateChanged(EngineState.IDLE, "load failed"))
            return
        # A different model means different token ids: requests in flight cannot continue.
        self.cancel_all("model changed")
        self._install(loaded)
        self.emit(ev.LoadProgress(what=ev.LoadTarget.MODEL, fraction=1.0, message="loaded"))
        self.emit(ev.ModelLoaded(info=loaded.info))
        self._configure_spec_after_load()

    def _configure_spec_after_load(self) -> None:
        # a new target needs its drafter checked again (tokenizer, device)
        self.spec = None
        if self.config.speculative.mode is not SpeculativeMode.OFF:
            try:
                self.spec = configure_spec(self, EngineConfig(), self.config)
            except Exception as exc:  # noqa: BLE001 - a bad draft must not take the target down
                self.config = self.config.with_(speculative=EngineConfig().speculative)
                self.emit(ev.EngineErrorEvent(message=f"speculative decoding turned off: {exc}", where=ev.ErrorSite.CONFIG))
        self.emit(ev.StateChanged(EngineState.IDLE, "model loaded"))

    def _install(self, loaded: LoadedModel) -> None:
        old = self.loaded
        self.loaded = loaded
        self.runner = ModelRunner(loaded.model, loaded.device, loaded.tokenizer.pad_token_id)
        self.prefix_cache.clear()
        self.scheduler.reset_computed()
        for seq in self._seqs.values():
            seq.state["r"].stash = None
        del old
        _free_memory(self.collect_garbage)

    # ------------------------------------------------------------------ commands
    def add_request(self, request: GenerateRequest, submitted_s: float) -> None:
        """Admit a request, or end it at once with one clear error; never raises."""
        try:
            seq = self._make_sequence(request, submitted_s)
        except Exception as exc:  # noqa: BLE001 - a bad request ends alone, with its reason
            message = str(exc) if isinstance(exc, (ValueError, ModelLoadError)) else f"{type(exc).__name__}: {exc}"
            self.refuse(request, submitted_s, message)
            return
        self._seqs[seq.request_id] = seq
        self.scheduler.add(seq)
        self.emit(ev.RequestQueued(request_id=seq.request_id, prompt_tokens=len(seq.prompt_ids), tag=request.tag))

    def _make_sequence(self, request: GenerateRequest, submitted_s: float) -> Sequence:
        rid = request.request_id
        if self.loaded is None:
            raise ValueError("no model is loaded")
        if rid in self._seqs:
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
        state = ReqState(
            request=request,
            submitted_s=submitted_s,
            stream=TextStream(tok, stop=tuple(request.sampling.stop)),
            generator=make_generator(request.sampling.seed, self.loaded.device),
            eos_ids=eos_ids,
            config_spans=[ev.ConfigSpan(0, self.config.describe())],
        )
        return Sequence(request_id=rid, prompt_ids=list(prompt_ids), state={"r": state})

    def refuse(self, request: GenerateRequest, submitted_s: float, error: str) -> None:
        """End a request that never started with its one terminal event."""
        self._finish_unstarted(request, submitted_s, error)

    def _finish_unstarted(self, request: GenerateRequest, submitted_s: float, error: str) -> None:
        t = now_s()
        stats = request_stats(prompt_tokens=0, cached_prompt_tokens=0, submitted_s=submitted_s,
                              emission_times_s=[], emission_counts=[], finished_s=t,
                              prefill_time_s=None, spec=SpecStats())
        self.emit(ev.RequestFinished(request_id=request.request_id, reason=FinishReason.ERROR, text="",
                                     token_ids=(), stats=stats, config_label=self.config.describe(),
                                     error=error, tag=request.tag))

    def abort(self, request_id: str) -> None:
        if request_id in self._seqs:
            self._finish(self._seqs[request_id], FinishReason.CANCELLED)

    def apply_config(self, new: EngineConfig) -> None:
        old = self.config
        if new == old:
            self.emit(ev.ConfigApplied(config_dict=new.to_dict(), label=new.describe(), changes=(), config=new))
            return
        changes = describe_changes(old, new)
        if new.quantisation is not old.quantisation and self.loaded is not None:
            self._requantise(new)
        try:
            self._apply_speculative(self.config, new)
        except Exception:
            # keep what did apply (a new quantisation level) and the old speculative setting
            self.config = new.with_(speculative=old.speculative)
            raise
        self.config = new
        self.scheduler.config = new.batching
        self.scheduler.chunked_prefill = new.kv_cache is not KVCacheMode.OFF
        self.prefix_cache.set_max_bytes(new.prefix_cache_max_bytes)
        if new.kv_cache is KVCacheMode.OFF and old.kv_cache is not KVCacheMode.OFF:
            self._drop_cache()
        if new.kv_cache is not KVCacheMode.PREFIX:
            self.prefix_cache.clear()
        self._mark_config_spans()
        self.emit(ev.ConfigApplied(config_dict=new.to_dict(), label=new.describe(), changes=changes, config=new))

    def _mark_config_spans(self) -> None:
        label = self.config.describe()
        for seq in self._seqs.values():
            spans = seq.state["r"].config_spans
            first = len(seq.output_ids)
            if spans and spans[-1].label == label:
                continue
            if spans and spans[-1].first_token == first:
                spans.pop()  # nothing ran under the previous one
            if not spans or spans[-1].label != label:
                spans.append(ev.ConfigSpan(first, label))

    def _requantise(self, new: EngineConfig) -> None:
        """Load the weights at the new level; requests in flight pause and re-prefill after."""
        spec = self.loaded.spec
        # refuse before touching anything when the level cannot run here
        load_plan(new.quantisation, model_config=self.loaded.model.config, device=self.loaded.device,
                  base_dtype=resolve_dtype(spec.dtype, self.loaded.device))
        self.emit(ev.StateChanged(EngineState.LOADING, f"quantising to {new.quantisation.value}"))

        def progress(fraction: float, message: str) -> None:
            self.emit(ev.LoadProgress(what=ev.LoadTarget.QUANTISE, fraction=fraction, message=message))

        if _room_for_second_copy(self.loaded.info.weights_bytes, self.loaded.device):
            # keep serving on what is loaded until the new weights are in: a failed load changes nothing
            try:
                loaded = load_model(spec, new.quantisation, progress)
            finally:
                self.emit(ev.StateChanged(EngineState.RUNNING if self.scheduler.has_work() else EngineState.IDLE))
        else:
            loaded = self._reload_in_place(spec, new, progress)
        self._install(loaded)
        self.emit(ev.ModelLoaded(info=loaded.info))
        if loaded.skipped_modules:
            self.emit(ev.EngineErrorEvent(
                message=f"{new.quantisation.value}: kept {len(loaded.skipped_modules)} layers in full precision "
                        f"(input size not a multiple of 64): {', '.join(loaded.skipped_modules[:4])}"
                        + ("…" if len(loaded.skipped_modules) > 4 else ""),
                where=ev.ErrorSite.CONFIG))
        self.emit(ev.StateChanged(EngineState.RUNNING if self.scheduler.has_work() else EngineState.IDLE))

    def _reload_in_place(self, spec: ModelSpec, new: EngineConfig, progress) -> LoadedModel:
        """Too little memory for two copies: free the old weights first. If neither the new nor
        the old level loads again (the directory moved), end the requests in flight clearly."""
        self._drop_cache()
        self.runner = None
        old_level = self.loaded.quantisation
        # drop our references only: weights shared with other engines (engine.pool) stay alive there
        self.loaded = None
        _free_memory(self.collect_garbage)
        try:
            return load_model(spec, new.quantisation, progress)
        except Exception as first:
            try:
                self._install(load_model(spec, old_level, progress))
            except Exception as second:  # noqa: BLE001 - nothing to serve on: say so to everyone waiting
                self.spec = None
                for seq in list(self._seqs.values()):
                    self._finish(seq, FinishReason.ERROR,
                                 error=f"the model could not be reloaded after a failed quantisation: {second}")
                self.emit(ev.StateChanged(EngineState.IDLE, "no model loaded"))
                raise ModelLoadError(f"quantising failed ({first}) and the previous weights could not be "
                                     f"reloaded ({second}); load a model") from first
            self.emit(ev.StateChanged(EngineState.RUNNING if self.scheduler.has_work() else EngineState.IDLE))
            raise

    def _apply_speculative(self, old: EngineConfig, new: EngineConfig) -> None:
        self.spec = configure_spec(self, old, new)

    def _drop_cache(self) -> None:
        if self.runner is not None:
            self.runner.kv.clear()
        self.scheduler.reset_computed()
        for seq in self._seqs.values():
            seq.state["r"].stash = None
        if self.spec is not None:
            self.spec.reset()

    def cancel_all(self, why: str = "") -> None:
        for seq in list(self._seqs.values()):
            self._finish(seq, FinishReason.CANCELLED, error=why or None)

    def step_failed(self, exc: BaseException, details: str = "") -> None:
        """An exception escaped a step. Fail only the request that caused it: a step of one
        request fails that request; a batched step's requests are stepped one at a time until
        the culprit fails alone (the others go on). The cache may be half-written: drop it."""
        message = f"{type(exc).__name__}: {exc}"
        live = [rid for rid in self._plan_ids if rid in self._seqs]
        self._plan_ids = ()
        self._drop_cache()
        if len(live) == 1:
            self._suspects.discard(live[0])
            self.emit(ev.EngineErrorEvent(message=f"request {live[0]} failed: {message}", where=ev.ErrorSite.ENGINE))
            self._finish(self._seqs[live[0]], FinishReason.ERROR, error=message)
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
        kv_on = self.config.kv_cache is not KVCacheMode.OFF
        if kv_on and self.config.kv_cache is KVCacheMode.PREFIX:
            self._lookup_prefixes()
        plan = self.scheduler.schedule()
        for seq in plan.preempted:
            self._stash(seq)
        if not plan:
            return
        self._plan_ids = tuple(e.seq.request_id for e in plan.entries)
        drafts = self._propose(plan, kv_on)
        rows = []
        for entry in plan.entries:
            seq = entry.seq
            draft = drafts.get(seq.request_id, [])
            if kv_on:
                new = seq.token_ids[seq.num_computed_tokens: seq.num_computed_tokens + entry.num_new_tokens]
            else:
                new = seq.token_ids
            n_logits = (1 + len(draft)) if entry.completes else 0
            rows.append(RowInput(seq.request_id, list(new) + list(draft), n_logits))
        t_fwd = time.perf_counter()
        if kv_on:
            logits = self._forward_cached(plan, rows)
        else:
            logits = self.runner.step_uncached(rows)
        forward_s = time.perf_counter() - t_fwd
        self.scheduler.update(plan)
        if not kv_on:
            self.scheduler.reset_computed()
        t_emit = now_s()
        committed = 0
        prefill_tokens = 0
        step_spec = SpecStats()
        for entry in plan.entries:
            seq = entry.seq
            st: ReqState = seq.state["r"]
            prompt_part = max(0, min(len(seq.prompt_ids), seq.num_computed_tokens) -
                              (seq.num_computed_tokens - entry.num_new_tokens)) if kv_on else 0
            if prompt_part > 0:
                prefill_tokens += prompt_part
                st.prefill_time_s += forward_s
            if not entry.completes:
                continue
            draft = drafts.get(seq.request_id, [])
            row_logits = logits[seq.request_id]  # [1 + len(draft), vocab]
            if draft:
                new_ids, origins, spec_stats = self.spec.verify(seq, draft, row_logits, st)
                st.spec = st.spec.merged(spec_stats)
                step_spec = step_spec.merged(spec_stats)
                rejected = len(draft) - (len(new_ids) - 1)
                if kv_on:
                    # the verified draft tokens were computed; the rejected ones become holes
                    seq.num_computed_tokens += len(draft) - rejected
                    self.runner.kv.invalidate_tail(seq.request_id, rejected)
            else:
                new_ids = [sample(row_logits[-1], st.request.sampling, st.generator)]
                origins = [TokenOrigin.TARGET]
            committed += self._append_tokens(seq, new_ids, origins, t_emit)
        if self.spec is not None:
            self.spec.after_step(forward_s)
        self.rate.add(t_emit, committed)
        self._plan_ids = ()
        if self._suspects:
            self._suspects.difference_update(e.seq.request_id for e in plan.entries)
            self._suspects.intersection_update(self._seqs)
            if not self._suspects:
                self.scheduler.max_batch_override = None  # culprit gone or never found: batch again
        self._maybe_compact()
        step_s = time.perf_counter() - t0
        self.emit(ev.StepCompleted(stats=self._step_stats(t_emit, step_s, len(plan.entries), prefill_tokens,
                                                          committed, step_spec)))

    def _propose(self, plan, kv_on: bool) -> dict[str, list[int]]:
        """Drafts for this step; a drafter that fails turns speculation off, not the requests."""
        if self.spec is None:
            return {}
        try:
            return self.spec.propose(plan, kv_on, self._draft_room)
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

    def _draft_room(self, seq: Sequence) -> int:
        """Draft no more tokens than the request may still emit or the context can hold."""
        room = seq.state["r"].request.sampling.max_new_tokens - len(seq.output_ids) - 1
        max_ctx = self._max_context()
        if max_ctx:
            room = min(room, max_ctx - seq.num_tokens - 1)
        return room

    def _append_tokens(self, seq: Sequence, new_ids: list[int], origins: list[TokenOrigin], t: float) -> int:
        st: ReqState = seq.state["r"]
        sampling = st.request.sampling
        # cut at EOS and at max_new_tokens (speculative steps may overshoot both)
        room = sampling.max_new_tokens - len(seq.output_ids)
        new_ids, origins = new_ids[:room], origins[:room]
        if not sampling.ignore_eos:
            for i, tok in enumerate(new_ids):
                if tok in st.eos_ids:
                    new_ids, origins = new_ids[: i + 1], origins[: i + 1]
                    break
        seq.output_ids.extend(new_ids)
        st.origins.extend(origins)
        st.emission_times.append(t)
        st.emission_counts.append(len(new_ids))
        visible = [x for x in new_ids if x not in st.eos_ids] if not sampling.ignore_eos else new_ids
        delta, pieces = st.stream.add(visible)
        self.emit(ev.TokensGenerated(request_id=seq.request_id, text=delta, token_ids=tuple(new_ids),
                                     origins=tuple(origins), token_texts=pieces, timestamp_s=t))
        max_ctx = self._max_context()
        reason = finish_reason(new_ids=new_ids, num_output=len(seq.output_ids),
                               max_new_tokens=sampling.max_new_tokens, eos_ids=st.eos_ids,
                               ignore_eos=sampling.ignore_eos, stopped_by_string=st.stream.stopped_by_string,
                               context_full=bool(max_ctx) and seq.num_tokens >= max_ctx)
        if reason is not None:
            self._finish(seq, reason)
        return len(new_ids)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
        st: ReqState = seq.state["r"]
        rid = seq.request_id
        runner = self.runner
        if runner is not None and rid in runner.kv.row_ids:
            if (self.config.kv_cache is KVCacheMode.PREFIX and reason is not FinishReason.ERROR
                    and seq.num_computed_tokens > 0):
                row = runner.kv.extract(rid)
                self.prefix_cache.store(tuple(seq.token_ids[: row.num_tokens]), row)
            runner.kv.remove_rows([rid])
        if self.spec is not None:
            self.spec.forget(rid)
        self.scheduler.remove(rid)
        self._seqs.pop(rid, None)
        st.stash = None
        tail = st.stream.flush()
        if tail:
            self.emit(ev.TokensGenerated(request_id=rid, text=tail, token_ids=(), origins=()))
        stats = request_stats(
            prompt_tokens=len(seq.prompt_ids),
            cached_prompt_tokens=st.cached_prompt_tokens,
            submitted_s=st.submitted_s,
            emission_times_s=st.emission_times,
            emission_counts=st.emission_counts,
            finished_s=now_s(),
            prefill_time_s=st.prefill_time_s or None,
            spec=st.spec,
        )
        self.emit(ev.RequestFinished(request_id=rid, reason=reason, text=st.stream.text,
                                     token_ids=tuple(seq.output_ids), stats=stats,
                                     config_label=self.config.describe(), error=error, tag=st.request.tag,
                                     config_spans=tuple(st.config_spans)))

    # ------------------------------------------------------------------ cache helpers
    def _lookup_prefixes(self) -> None:
        limit = self.config.batching.effective_max_batch
        for seq in list(self.scheduler.waiting)[:limit]:
            st: ReqState = seq.state["r"]
            if seq.num_computed_tokens or st.stash is not None or seq.output_ids:
                continue
            row = self.prefix_cache.lookup(tuple(seq.prompt_ids), max_tokens=len(seq.prompt_ids) - 1)
            if row is not None:
                st.stash = row
                st.cached_prompt_tokens = row.num_tokens
                seq.num_computed_tokens = row.num_tokens

    def _stash(self, seq: Sequence) -> None:
        if self.runner is not None and seq.request_id in self.runner.kv.row_ids:
            seq.state["r"].stash = self.runner.kv.extract(seq.request_id)
            self.runner.kv.remove_rows([seq.request_id])
        if self.spec is not None:
            self.spec.forget(seq.request_id)

    def _forward_cached(self, plan, rows: list[RowInput]) -> dict[str, torch.Tensor]:
        """Rows already in the batch cache step together; sequences joining this step are
        prefilled in a forward of their own and then merged in. Computing a joiner's prompt
        inside the running batch would pad every running row to the prompt's length."""
        kv = self.runner.kv
        joining = {e.seq.request_id for e in plan.entries if e.seq.request_id not in kv.row_ids}
        logits = self.runner.step_cached([r for r in rows if r.row_id not in joining])
        if joining:
            staging = BatchKV()
            seqs = [e.seq for e in plan.entries if e.seq.request_id in joining]
            staging.add_rows([s.request_id for s in seqs], [self._take_stash(s) for s in seqs])
            logits.update(self.runner.step_cached([r for r in rows if r.row_id in joining], kv=staging))
            kv.add_rows([s.request_id for s in seqs], [staging.extract(s.request_id) for s in seqs])
        return logits

    def _take_stash(self, seq: Sequence):
        """The cache a joining sequence brings (prefix hit or preemption), if it still fits."""
        st: ReqState = seq.state["r"]
        stash, st.stash = st.stash, None
        if stash is None or stash.num_tokens != seq.num_computed_tokens:
            return None  # none usable: the plan computes the sequence from its start
        return stash

    def _maybe_compact(self) -> None:
        kv = self.runner.kv if self.runner else None
        if kv is not None and kv.width >= COMPACT_MIN_WIDTH and kv.hole_fraction() > COMPACT_HOLE_FRACTION:
            kv.compact()

    def _max_context(self) -> int | None:
        return context_length(self.loaded.model.config) if self.loaded else None

    def _step_stats(self, t: float, step_s: float, batch: int, prefill: int, committed: int,
                    spec: SpecStats) -> StepStats:
        kv_bytes = self.runner.kv.nbytes if self.runner else 0
        if self.spec is not None:
            kv_bytes += self.spec.kv_bytes()
        return StepStats(
            timestamp_s=t,
            step_time_s=step_s,
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


def _room_for_second_copy(weights_bytes: int, device: torch.device) -> bool:
    """Whether a second copy of the weights fits beside the first (with a margin)."""
    try:
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            return free > 2 * weights_bytes + (512 << 20)
        import psutil

        return psutil.virtual_memory().available > 2 * weights_bytes + (512 << 20)
    except Exception:  # noqa: BLE001 - unknown: take the frugal path
        return False


def _free_memory(collect_garbage: bool = True) -> None:
    """Return freed weight memory to the system. Reference counting frees tensors; a GC pass
    also breaks module reference cycles, but a GUI host may forbid it off its own thread
    (collecting Qt wrappers on a foreign thread breaks Qt), so it can be turned off."""
    if collect_garbage:
        import gc

        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
