"""Compare runs driven through a Comparison as the compare bridge would, from engine events
(no engine, no Qt): for the compare view models and the views that show them."""

from __future__ import annotations

from engine import events as ev
from engine.config import EngineConfig, KVCacheMode, Quantisation
from engine.events import FinishReason, TokenOrigin
from engine.metrics import SpecStats, StepStats, request_stats
from ui.viewmodels.compare import ColumnSpec, CompareJob, Comparison

BASE = ColumnSpec("baseline", "tiny", EngineConfig(kv_cache=KVCacheMode.OFF), "baseline")
KV = ColumnSpec("KV cache", "tiny", EngineConfig(kv_cache=KVCacheMode.ON), "KV cache")
NF4 = ColumnSpec("nf4", "tiny", EngineConfig(quantisation=Quantisation.NF4), "nf4")
INFO = ev.ModelInfo(name_or_path="tiny", architecture="LlamaForCausalLM", num_params=1000, dtype="float32",
                    device="cpu", weights_bytes=4000, quantisation="none", vocab_size=320, has_chat_template=True)


def step(t: float, kv: int, weights: int = 4000, spec: SpecStats | None = None) -> StepStats:
    return StepStats(timestamp_s=t, step_time_s=0.01, batch_size=1, num_waiting=0, num_prefill_tokens=0,
                     num_output_tokens=1, kv_cache_bytes=kv, prefix_cache_bytes=0, weights_bytes=weights,
                     rss_bytes=0, accelerator_bytes=None, tokens_per_s=1.0, spec=spec or SpecStats())


def feed_run(comp: Comparison, column: int, repeat: int, tokens: list[int], *, start: float, ttft: float,
             gap: float, kv_per_token: int = 0, weights: int = 4000, draft: set[int] = frozenset()) -> None:
    """Drive one run through the Comparison as the bridge would: begin, tokens and steps, finish."""
    rid = f"c{column}r{repeat}"
    comp.begin(CompareJob(column, repeat, rid, start))
    comp.add_step(column, step(start - 1.0, kv=10**9))  # an earlier run's tail: must be ignored
    times = [start + ttft + i * gap for i in range(len(tokens))]
    for i, (tok, t) in enumerate(zip(tokens, times)):
        origin = TokenOrigin.DRAFT if i in draft else TokenOrigin.TARGET
        comp.add_tokens(column, ev.TokensGenerated(request_id=rid, text=f"t{tok} ", token_ids=(tok,),
                                                   origins=(origin,), token_texts=(f"t{tok} ",), timestamp_s=t))
        comp.add_step(column, step(t, kv=(i + 1) * kv_per_token, weights=weights))
    stats = request_stats(prompt_tokens=3, cached_prompt_tokens=0, submitted_s=start, emission_times_s=times,
                          emission_counts=[1] * len(tokens), finished_s=times[-1], prefill_time_s=None,
                          spec=SpecStats(num_drafts=2, num_draft_tokens=4, num_accepted_tokens=len(draft))
                          if draft else SpecStats())
    comp.finish(column, ev.RequestFinished(request_id=rid, reason=FinishReason.LENGTH, text="".join(
        f"t{x} " for x in tokens), token_ids=tuple(tokens), stats=stats))
