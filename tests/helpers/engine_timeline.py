"""Engine events and stats on a made-up timeline, for the dashboard's models and views.

Real engine dataclasses (StepStats, TokensGenerated, RequestFinished, ConfigApplied), stamped
at T0 + t, so a test lays out load, idle stretches and changes without waiting for them."""

from __future__ import annotations

from engine.events import ConfigApplied, FinishReason, RequestFinished, TokenOrigin, TokensGenerated
from engine.metrics import SpecStats, StepStats, request_stats

T0 = 1000.0  # monotonic seconds at the model's start
MIB = 1 << 20


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def step(t: float, *, tokens_per_s: float = 100.0, out: int = 4, batch: int = 4, waiting: int = 0,
         weights: int = 10 * MIB, kv: int = 2 * MIB, prefix: int = 0, rss: int = 50 * MIB,
         accel: int | None = None, spec: SpecStats | None = None, advice=None) -> StepStats:
    return StepStats(timestamp_s=T0 + t, step_time_s=0.01, batch_size=batch, num_waiting=waiting,
                     num_prefill_tokens=0, num_output_tokens=out, kv_cache_bytes=kv, prefix_cache_bytes=prefix,
                     weights_bytes=weights, rss_bytes=rss, accelerator_bytes=accel, tokens_per_s=tokens_per_s,
                     spec=spec or SpecStats(), spec_advice=advice)


def spec_step(drafted: int, accepted: int) -> SpecStats:
    return SpecStats(num_drafts=1, num_draft_tokens=drafted, num_accepted_tokens=accepted,
                     accepted_per_position=tuple(1 if i < accepted else 0 for i in range(drafted)),
                     drafted_per_position=(1,) * drafted)


def tokens(rid: str, t: float, n: int = 1) -> TokensGenerated:
    return TokensGenerated(request_id=rid, text="x" * n, token_ids=(7,) * n, origins=(TokenOrigin.TARGET,) * n,
                           timestamp_s=T0 + t)


def finished(rid: str, submitted: float, emissions: list[float], t_finish: float) -> RequestFinished:
    stats = request_stats(prompt_tokens=5, cached_prompt_tokens=0, submitted_s=T0 + submitted,
                          emission_times_s=[T0 + e for e in emissions], emission_counts=[1] * len(emissions),
                          finished_s=T0 + t_finish, prefill_time_s=None, spec=SpecStats())
    return RequestFinished(request_id=rid, reason=FinishReason.LENGTH, text="", token_ids=(7,) * len(emissions),
                           stats=stats, timestamp_s=T0 + t_finish)


def applied(t: float, changes: tuple[str, ...], label: str = "cfg") -> ConfigApplied:
    return ConfigApplied(config_dict={"kv_cache": "on"}, label=label, changes=changes, timestamp_s=T0 + t)
