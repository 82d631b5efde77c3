"""The remote backend against real servers over real sockets: vLLM (CPU build, ngram
speculative decoding on) and `transformers serve`. No mock of the protocol anywhere here."""

from __future__ import annotations

import openai
import pytest

from engine import events as ev
from engine.config import GenerateRequest, SamplingParams
from engine.remote import RemoteBackend, RemoteSpec
from engine.remote.events import RemoteConnected, ServerMetricsSampled
from engine.remote.launch import free_port
from engine.remote.server_stats import ServerEngine
from tests.helpers.remote_servers import (
    API_KEY,
    MAX_MODEL_LEN,
    SERVED,
    finished,
    independent_counter,
    start_transformers_serve,
    wait_for,
)

pytestmark = pytest.mark.slow

PROMPT = "the quick brown fox"
# a prompt whose answer repeats itself, so ngram drafts find matches and get accepted
REPEATING = "to be or not to be to be or not to be to be or not to be"


# the servers are session fixtures (tests/conftest.py), shared with the GUI tests in tests/ui
@pytest.fixture
def model_dir(served_model_dir):
    return served_model_dir


@pytest.fixture
def vllm(vllm_server):
    return vllm_server


@pytest.fixture
def tserve(tserve_server):
    return tserve_server


def _backend(spec: RemoteSpec) -> RemoteBackend:
    b = RemoteBackend(spec).start()
    assert b.wait_connected(30)
    return b


@pytest.fixture
def vllm_backend(vllm):
    b = _backend(vllm.remote_spec(metrics_interval_s=0.1))
    yield b
    assert b.shutdown(timeout=10)


def _chat(text: str, n: int, **kw) -> GenerateRequest:
    return GenerateRequest(messages=(("user", text),), sampling=SamplingParams(max_new_tokens=n, **kw))


def _run(backend: RemoteBackend, request: GenerateRequest, seen: list | None = None) -> ev.RequestFinished:
    rid = backend.submit(request)
    return wait_for(backend.events, finished(rid), seen=seen)


def test_vllm_detected_with_metrics_and_model_list(vllm_backend):
    seen: list = []
    fin = _run(vllm_backend, _chat(PROMPT, 4), seen)
    connected = [e for e in seen if isinstance(e, RemoteConnected)]
    assert connected and connected[0].engine is ServerEngine.VLLM
    assert connected[0].models == (SERVED,) and connected[0].has_metrics
    assert connected[0].max_model_len == MAX_MODEL_LEN
    loaded = [e for e in seen if isinstance(e, ev.ModelLoaded)]
    assert loaded[0].info.name_or_path == SERVED
    assert loaded[0].info.weights_bytes is None  # unknown, not zero
    assert fin.reason is ev.FinishReason.LENGTH


def test_vllm_stream_equals_servers_own_non_streamed_answer(vllm, vllm_backend):
    seen: list = []
    fin = _run(vllm_backend, _chat(PROMPT, 40), seen)
    client = openai.OpenAI(base_url=vllm.base_url, api_key=API_KEY, max_retries=0)
    ref = client.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": PROMPT}],
                                         max_tokens=40, temperature=0)
    assert fin.error is None and fin.text
    assert fin.text == ref.choices[0].message.content
    assert fin.stats.completion_tokens == ref.usage.completion_tokens == 40
    assert fin.stats.prompt_tokens == ref.usage.prompt_tokens
    tokens = [e for e in seen if isinstance(e, ev.TokensGenerated) and e.request_id == fin.request_id]
    assert "".join(t.text for t in tokens) == fin.text
    # vLLM gives each chunk's token ids: per-emission counts are exact, so are ITL gaps
    assert sum(len(t.token_ids) for t in tokens) == 40 == len(fin.token_ids)
    assert len(fin.stats.itl_s) == len(tokens) - 1
    assert 0 < fin.stats.ttft_s < fin.stats.e2e_s


def test_vllm_raw_prompt_completion_equals_non_streamed(vllm, vllm_backend):
    fin = _run(vllm_backend, GenerateRequest(prompt=PROMPT, sampling=SamplingParams(max_new_tokens=24)))
    client = openai.OpenAI(base_url=vllm.base_url, api_key=API_KEY, max_retries=0)
    ref = client.completions.create(model=SERVED, prompt=PROMPT, max_tokens=24, temperature=0)
    assert fin.text == ref.choices[0].text and fin.stats.completion_tokens == 24


def test_vllm_counters_equal_metrics_deltas(vllm, vllm_backend):
    names = {"gen": "vllm:generation_tokens_total", "drafts": "vllm:spec_decode_num_drafts_total",
             "drafted": "vllm:spec_decode_num_draft_tokens_total",
             "accepted": "vllm:spec_decode_num_accepted_tokens_total"}
    # a snapshot taken when the server is idle starts the window
    start = wait_for(vllm_backend.events, lambda e: isinstance(e, ServerMetricsSampled)
                     and e.snapshot.num_requests_running == 0)
    before = {k: independent_counter(vllm.root_url, n) for k, n in names.items()}
    rids = [vllm_backend.submit(_chat(REPEATING, n)) for n in (30, 45, 60)]
    fins: dict[str, ev.RequestFinished] = {}
    samples: list[ServerMetricsSampled] = []

    def done(e):
        if isinstance(e, ServerMetricsSampled) and e.snapshot.taken_s > start.snapshot.taken_s:
            samples.append(e)
        if isinstance(e, ev.RequestFinished):
            fins[e.request_id] = e
        return (len(fins) == len(rids) and isinstance(e, ServerMetricsSampled)
                and e.snapshot.num_requests_running == 0)

    wait_for(vllm_backend.events, done)
    after = {k: independent_counter(vllm.root_url, n) for k, n in names.items()}
    delta = {k: after[k] - before[k] for k in names}
    assert all(f.reason is ev.FinishReason.LENGTH for f in fins.values())
    # tokens: the requests' own usage figures add up to the server's counter
    assert sum(f.stats.completion_tokens for f in fins.values()) == delta["gen"] == 135
    # the dashboard's figures: per-interval deltas summed over the window
    assert sum(s.interval.generation_tokens for s in samples) == delta["gen"]
    spec = [s.interval.spec for s in samples]
    assert sum(s.num_drafts for s in spec) == delta["drafts"] > 0
    assert sum(s.num_draft_tokens for s in spec) == delta["drafted"]
    assert sum(s.num_accepted_tokens for s in spec) == delta["accepted"] > 0
    per_pos = [sum(x) for x in zip(*(s.accepted_per_position for s in spec if s.accepted_per_position))]
    assert sum(per_pos) == delta["accepted"]
    steps = []
    while not vllm_backend.events.empty():
        e = vllm_backend.events.get_nowait()
        if isinstance(e, ev.StepCompleted):
            steps.append(e.stats)
    assert all(s.kv_cache_bytes is None and s.rss_bytes is None for s in steps)  # unknown, never 0


def test_vllm_abort_closes_stream_and_running_gauge_returns_to_zero(vllm, vllm_backend):
    # On two shared cores vLLM's API process may get no CPU while its engine core generates, so
    # the first chunk can arrive when the whole answer is done: then the abort came too late
    # through no fault of ours. It must land mid-answer in one of three tries.
    generated = []
    for _ in range(3):
        before = independent_counter(vllm.root_url, "vllm:generation_tokens_total")
        rid = vllm_backend.submit(_chat(PROMPT, 460, ignore_eos=True))
        wait_for(vllm_backend.events, lambda e: isinstance(e, ev.TokensGenerated) and e.request_id == rid)
        vllm_backend.abort(rid)
        fin = wait_for(vllm_backend.events, finished(rid))
        assert fin.reason is ev.FinishReason.CANCELLED and fin.error is None
        assert wait_for(vllm_backend.events, lambda e: isinstance(e, ServerMetricsSampled)
                        and e.snapshot.taken_s > fin.timestamp_s and e.snapshot.num_requests_running == 0)
        generated.append(independent_counter(vllm.root_url, "vllm:generation_tokens_total") - before)
        if generated[-1] < 460:
            break
    assert min(generated) < 460, generated  # the server stopped generating when the stream closed
    nxt = _run(vllm_backend, _chat(PROMPT, 8))
    assert nxt.reason is ev.FinishReason.LENGTH and nxt.stats.completion_tokens == 8


def test_vllm_errors_are_one_clear_event_each_and_the_next_request_works(vllm, vllm_backend):
    cases = {
        "401": (RemoteSpec(vllm.base_url, model=SERVED, api_key="wrong", metrics_interval_s=0), "HTTP 401"),
        "404": (RemoteSpec(vllm.base_url, model="no-such-model", api_key=API_KEY, metrics_interval_s=0), "HTTP 404"),
        "refused": (RemoteSpec(f"http://127.0.0.1:{free_port()}/v1", model=SERVED, metrics_interval_s=0),
                    "cannot connect"),
    }
    for label, (spec, words) in cases.items():
        bad = _backend(spec)
        seen: list = []
        fin = _run(bad, _chat(PROMPT, 4), seen)
        assert fin.reason is ev.FinishReason.ERROR, label
        assert words in fin.error, (label, fin.error)
        assert fin.stats.ttft_s is None and fin.stats.completion_tokens == 0
        load_errors = [e for e in seen if isinstance(e, ev.EngineErrorEvent)]
        assert len(load_errors) == 1 and load_errors[0].where == "load", label  # the connect probe says it too
        assert bad.shutdown(timeout=5)
        ok = _run(vllm_backend, _chat(PROMPT, 4))
        assert ok.reason is ev.FinishReason.LENGTH and ok.error is None, label


def test_vllm_reconfigure_is_refused_with_the_reason(vllm_backend):
    from engine.config import EngineConfig

    vllm_backend.reconfigure(EngineConfig())
    e = wait_for(vllm_backend.events, lambda e: isinstance(e, ev.EngineErrorEvent))
    assert e.where == "config" and "launch flags" in e.message


def test_transformers_serve_stream_equals_non_streamed(tserve):
    b = _backend(tserve.remote_spec(metrics_interval_s=0.1))
    try:
        seen: list = []
        fin = _run(b, _chat(PROMPT, 30), seen)
        client = openai.OpenAI(base_url=tserve.base_url, api_key="EMPTY", max_retries=0)
        ref = client.chat.completions.create(model=tserve.profile.model,
                                             messages=[{"role": "user", "content": PROMPT}],
                                             max_tokens=30, temperature=0)
        assert fin.error is None and fin.text == ref.choices[0].message.content
        assert fin.stats.completion_tokens == ref.usage.completion_tokens
        connected = next(e for e in seen if isinstance(e, RemoteConnected))
        assert connected.engine is ServerEngine.OPENAI and not connected.has_metrics
        assert not any(isinstance(e, (ServerMetricsSampled, ev.StepCompleted)) for e in seen)
        assert fin.stats.cached_prompt_tokens is None  # not reported: unknown
    finally:
        assert b.shutdown(timeout=10)


def test_server_dying_mid_stream_keeps_the_partial_answer(model_dir, tserve, tmp_path):
    doomed = start_transformers_serve(model_dir, tmp_path, name="doomed")
    try:
        b = _backend(doomed.remote_spec(metrics_interval_s=0))
        rid = b.submit(_chat(PROMPT, 200))  # this model's greedy answer to PROMPT has no EOS
        wait_for(b.events, lambda e: isinstance(e, ev.TokensGenerated) and e.request_id == rid and e.text)
        doomed.kill()
        fin = wait_for(b.events, finished(rid))
        assert fin.reason is ev.FinishReason.ERROR
        assert fin.text and "partial answer is kept" in fin.error
        assert ("mid-stream" in fin.error or "interrupted" in fin.error or "connection" in fin.error), fin.error
        assert b.shutdown(timeout=5)
    finally:
        doomed.stop()
    ok_backend = _backend(tserve.remote_spec(metrics_interval_s=0))
    try:
        ok = _run(ok_backend, _chat(PROMPT, 4))
        assert ok.reason is ev.FinishReason.LENGTH and ok.error is None
    finally:
        ok_backend.shutdown()


# ---- the command line against the same real server ----------------------------------------

def _cli(argv: list[str]) -> int:
    from app.cli import main

    return main(argv)


def test_cli_generate_streams_from_vllm_with_the_local_metrics_line(vllm, capsys):
    rc = _cli(["generate", "--backend", vllm.base_url, "--model", SERVED, "--api-key", API_KEY, "--chat",
               "--prompt", PROMPT, "--max-new-tokens", "16", "--temperature", "0"])
    out, err = capsys.readouterr()
    client = openai.OpenAI(base_url=vllm.base_url, api_key=API_KEY, max_retries=0)
    ref = client.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": PROMPT}],
                                         max_tokens=16, temperature=0)
    assert rc == 0
    assert out.rstrip("\n") == ref.choices[0].message.content
    assert "[length] 16 tokens" in err and "TTFT" in err and "remote vllm" in err


def test_cli_refuses_local_engine_flags_with_a_backend(vllm, capsys):
    with pytest.raises(SystemExit) as info:
        _cli(["generate", "--backend", vllm.base_url, "--prompt", "x", "--quantisation", "nf4"])
    assert info.value.code == 2
    assert "launch flag" in capsys.readouterr().err


def test_cli_generate_reports_a_wrong_model_and_exits_1(vllm, capsys):
    rc = _cli(["generate", "--backend", vllm.base_url, "--model", "nope", "--api-key", API_KEY, "--prompt", "x"])
    assert rc == 1 and "'nope' is not served" in capsys.readouterr().err


def test_cli_bench_remote_suite_reads_server_metrics_beside_client_figures(vllm, tmp_path, capsys):
    out = tmp_path / "remote.json"
    rc = _cli(["bench", "--backend", vllm.base_url, "--model", SERVED, "--api-key", API_KEY, "--suite", "remote",
               "--quick", "--json", str(out)])
    assert rc == 0
    import json

    runs = json.loads(out.read_text())["suites"]["remote"]["runs"]
    assert [r["config"]["concurrency"] for r in runs] == [1, 8]
    for r in runs:
        assert r["tokens_match_server"] is True  # client usage totals == server counter delta
        assert r["completion_tokens"] == r["config"]["requests"] * r["config"]["max_new_tokens"]
        assert r["server_ttft_mean_s"] > 0 and r["ttft_s"] > 0 and r["tokens_per_s"] > 0
        assert r["acceptance_rate"] is not None  # ngram speculative decoding on this server
    assert runs[1]["server_running_peak"] is None or runs[1]["server_running_peak"] <= 4  # --max-num-seqs 4
    assert "client vs server" in capsys.readouterr().out


def test_cli_loadtest_drives_a_server(vllm, capsys):
    rc = _cli(["loadtest", "--backend", vllm.base_url, "--model", SERVED, "--api-key", API_KEY, "--duration", "2",
               "--users", "2", "--rate", "4", "--min-tokens", "4", "--max-tokens", "16"])
    import re

    out = capsys.readouterr().out
    assert rc == 0
    m = re.search(r"requests (\d+)  tokens (\d+)", out)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, out


def test_cli_bench_races_two_launch_profiles(model_dir, tmp_path, capsys):
    """Two flag sets of one server, each started, measured and stopped by the workbench."""
    from engine.remote.launch import save_profiles, transformers_serve_profile

    exe = str(__import__("pathlib").Path(__import__("sys").executable).parent / "transformers")
    plain = transformers_serve_profile("plain", str(model_dir), executable=exe)
    batched = transformers_serve_profile("cb", str(model_dir), executable=exe)
    batched = type(batched)(**{**batched.__dict__, "argv": batched.argv + ("--continuous-batching",)})
    path = tmp_path / "profiles.json"
    save_profiles(path, [plain, batched])
    out = tmp_path / "race.json"
    rc = _cli(["bench", "--launch", f"{path}:plain", "--launch", f"{path}:cb", "--suite", "remote", "--quick",
               "--json", str(out)])
    import json

    report = json.loads(out.read_text())
    runs = report["suites"]["remote"]["runs"]
    assert rc == 0, report
    assert [r["name"] for r in runs] == ["plain remote c1", "plain remote c8", "cb remote c1", "cb remote c8"]
    assert all(r["server_metrics"] is None for r in runs)  # transformers serve has no /metrics: unknown
    assert all(r["completion_tokens"] > 0 and r["ttft_s"] > 0 for r in runs)
    assert [p["name"] for p in report["profiles"]] == ["plain", "cb"]


def test_profile_backend_starts_serves_and_stops_its_server(model_dir, tmp_path):
    import sys
    from pathlib import Path

    from engine.remote.launch import LaunchProfile, transformers_serve_profile
    from engine.remote.profile_backend import ProfileBackend

    exe = str(Path(sys.executable).parent / "transformers")
    b = ProfileBackend(transformers_serve_profile("ts", str(model_dir), executable=exe),
                       log_path=tmp_path / "ts.log").start()  # returns at once; the server starts behind it
    try:
        seen: list = []
        fin = _run(b, _chat(PROMPT, 6), seen)  # a request submitted while the server starts waits for it
        assert fin.reason is ev.FinishReason.LENGTH and fin.stats.completion_tokens == 6
        progress = [e for e in seen if isinstance(e, ev.LoadProgress)]
        assert [p.fraction for p in progress] == [0.0, 1.0]
        assert fin.config_label.startswith("profile ts")
        assert "Uvicorn running" in b.log_tail() or "Application startup complete" in b.log_tail()
    finally:
        assert b.shutdown(timeout=10)
    assert not b.server.running
    broken = ProfileBackend(LaunchProfile(name="broken", argv=(sys.executable, "-c", "raise SystemExit('bad flag')")),
                            log_path=tmp_path / "broken.log").start()
    try:
        err = wait_for(broken.events, lambda e: isinstance(e, ev.EngineErrorEvent), timeout=30)
        assert err.where == "load" and "exited with code 1" in err.message and "bad flag" in err.message
    finally:
        broken.shutdown()
