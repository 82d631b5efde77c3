"""app/serve/metrics.py: Prometheus figures from engine events (no server, no model)."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from app.serve.metrics import ServeMetrics, kv_usage_fraction
from engine import events as ev
from engine.metrics import SpecStats, StepStats, request_stats


def _samples(m: ServeMetrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(m: ServeMetrics, name: str, **labels) -> float:
    want = tuple(sorted({"model_name": "m", **labels}.items()))
    return _samples(m)[(name, want)]


def _step(batch: int, waiting: int, *, kv: int = 1000, spec: SpecStats = SpecStats()) -> ev.StepCompleted:
    return ev.StepCompleted(stats=StepStats(
        timestamp_s=0.0, step_time_s=0.01, batch_size=batch, num_waiting=waiting, num_prefill_tokens=5,
        num_output_tokens=batch, kv_cache_bytes=kv, prefix_cache_bytes=0, weights_bytes=4242, rss_bytes=1,
        accelerator_bytes=None, tokens_per_s=12.5, spec=spec))


def _finished(rid: str, times: list[float], reason=ev.FinishReason.STOP) -> ev.RequestFinished:
    stats = request_stats(prompt_tokens=7, cached_prompt_tokens=2, submitted_s=0.0, emission_times_s=times,
                          emission_counts=[1] * len(times), finished_s=times[-1] + 0.01, prefill_time_s=0.1,
                          spec=SpecStats())
    return ev.RequestFinished(request_id=rid, reason=reason, text="", token_ids=(1,) * len(times), stats=stats)


def test_running_and_waiting_follow_the_engine():
    m = ServeMetrics("m")
    for rid in "abc":
        m.record(ev.RequestQueued(request_id=rid, prompt_tokens=7))
    m.record(_step(batch=2, waiting=1))
    assert (_value(m, "vllm:num_requests_running"), _value(m, "vllm:num_requests_waiting")) == (2, 1)
    m.record(_finished("a", [0.1, 0.2]))
    m.record(_step(batch=2, waiting=0))
    assert (_value(m, "vllm:num_requests_running"), _value(m, "vllm:num_requests_waiting")) == (2, 0)
    m.record(_finished("b", [0.1]))
    m.record(_finished("c", [0.1, 0.15, 0.3], reason=ev.FinishReason.CANCELLED))
    assert (_value(m, "vllm:num_requests_running"), _value(m, "vllm:num_requests_waiting")) == (0, 0)
    assert _value(m, "vllm:kv_cache_usage_perc") == 0.0  # nothing in flight holds cache
    assert _value(m, "vllm:prompt_tokens_total") == 21
    assert _value(m, "vllm:generation_tokens_total") == 6
    assert _value(m, "vllm:prefix_cache_hits_total") == 6
    assert _value(m, "vllm:request_success_total", finished_reason="abort") == 1
    assert _value(m, "vllm:request_success_total", finished_reason="stop") == 2
    # one ITL observation per gap between emissions: 1 + 0 + 2
    assert _value(m, "vllm:inter_token_latency_seconds_count") == 3
    assert math.isclose(_value(m, "vllm:inter_token_latency_seconds_sum"), 0.1 + 0.05 + 0.15)
    assert _value(m, "vllm:time_to_first_token_seconds_count") == 3
    assert _value(m, "workbench:max_step_batch_size") == 2
    assert _value(m, "workbench:model_weights_bytes") == 4242


def test_speculative_counters_per_position():
    m = ServeMetrics("m")
    spec = SpecStats(num_drafts=2, num_draft_tokens=8, num_accepted_tokens=5, accepted_per_position=(2, 2, 1, 0),
                     drafted_per_position=(2, 2, 2, 2))
    m.record(_step(batch=2, waiting=0, spec=spec))
    m.record(_step(batch=2, waiting=0, spec=spec))
    assert _value(m, "vllm:spec_decode_num_drafts_total") == 4
    assert _value(m, "vllm:spec_decode_num_draft_tokens_total") == 16
    assert _value(m, "vllm:spec_decode_num_accepted_tokens_total") == 10
    per_pos = [_value(m, "vllm:spec_decode_num_accepted_tokens_per_pos_total", position=str(i)) for i in range(4)]
    assert per_pos == [4, 4, 2, 0] and sum(per_pos) == 10


def test_config_and_model_labels():
    m = ServeMetrics("m")
    m.record(ev.ConfigApplied(config_dict={"kv_cache": "on", "batching": {"enabled": False, "max_batch_size": 4},
                                           "quantisation": "nf4", "speculative": {"mode": "ngram"}},
                              label="kv on · batching off · nf4 · spec ngram k=4", changes=("nf4",)))
    info = [v for (name, labels), v in _samples(m).items() if name == "workbench:config_info"]
    labels = next(dict(lb) for (name, lb) in _samples(m) if name == "workbench:config_info")
    assert info == [1.0]
    assert (labels["quantisation"], labels["batching"], labels["speculative"]) == ("nf4", "off", "ngram")


def test_kv_usage_fraction():
    assert kv_usage_fraction(100, 900) == 0.1
    assert kv_usage_fraction(0, 900) == 0.0
    assert kv_usage_fraction(0, None) == 0.0
    assert math.isnan(kv_usage_fraction(5, None))  # unknown, never a made-up 0
