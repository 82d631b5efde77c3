"""A server scrape as a StepStats, so the dashboard and loadtest read a remote like the local
engine. Fields the server does not expose stay None (unknown); memory figures of a remote
process are never ours to measure."""

from __future__ import annotations

from engine.metrics import SpecStats, StepStats
from engine.remote.server_stats import ServerInterval, ServerSnapshot


def _int(v: float | None) -> int | None:
    return None if v is None else int(round(v))


def step_stats_from(snap: ServerSnapshot, iv: ServerInterval | None) -> StepStats | None:
    """None until there is an interval (a rate needs two scrapes), and for a server that does not
    say how many requests run or how many tokens it made (then only ServerMetricsSampled goes out:
    a step record without its two core figures would read as a stalled engine)."""
    if iv is None or snap.num_requests_running is None or iv.generation_tokens_per_s is None:
        return None
    return StepStats(
        timestamp_s=snap.taken_s,
        step_time_s=iv.interval_s,  # one scrape interval, not one server step
        batch_size=_int(snap.num_requests_running),
        num_waiting=_int(snap.num_requests_waiting),
        num_prefill_tokens=_int(iv.prompt_tokens),
        num_output_tokens=_int(iv.generation_tokens),
        kv_cache_bytes=None,
        prefix_cache_bytes=None,
        weights_bytes=None,
        rss_bytes=None,
        accelerator_bytes=None,
        tokens_per_s=iv.generation_tokens_per_s,
        spec=iv.spec if iv.spec is not None else SpecStats(),
    )
