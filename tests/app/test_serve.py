"""`workbench serve` over a tiny model, driven by the real openai SDK and a raw httpx SSE reader
on a real local socket. One server for the whole module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from engine import events as ev
from engine.config import BatchingConfig, EngineConfig, GenerateRequest, SamplingParams
from tests.helpers.engine_utils import run_requests, started_engine
from tests.helpers.serving import EventWatcher, metric, scrape, sse_events, start_served

MODEL = "tiny"
KEY = "test-key-123"
CHAT = [{"role": "user", "content": "to be or not to be"}]
PROMPT = "the quick brown fox"
NO_EOS = {"ignore_eos": True}
CHAT12 = GenerateRequest(messages=(("user", CHAT[0]["content"]),),
                         sampling=SamplingParams(max_new_tokens=12, ignore_eos=True))
PROMPT10 = GenerateRequest(prompt=PROMPT, sampling=SamplingParams(max_new_tokens=10, ignore_eos=True))


@pytest.fixture(scope="module")
def served(tiny_llama_dir):
    s = start_served(tiny_llama_dir, served_model_name=MODEL, api_key=KEY)
    yield s
    assert s.stop(), "a server, engine or hub thread did not stop"


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    """The engine's own output for the same requests, from a local Engine (no server)."""
    engine, _ = started_engine(tiny_llama_dir)
    results = {}

    def run(request: GenerateRequest):
        if request not in results:
            ids, c = run_requests(engine, [request])
            results[request] = c.finished[ids[0]]
        return results[request]

    yield run
    engine.shutdown()


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def post(served, path: str, body, *, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{served.base_url}{path}", content=content, headers={**headers, "Content-Type":
                      "application/json"}, timeout=60, **kw)


# ---------------------------------------------------------------------------- basics
def test_health_models_and_default_bind(served, client):
    assert httpx.get(f"{served.url}/health").status_code == 200
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert served.server.host == "127.0.0.1"
    from app.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8000, None)


def test_chat_greedy_equals_the_engines_own_output(client, reference, tokenizer):
    resp = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0,
                                          extra_body={**NO_EOS, "return_token_ids": True})
    ref = reference(CHAT12)
    choice = resp.choices[0]
    assert choice.token_ids == list(ref.token_ids)  # token for token
    assert choice.message.content == ref.text and choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    prompt_ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
    if hasattr(prompt_ids, "keys"):  # a BatchEncoding in transformers 5
        prompt_ids = prompt_ids["input_ids"]
    assert resp.usage.prompt_tokens == len(prompt_ids)
    assert resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == len(prompt_ids) + 12
    assert resp.model == MODEL and resp.id.startswith("chatcmpl-")


def test_chat_stream_role_then_content_same_id_and_usage(client, reference):
    ref = reference(CHAT12)
    stream = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body=NO_EOS)
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ref.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_greedy_stream_and_not(client, reference, tokenizer):
    ref = reference(PROMPT10)
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0,
                                     extra_body={**NO_EOS, "return_token_ids": True})
    assert resp.choices[0].text == ref.text
    assert resp.choices[0].token_ids == list(ref.token_ids)
    assert resp.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert resp.usage.completion_tokens == 10
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0,
                                            stream=True, extra_body=NO_EOS))
    assert "".join(c.choices[0].text for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_raw_sse_stream_format(served):
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 6, "temperature": 0, "stream": True, **NO_EOS}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    payloads = events[:-1]
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert len({p["id"] for p in payloads}) == 1
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads[:-1])


def test_token_id_prompt_and_model_path_accepted(served, tokenizer, reference):
    ref = reference(PROMPT10)
    ids = tokenizer.encode(PROMPT)
    r = post(served, "/completions", {"model": str(served.session.model_info.name_or_path), "prompt": ids,
                                      "max_tokens": 10, "temperature": 0, **NO_EOS})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == ref.text


# ---------------------------------------------------------------------------- sampling fields
def test_stop_strings_are_excluded(client):
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0,
                                     extra_body=NO_EOS).choices[0].text
    assert len(full) > 6
    stop = full[3:6]
    cut = full[: full.index(stop)]
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop],
                                     extra_body=NO_EOS)
    assert resp.choices[0].text == cut and resp.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0,
                                            stop=stop, stream=True, extra_body=NO_EOS))
    assert "".join(c.choices[0].text for c in chunks) == cut


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=seed,
                                         extra_body=NO_EOS).choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1  # not greedy in disguise


def test_n_choices(client):
    resp = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0, seed=11,
                                          n=3, extra_body=NO_EOS)
    assert sorted(c.index for c in resp.choices) == [0, 1, 2]
    assert resp.usage.completion_tokens == 3 * 8
    again = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0, seed=11,
                                           n=3, extra_body=NO_EOS)
    assert [c.message.content for c in again.choices] == [c.message.content for c in resp.choices]
    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0,
                                                 seed=11, n=3, stream=True, extra_body=NO_EOS))
    texts = {i: "" for i in range(3)}
    finished = set()
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1, 2}
    assert [texts[i] for i in range(3)] == [c.message.content for c in resp.choices]


def test_max_completion_tokens_wins_over_max_tokens(served):
    r = post(served, "/chat/completions", {"messages": CHAT, "max_tokens": 3, "max_completion_tokens": 5,
                                           "temperature": 0, **NO_EOS})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5


# ---------------------------------------------------------------------------- errors
def _assert_error_shape(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_wrong_or_missing_key_is_401(served, client):
    bad = openai.OpenAI(base_url=served.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    err = _assert_error_shape(post(served, "/chat/completions", {"messages": CHAT}, key=None), 401)
    assert err["code"] == "invalid_api_key"
    assert httpx.get(f"{served.url}/health").status_code == 200  # health and metrics stay open
    assert httpx.get(f"{served.url}/metrics").status_code == 200


def test_unknown_model_is_404(client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=CHAT, max_tokens=2)
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body, param", [
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}', "temperature"),
    ({"messages": CHAT, "temperature": -1}, "temperature"),
    ({"messages": CHAT, "temperature": "0.5"}, "temperature"),
    ({"messages": CHAT, "max_tokens": -3}, "max_tokens"),
    ({"messages": CHAT, "max_tokens": 10**30}, "max_tokens"),
    ({"messages": CHAT, "max_tokens": True}, "max_tokens"),
    ({"messages": CHAT, "top_p": 0}, "top_p"),
    ({"messages": CHAT, "n": 0}, "n"),
    ({"messages": CHAT, "n": 10**6}, "n"),
    ({"messages": CHAT, "seed": 2**70}, "seed"),
    ({"messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": CHAT, "stop": [""]}, "stop"),
    ({"messages": CHAT, "logprobs": True}, "logprobs"),
    ({"messages": CHAT, "top_logprobs": 3}, "top_logprobs"),
    ({"messages": CHAT, "presence_penalty": 1.0}, "presence_penalty"),
    ({"messages": CHAT, "stream": "yes"}, "stream"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content.0.type"),
    ({"messages": "hello"}, "messages"),
    ({}, "messages"),
    (b"{not json", None),
    (b"[1, 2, 3]", None),
])
def test_bad_chat_requests_are_400(served, body, param):
    err = _assert_error_shape(post(served, "/chat/completions", body), 400)
    assert err["param"] == param and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, param", [
    ({"prompt": [1, -2, 3]}, "prompt"),
    ({"prompt": [10**9]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": {"x": 1}}, "prompt"),
    ({"prompt": "x", "logprobs": 2}, "logprobs"),
    ({"prompt": "x", "echo": True}, "echo"),
])
def test_bad_completion_requests_are_400(served, body, param):
    err = _assert_error_shape(post(served, "/completions", body), 400)
    assert err["param"] == param


def test_sdk_sees_400_as_bad_request_and_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=CHAT, logprobs=True)
    ok = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, temperature=0)
    assert ok.usage.completion_tokens >= 1


def test_prompt_longer_than_the_context_is_400_even_when_streaming(served):
    long_prompt = "the quick brown fox " * 400  # the tiny model's context is 512 tokens
    for stream in (False, True):
        err = _assert_error_shape(post(served, "/completions", {"prompt": long_prompt, "stream": stream}), 400)
        assert "context" in err["message"]


def test_oversized_body_is_413(served):
    r = post(served, "/completions", {"prompt": "x" * (3 * 1024 * 1024)})
    _assert_error_shape(r, 413)


def test_full_queue_is_429(served):
    session, engine = served.session, served.engine
    old_limit, old_config = session.max_pending, engine.config
    session.max_pending = 12
    try:
        # more choices than the queue could ever hold: a 400 (retrying cannot help), nothing submitted
        err = _assert_error_shape(post(served, "/completions", {"prompt": "x", "max_tokens": 2, "n": 13}), 400)
        assert err["param"] == "n"
        # 12 long requests, one at a time (batching off): seconds of work holding every slot
        engine.reconfigure(old_config.with_(batching=BatchingConfig(enabled=False)))
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 480, "n": 12, "stream": True, **NO_EOS}
        with httpx.stream("POST", f"{served.base_url}/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
            lines = r.iter_lines()  # held: dropping the iterator would close the connection
            next(lines)
            err = _assert_error_shape(post(served, "/completions", {"prompt": "x", "max_tokens": 2}), 429)
            assert err["code"] == "queue_full"
    finally:
        session.max_pending = old_limit
        engine.reconfigure(old_config)
    ok = post(served, "/completions", {"prompt": "x", "max_tokens": 2})  # the slots came back
    assert ok.status_code == 200


# ---------------------------------------------------------------------------- behaviour under load
def test_client_disconnect_aborts_the_engine_request(served):
    watcher = EventWatcher(served.hub)
    try:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 400, "stream": True, **NO_EOS}
        with httpx.stream("POST", f"{served.base_url}/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
            lines = r.iter_lines()
            first = json.loads(next(lines)[len("data: "):])
            next(lines)
            closed_s = time.monotonic()
        events = watcher.until_finished(f"{first['id']}-0")
    finally:
        watcher.close()
    fin = events[-1]
    assert fin.reason.value == "cancelled"
    assert len(fin.token_ids) < 400
    # the abort lands at the engine's next step boundary: no more than a step or two ran after
    # the close (measured: 0-1 on the tiny model, whose steps take about a millisecond)
    steps_after = sum(1 for e in events if isinstance(e, ev.StepCompleted) and e.stats.timestamp_s > closed_s)
    assert steps_after <= 2, f"{steps_after} engine steps ran after the client went away"
    samples = scrape(served.url)
    assert metric(samples, "vllm:num_requests_running", model_name=MODEL) == 0
    assert metric(samples, "vllm:request_success_total", finished_reason="abort") >= 1
    assert served.session.clients == 0


def test_eight_concurrent_streams_complete_and_are_batched(served):
    before = scrape(served.url)

    async def one(aclient, i):
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"client {i} says"}], max_tokens=24,
            temperature=0, stream=True, stream_options={"include_usage": True}, extra_body=NO_EOS)
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        return text, usage

    async def main():
        async with openai.AsyncOpenAI(base_url=served.base_url, api_key=KEY, max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(8)))

    results = asyncio.run(main())
    assert all(u is not None and u.completion_tokens == 24 for _t, u in results)
    after = scrape(served.url)
    assert metric(after, "workbench:max_step_batch_size", model_name=MODEL) > 1
    batched_steps = (metric(after, "workbench:step_batch_size_count") - metric(after, "workbench:step_batch_size_bucket", le="1.0")) - (
        metric(before, "workbench:step_batch_size_count") - metric(before, "workbench:step_batch_size_bucket", le="1.0"))
    assert batched_steps > 0, "no step of this test ran more than one sequence"


def test_reconfigure_while_streaming_loses_nothing(served, reference):
    prompts = [f"{w} horse" for w in ("a", "my", "the", "no")]
    refs = [reference(GenerateRequest(prompt=p, sampling=SamplingParams(max_new_tokens=20, ignore_eos=True)))
            for p in prompts]
    original = served.engine.config
    texts = []
    try:
        with contextlib.ExitStack() as stack:
            streams = []
            for p in prompts:
                body = {"model": MODEL, "prompt": p, "max_tokens": 20, "temperature": 0, "stream": True, **NO_EOS}
                streams.append(stack.enter_context(httpx.stream(
                    "POST", f"{served.base_url}/completions", json=body,
                    headers={"Authorization": f"Bearer {KEY}"}, timeout=60)))
            served.engine.reconfigure(original.with_(batching=BatchingConfig(max_batch_size=2)))
            for r in streams:
                events = sse_events(r)
                assert events[-1] == "[DONE]"
                texts.append("".join(e["choices"][0]["text"] for e in events[:-1]))
    finally:
        served.engine.reconfigure(original)
    assert texts == [r.text for r in refs]


def test_metrics_counters_equal_the_sums_of_usage(served, client):
    before = scrape(served.url)
    usages = [
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5, temperature=0).usage,
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=7, temperature=0.8, seed=1).usage,
    ]
    stream = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=9, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    usages += [c.usage for c in stream if c.usage]
    after = scrape(served.url)

    def delta(name):
        return metric(after, name, model_name=MODEL) - metric(before, name, model_name=MODEL)

    assert delta("vllm:prompt_tokens_total") == sum(u.prompt_tokens for u in usages)
    assert delta("vllm:generation_tokens_total") == sum(u.completion_tokens for u in usages)
    assert delta("vllm:e2e_request_latency_seconds_count") == 3
    assert delta("vllm:time_to_first_token_seconds_count") == 3


def test_metrics_exposition_names(served):
    r = httpx.get(f"{served.url}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    samples = scrape(served.url)
    names = {name for name, _ in samples}
    for required in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                     "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                     "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                     "vllm:e2e_request_latency_seconds_bucket", "workbench:config_info", "workbench:model_info",
                     "workbench:model_weights_bytes"):
        assert required in names, required
    info = served.session.model_info
    assert metric(samples, "workbench:model_weights_bytes", model_name=MODEL) == info.weights_bytes
    assert metric(samples, "workbench:config_info", quantisation="none", kv_cache="on") == 1
    assert 0.0 <= metric(samples, "vllm:kv_cache_usage_perc", model_name=MODEL) <= 1.0


def test_the_workbench_remote_backend_drives_its_own_server(served, reference):
    """Loop-back: engine.remote's RemoteBackend (the openai SDK and a /metrics reader) against
    this server gives the engine's own greedy tokens and reads our vLLM-named metrics."""
    from engine.remote.backend import RemoteBackend, RemoteSpec
    from engine.remote.events import ServerMetricsSampled
    from engine.remote.server_stats import ServerEngine

    ref = reference(PROMPT10)
    backend = RemoteBackend(RemoteSpec(served.base_url, model=MODEL, api_key=KEY, metrics_interval_s=0.1)).start()
    try:
        assert backend.wait_connected(60)
        assert backend.engine_kind is ServerEngine.VLLM  # recognised by its metric names
        rid = backend.submit(PROMPT10)
        fin, sampled = None, None
        deadline = time.monotonic() + 60
        while fin is None or sampled is None:
            event = backend.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(event, ev.RequestFinished) and event.request_id == rid:
                fin = event
            elif (isinstance(event, ServerMetricsSampled) and fin is not None
                  and event.snapshot.taken_s > fin.timestamp_s):
                sampled = event.snapshot  # a scrape begun after the request ended
        assert fin.reason is ev.FinishReason.LENGTH
        assert list(fin.token_ids) == list(ref.token_ids) and fin.text == ref.text
        assert sampled.generation_tokens is not None and sampled.generation_tokens >= len(ref.token_ids)
        assert sampled.num_requests_running == 0
    finally:
        backend.shutdown()


# field -> (valid values, invalid values)
FUZZ_FIELDS = {
    "model": ([MODEL], [3, "", "x" * 600, ["tiny"], "other-model"]),
    "max_tokens": ([1, 3, 8], [0, -1, 2.5, "4", True, 10**40, float("nan")]),
    "max_completion_tokens": ([2], [-5, {}, 10**9 + 0.5]),
    "temperature": ([0, 0.7, 1e-9, 2], [-0.1, 3, "hot", float("inf"), [], 1e308]),
    "top_p": ([1, 0.5], [0, -1, 1.5, "1"]),
    "top_k": ([0, 5, -1], [-2, 1.5, 10**12]),
    "seed": ([0, 7, -3, 2**63 - 1, 2**64 - 1], [2**64, "7", 1.5]),
    "n": ([1, 2], [0, 17, "2", True]),
    "stop": (["e", ["e", "o"], []], [[""], ["a"] * 5, [1], "x" * 300, {"s": 1}]),
    "stream": ([False, True], ["yes", 1]),
    "logprobs": ([False], [True, 3]),
    "presence_penalty": ([0], [0.5, float("nan")]),
    "messages": ([CHAT, [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "a horse"}]}],
                  [{"role": "user", "content": "\x00\ud7ff\u2028 odd"}]],
                 [[], "hi", [{"role": "user", "content": 5}], [{"content": "no role"}],
                  [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]]),
}


def test_fuzzed_chat_requests_end_in_200_or_one_clear_error(served):
    """Seeded random requests, half with one bad field: every answer is a 200 or a 400/404 with
    the error shape (never a 500), and the server keeps serving afterwards."""
    import math
    import random

    rng = random.Random(14)
    statuses: dict[int, int] = {}
    for _ in range(120):
        body = {k: rng.choice(valid) for k, (valid, _bad) in FUZZ_FIELDS.items() if rng.random() < 0.5}
        body["messages"] = rng.choice(FUZZ_FIELDS["messages"][0])
        body.setdefault("max_tokens", 2)
        bad = rng.choice(list(FUZZ_FIELDS)) if rng.random() < 0.5 else None
        if bad is not None:
            body[bad] = rng.choice(FUZZ_FIELDS[bad][1])
        raw = json.dumps(body, allow_nan=True)  # NaN/Infinity literals, as a careless client sends them
        r = post(served, "/chat/completions", raw)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if bad is None:
            assert r.status_code == 200, (body, r.text)
        else:
            assert r.status_code in (400, 404), (bad, body[bad], r.text)
            _assert_error_shape(r, r.status_code)
            continue
        if body.get("stream") is True:
            assert r.text.rstrip().endswith("data: [DONE]")
        else:
            data = r.json()
            assert len(data["choices"]) == body.get("n", 1) and math.isfinite(data["usage"]["total_tokens"])
    assert statuses.get(200, 0) >= 30 and statuses.get(400, 0) >= 30, statuses
    ok = post(served, "/chat/completions", {"messages": CHAT, "max_tokens": 3, "temperature": 0})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_listening_socket_is_tcp_with_nodelay():
    """asyncio turns Nagle off on accepted connections only for a socket created as TCP; with
    Nagle on, each small SSE chunk waited ~40 ms for the client's delayed ACK."""
    import socket

    from app.serve.runner import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


def test_no_model_or_a_stopped_engine_is_503():
    from app.serve.runner import ServerThread
    from app.serve.session import ServeSession
    from engine.engine import Engine
    from engine.event_hub import EventHub

    engine = Engine(None).start()  # no model loaded
    hub = EventHub(engine.events).start()
    server = ServerThread(ServeSession(engine, hub), "127.0.0.1", 0).start()
    try:
        url = f"{server.url}/v1/chat/completions"
        assert httpx.get(f"{server.url}/health").status_code == 503
        err = _assert_error_shape(httpx.post(url, json={"messages": CHAT}), 503)
        assert err["code"] == "model_not_loaded"
        assert engine.shutdown()
        err = _assert_error_shape(httpx.post(url, json={"messages": CHAT}), 503)
        assert err["code"] == "engine_stopped"
    finally:
        assert server.stop()
        engine.shutdown()
        hub.stop()


def test_speculative_counters_under_ngram_speculation(served, reference):
    """With n-gram speculation switched on live, /metrics counts drafts and accepted tokens from
    the engine's own step stats, per position too, and greedy output is unchanged."""
    import queue as queue_mod

    from engine.config import SpeculativeConfig, SpeculativeMode

    prompt = "a horse a horse my kingdom for a horse a horse a horse my kingdom"
    request = GenerateRequest(prompt=prompt, sampling=SamplingParams(max_new_tokens=24, ignore_eos=True))
    ref = reference(request)
    applied: queue_mod.Queue = queue_mod.Queue()
    handle = served.hub.add_listener(lambda e: applied.put(e) if isinstance(e, ev.ConfigApplied) else None)
    original = served.engine.config
    try:
        served.engine.reconfigure(original.with_(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM,
                                                                                 num_draft_tokens=3)))
        assert applied.get(timeout=60).config.speculative.mode is SpeculativeMode.NGRAM
        before = scrape(served.url)
        r = post(served, "/completions", {"prompt": prompt, "max_tokens": 24, "temperature": 0, **NO_EOS})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == ref.text
        after = scrape(served.url)
    finally:
        served.engine.reconfigure(original)
        applied.get(timeout=60)
        served.hub.remove_listener(handle)

    def delta(name, **labels):
        def value(samples):
            try:
                return metric(samples, name, model_name=MODEL, **labels)
            except AssertionError:  # a labelled series that did not exist yet
                return 0.0
        return value(after) - value(before)

    drafts = delta("vllm:spec_decode_num_drafts_total")
    drafted = delta("vllm:spec_decode_num_draft_tokens_total")
    accepted = delta("vllm:spec_decode_num_accepted_tokens_total")
    per_pos = [delta("vllm:spec_decode_num_accepted_tokens_per_pos_total", position=str(i)) for i in range(3)]
    assert drafts > 0 and 0 <= accepted <= drafted <= 3 * drafts
    assert sum(per_pos) == accepted
    assert per_pos == sorted(per_pos, reverse=True)  # position i+1 is accepted only after position i
    assert metric(after, "workbench:config_info", speculative="ngram") == 1
