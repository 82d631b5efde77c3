"""Protocol corner cases no real server produces on demand (malformed chunks, a stream cut
without a finish, silence, llama.cpp's timings), from a small local fake over a real socket.
These stand beside the real-server tests in test_remote_servers.py, not instead of them."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine import events as ev
from engine.config import GenerateRequest, SamplingParams
from engine.remote import RemoteBackend, RemoteSpec
from engine.remote.events import RemoteConnected
from engine.remote.server_stats import ServerEngine
from tests.helpers.remote_servers import finished, wait_for

MODELS = ["ok", "malformed", "noncompliant", "cut", "silent", "held", "nousage", "timings", "error-event"]
LLAMACPP_METRICS = "# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 0\n"


def _chunk(content: str | None = None, finish: str | None = None, **extra) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event  # set at teardown: 'silent' never answers before
    hold: threading.Event  # 'held' answers (with nothing) once a test sets this

    def log_message(self, *args) -> None:  # keep test output quiet
        return

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "llamacpp"} for m in MODELS]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        elif self.path == "/metrics":
            self._send(200, LLAMACPP_METRICS.encode(), "text/plain")
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        type(self).requests.append(body)
        if model == "silent":
            type(self).release.wait(30)
            return
        if model == "held":
            type(self).hold.wait(30)
            self._send(200, b"")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        w = self.wfile.write
        w(_chunk("he"))
        if model == "malformed":
            w(b"data: {this is not json\n\n")
        elif model == "noncompliant":
            w(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": 7}\n\n')
        elif model == "cut":
            self.wfile.flush()
            return  # the connection closes: no finish reason, no [DONE]
        elif model == "error-event":
            w(b'data: {"error": {"message": "engine core died", "type": "internal"}}\n\n')
        else:
            w(_chunk("ll"))
            w(_chunk("o", finish="length"))
            if model == "timings":
                w(_chunk(None, timings={"prompt_n": 5, "prompt_ms": 10.0, "predicted_n": 3, "predicted_ms": 30.0,
                                        "draft_n": 4, "draft_n_accepted": 3}, usage=USAGE))
            elif model == "nousage":
                pass
            else:
                w(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", '
                  b'"choices": [], "usage": ' + json.dumps({**USAGE, "completion_tokens": 6}).encode() + b"}\n\n")
        w(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def fake():
    handler = type("Handler", (_Handler,), {"release": threading.Event(), "hold": threading.Event(),
                                       "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    handler.release.set()
    handler.hold.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def backend_for(fake):
    made = []

    def make(model: str, **kw) -> RemoteBackend:
        b = RemoteBackend(RemoteSpec(f"http://127.0.0.1:{fake.server_address[1]}/v1", model=model,
                                     metrics_interval_s=0, **kw)).start()
        assert b.wait_connected(10)
        made.append(b)
        return b

    yield make
    for b in made:
        assert b.shutdown(timeout=5)


def _ask(b: RemoteBackend, seen: list | None = None, **sampling) -> ev.RequestFinished:
    rid = b.submit(GenerateRequest(messages=(("user", "hi"),), sampling=SamplingParams(max_new_tokens=8, **sampling)))
    return wait_for(b.events, finished(rid), timeout=30, seen=seen)


def test_chunk_counts_fit_the_usage_figure(backend_for):
    seen: list = []
    fin = _ask(backend_for("ok"), seen)
    assert fin.reason is ev.FinishReason.LENGTH and fin.text == "hello"
    # three chunks, usage says 6 tokens: the last emission carries the rest
    assert fin.stats.completion_tokens == 6 and fin.stats.prompt_tokens == 5
    assert len(fin.stats.itl_s) == 2
    connected = next(e for e in seen if isinstance(e, RemoteConnected))
    assert connected.engine is ServerEngine.LLAMACPP and connected.has_metrics


def test_without_usage_tokens_are_counted_by_chunk_and_prompt_is_unknown(backend_for):
    fin = _ask(backend_for("nousage"))
    assert fin.error is None and fin.stats.completion_tokens == 3
    assert fin.stats.prompt_tokens is None and fin.stats.cached_prompt_tokens is None


def test_llamacpp_timings_fill_speculative_and_prefill_figures(backend_for, fake):
    fin = _ask(backend_for("timings"), top_k=5)
    assert (fin.stats.spec.num_draft_tokens, fin.stats.spec.num_accepted_tokens) == (4, 3)
    assert fin.stats.spec.acceptance_rate == pytest.approx(0.75)
    assert fin.stats.prefill_tokens_per_s == pytest.approx(500.0)
    sent = fake.RequestHandlerClass.requests[-1]
    assert sent["top_k"] == 5 and sent["stream_options"] == {"include_usage": True}  # llama.cpp takes top_k


@pytest.mark.parametrize("model, words", [
    ("malformed", "malformed stream chunk"),
    ("noncompliant", "malformed stream chunk"),
    ("cut", "interrupted"),
    ("error-event", "engine core died"),
])
def test_broken_streams_end_with_one_error_and_keep_the_partial_text(backend_for, model, words):
    b = backend_for(model)
    seen: list = []
    fin = _ask(b, seen)
    assert fin.reason is ev.FinishReason.ERROR and words in fin.error, fin.error
    assert fin.text == "he" and "partial answer is kept" in fin.error
    assert sum(isinstance(e, ev.RequestFinished) for e in seen) == 0  # the one terminal event
    b.load_model("ok")
    assert b.wait_connected(10)
    again = _ask(b)
    assert again.reason is ev.FinishReason.LENGTH and again.text == "hello"


def test_silence_times_out_and_the_next_request_works(backend_for):
    b = backend_for("silent", read_timeout_s=0.5)
    fin = _ask(b)
    assert fin.reason is ev.FinishReason.ERROR and "timed out" in fin.error and "0.5 s" in fin.error
    b.load_model("ok")
    assert b.wait_connected(10)
    assert _ask(b).text == "hello"


def test_abort_before_the_first_byte_ends_the_request_at_once(backend_for, fake):
    b = backend_for("held", read_timeout_s=20)
    rid = b.submit(GenerateRequest(prompt="hi", sampling=SamplingParams(max_new_tokens=4)))
    wait_for(b.events, lambda e: isinstance(e, ev.RequestQueued))
    b.abort(rid)
    fin = wait_for(b.events, finished(rid), timeout=5)  # well inside the 20 s read timeout
    assert fin.reason is ev.FinishReason.CANCELLED and fin.error is None
    assert fin.stats.completion_tokens == 0 and fin.stats.ttft_s is None
    fake.RequestHandlerClass.hold.set()  # the server answers late: no second terminal event
    b.load_model("ok")
    assert b.wait_connected(10)
    seen: list = []
    again = _ask(b, seen)
    assert again.text == "hello"
    assert b.shutdown(timeout=5)  # the held request's thread ended too
    while not b.events.empty():
        seen.append(b.events.get_nowait())
    assert not [e for e in seen if isinstance(e, ev.RequestFinished) and e.request_id == rid]


def test_a_server_without_a_model_list_serves_the_model_named(fake):
    url = f"http://127.0.0.1:{fake.server_address[1]}/nolist/v1"  # /nolist/v1/models answers 404
    b = RemoteBackend(RemoteSpec(url, model="ok", metrics_interval_s=0)).start()
    try:
        seen: list = []
        fin = _ask(b, seen)
        assert fin.text == "hello" and fin.error is None
        assert not [e for e in seen if isinstance(e, ev.EngineErrorEvent)]
        assert next(e for e in seen if isinstance(e, RemoteConnected)).models == ()
    finally:
        assert b.shutdown(timeout=5)
    nameless = RemoteBackend(RemoteSpec(url, metrics_interval_s=0)).start()
    try:
        err = wait_for(nameless.events, lambda e: isinstance(e, ev.EngineErrorEvent), timeout=10)
        assert err.where == "load" and "no model was named" in err.message
    finally:
        assert nameless.shutdown(timeout=5)
