"""/metrics parsing and mapping, response timing fields, launch profiles (pure parts and a real
child process)."""

from __future__ import annotations

import json
import sys

import pytest

from engine.remote.launch import LaunchedServer, LaunchError, LaunchProfile, load_profiles, save_profiles
from engine.remote.prom import MetricsParseError, parse_metrics
from engine.remote.server_stats import (
    ServerEngine,
    detect_engine,
    interval,
    llamacpp_timings,
    ollama_timings,
    snapshot,
)
from engine.remote.step_stats import step_stats_from

VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 100.0
vllm:generation_tokens_created{engine="0",model_name="tiny"} 1.7e+09
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 50.0
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 50.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 3.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
vllm:spec_decode_num_drafts_total{engine="0",model_name="tiny"} 10.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="tiny"} 30.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="tiny"} 18.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="0"} 9.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="1"} 6.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="2"} 3.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.4
"""


def _later(text: str, **changes: float) -> str:
    out = []
    for line in text.splitlines():
        for name, value in changes.items():
            if line.startswith(name + "{") and 'position="1"' not in line:
                line = line.rsplit(" ", 1)[0] + f" {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_vllm_metrics_map_onto_our_names():
    scrape = parse_metrics(VLLM_TEXT, taken_s=10.0)
    assert detect_engine(scrape) is ServerEngine.VLLM
    s = snapshot(scrape, ServerEngine.VLLM)
    assert (s.num_requests_running, s.num_requests_waiting, s.kv_cache_usage) == (2, 1, 0.25)
    assert s.generation_tokens == 100 and s.prompt_tokens == 50
    assert s.requests_finished == 4  # summed over finish reasons
    assert (s.num_drafts, s.num_draft_tokens, s.num_accepted_tokens) == (10, 30, 18)
    assert s.accepted_per_position == (9, 6, 3)
    assert s.ttft.mean == pytest.approx(0.1)
    assert s.spec_accept_length is None and s.e2e is None  # not exposed: unknown


def test_interval_rates_come_from_counter_deltas():
    a = snapshot(parse_metrics(VLLM_TEXT, taken_s=10.0), ServerEngine.VLLM)
    later = _later(VLLM_TEXT, **{"vllm:generation_tokens_total": 160.0, "vllm:spec_decode_num_drafts_total": 14.0,
                                 "vllm:spec_decode_num_draft_tokens_total": 42.0,
                                 "vllm:spec_decode_num_accepted_tokens_total": 27.0,
                                 "vllm:spec_decode_num_accepted_tokens_per_pos_total": 13.0,
                                 "vllm:time_to_first_token_seconds_sum": 0.7,
                                 "vllm:time_to_first_token_seconds_count": 6.0})
    b = snapshot(parse_metrics(later, taken_s=12.0), ServerEngine.VLLM)
    iv = interval(a, b)
    assert iv.generation_tokens == 60 and iv.generation_tokens_per_s == pytest.approx(30.0)
    assert (iv.spec.num_drafts, iv.spec.num_draft_tokens, iv.spec.num_accepted_tokens) == (4, 12, 9)
    assert iv.spec.acceptance_rate == pytest.approx(0.75)
    # position 0 and 2 were edited to 13, position 1 kept: 4, 0, 10 more acceptances
    assert iv.spec.accepted_per_position == (4, 0, 10)
    assert iv.ttft_mean_s == pytest.approx(0.15)
    assert iv.prompt_tokens == 0 and iv.prefix_cache_hit_rate is None  # no queries in the interval
    step = step_stats_from(b, iv)
    assert step.batch_size == 2 and step.num_waiting == 1 and step.num_output_tokens == 60
    assert step.kv_cache_bytes is None and step.weights_bytes is None  # a remote's memory is unknown
    # a counter that went down means the server restarted: no rate, not a negative one
    reset = interval(b, a.__class__(**{**a.__dict__, "taken_s": 13.0}))
    assert reset.generation_tokens is None and reset.generation_tokens_per_s is None


def test_other_engines_are_detected_and_mapped():
    sglang = parse_metrics('sglang:num_running_reqs{model_name="m"} 3\nsglang:num_queue_reqs{model_name="m"} 0\n'
                           'sglang:token_usage{model_name="m"} 0.5\nsglang:generation_tokens_total{model_name="m"} 7\n'
                           'sglang:spec_accept_length{model_name="m"} 2.5\n', 1.0)
    assert detect_engine(sglang) is ServerEngine.SGLANG
    s = snapshot(sglang, ServerEngine.SGLANG)
    assert (s.num_requests_running, s.kv_cache_usage, s.generation_tokens, s.spec_accept_length) == (3, 0.5, 7, 2.5)
    assert s.num_drafts is None
    tgi = parse_metrics("# TYPE tgi_queue_size gauge\ntgi_queue_size 4\ntgi_batch_current_size 2\n"
                        "# TYPE tgi_request_generated_tokens histogram\n"
                        'tgi_request_generated_tokens_bucket{le="+Inf"} 3\n'
                        "tgi_request_generated_tokens_sum 90\ntgi_request_generated_tokens_count 3\n", 1.0)
    assert detect_engine(tgi) is ServerEngine.TGI
    t = snapshot(tgi, ServerEngine.TGI)
    assert (t.num_requests_waiting, t.num_requests_running, t.generation_tokens) == (4, 2, 90)
    # SGLang without a running gauge in this scrape: no step record, the snapshot still has the rest
    no_running = snapshot(parse_metrics('sglang:generation_tokens_total 9\n', 2.0), ServerEngine.SGLANG)
    assert step_stats_from(no_running, interval(s, no_running)) is None
    lcpp = parse_metrics("# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 12\n"
                         "llamacpp:requests_processing 1\nllamacpp:requests_deferred 0\n", 1.0)
    assert detect_engine(lcpp) is ServerEngine.LLAMACPP
    assert snapshot(lcpp, ServerEngine.LLAMACPP).generation_tokens == 12
    assert detect_engine(None, ollama_version="0.5.1") is ServerEngine.OLLAMA
    assert detect_engine(None, owned_by="vllm") is ServerEngine.VLLM
    assert detect_engine(None, owned_by="local") is ServerEngine.OPENAI


def test_unreadable_metrics_raise_and_nan_is_unknown():
    with pytest.raises(MetricsParseError):
        parse_metrics('vllm:num_requests_running{engine="0" 1\n', 0.0)
    s = snapshot(parse_metrics("vllm:kv_cache_usage_perc NaN\nvllm:num_requests_running 0\n", 0.0), ServerEngine.VLLM)
    assert s.kv_cache_usage is None and s.num_requests_running == 0


def test_response_timing_fields():
    t = llamacpp_timings({"prompt_n": 20, "prompt_ms": 40.0, "predicted_n": 50, "predicted_ms": 500.0,
                          "draft_n": 30, "draft_n_accepted": 21})
    assert t.generation_tokens_per_s == pytest.approx(100.0) and t.prompt_s == pytest.approx(0.04)
    assert (t.num_draft_tokens, t.num_accepted_tokens) == (30, 21)
    assert llamacpp_timings({"predicted_n": 5}).num_draft_tokens is None  # no draft: unknown
    assert llamacpp_timings("nonsense") is None
    o = ollama_timings({"eval_count": 64, "eval_duration": 2_000_000_000, "prompt_eval_count": 10,
                        "prompt_eval_duration": 100_000_000})
    assert o.generation_tokens_per_s == pytest.approx(32.0) and o.prompt_s == pytest.approx(0.1)
    assert ollama_timings({"eval_count": "many"}).generated_tokens is None


def test_profiles_round_trip_and_refuse_bad_files(tmp_path):
    spec = json.dumps({"method": "ngram", "num_speculative_tokens": 3})
    p = LaunchProfile(name="spec", argv=("vllm", "--port", "{port}", "--speculative-config", spec),
                      env=(("VLLM_CPU_KVCACHE_SPACE", "1"),), model="m")
    path = tmp_path / "profiles.json"
    save_profiles(path, [p])
    assert load_profiles(path) == [p]
    server = LaunchedServer(p, port=8123)
    assert server.command() == ["vllm", "--port", "8123", "--speculative-config", spec]  # JSON braces kept
    for bad in ([{"name": "x", "argv": "vllm serve"}], [{"name": "x", "argv": ["a"], "env": {"A": 1}}],
                [{"name": "x", "argv": ["a"], "port": "80"}], {"name": "x"}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            load_profiles(path)
    assert load_profiles(tmp_path / "missing.json") == []


def test_launched_server_starts_health_checks_logs_and_stops(tmp_path):
    profile = LaunchProfile(name="static", argv=(sys.executable, "-u", "-m", "http.server", "{port}",
                                                 "--bind", "{host}", "--directory", str(tmp_path)),
                            health_path="/", start_timeout_s=30)
    with LaunchedServer(profile, log_path=tmp_path / "log.txt") as server:
        assert server.running and server.healthy()
        assert str(server.port) in server.log_text()  # the log is captured
    assert not server.running


def test_launch_failure_reports_the_log(tmp_path):
    profile = LaunchProfile(name="broken", argv=(sys.executable, "-c", "import sys; print('no GPU here'); sys.exit(3)"))
    with pytest.raises(LaunchError, match="exited with code 3") as info:
        with LaunchedServer(profile, log_path=tmp_path / "log.txt"):
            pass
    assert "no GPU here" in str(info.value)
    with pytest.raises(LaunchError, match="cannot start"):
        LaunchedServer(LaunchProfile(name="x", argv=(str(tmp_path / "nope"),))).start()
