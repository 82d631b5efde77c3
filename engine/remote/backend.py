"""RemoteBackend: any OpenAI-compatible server behind the same surface as engine.Engine.

submit(GenerateRequest) -> request id, abort(id), reconfigure (refused: a server's settings are
its launch flags), load_model(name), shutdown(), and an `events` queue of the same frozen
dataclasses the local engine emits (RequestQueued, TokensGenerated, RequestFinished with
RequestStats from engine.metrics.request_stats, StepCompleted), plus ServerMetricsSampled.

Client side is the official `openai` SDK: streamed chat / completions with
stream_options.include_usage; cancel = close the stream. Each request streams on its own
thread (the SDK's streams are blocking); a scraper thread reads /metrics when the server has it.
Figures the server does not give are None (unknown), never 0.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace

import openai

from engine import events as ev
from engine.config import GenerateRequest
from engine.events import EngineState, FinishReason, TokenOrigin, now_s
from engine.remote.errors import describe_error
from engine.remote.events import RemoteConnected, ServerMetricsSampled
from engine.remote.prom import MetricsParseError, Scrape, parse_metrics
from engine.remote.server_stats import (
    ServerEngine,
    ServerSnapshot,
    detect_engine,
    interval,
    snapshot,
)
from engine.remote.step_stats import step_stats_from
from engine.remote.stream import (
    StreamResult,
    close_stream,
    fit_counts,
    open_stream,
    read_stream,
    remote_request_stats,
)

log = logging.getLogger(__name__)

LAUNCH_FLAGS_REASON = (
    "a remote server's KV cache, batching, quantisation and speculative settings are its launch "
    "flags: they cannot change at runtime. Start it again with other flags (a launch profile).")

MAX_BODY_BYTES = 8 << 20  # a /metrics page larger than this is refused


@dataclass(frozen=True)
class RemoteSpec:
    base_url: str  # the OpenAI base, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # None: the first model the server lists
    api_key: str | None = None
    read_timeout_s: float = 120.0  # longest silence accepted while waiting for a chunk
    connect_timeout_s: float = 5.0
    metrics_url: str | None = None  # default: <server root>/metrics
    metrics_interval_s: float = 0.5  # 0: no scraping

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"backend URL must start with http:// or https://, got {self.base_url!r}")
        if self.read_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def root_url(self) -> str:
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    @property
    def resolved_metrics_url(self) -> str:
        return self.metrics_url or self.root_url + "/metrics"


@dataclass
class _Live:
    request: GenerateRequest
    submitted_s: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    stream: object = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False  # the terminal event went out


def http_get(url: str, timeout_s: float, api_key: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the user's own server URL
        body = resp.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"{url}: answer larger than {MAX_BODY_BYTES} bytes")
    return body


def list_models(spec: RemoteSpec) -> tuple[str, ...]:
    """The model ids the server lists on /v1/models (blocking: call it off the GUI thread).
    Raises RuntimeError with one clear sentence when the server cannot be asked."""
    client = openai.OpenAI(base_url=spec.base_url, api_key=spec.api_key or "EMPTY", max_retries=0,
                           timeout=openai.Timeout(spec.connect_timeout_s * 2, connect=spec.connect_timeout_s))
    try:
        return tuple(m.id for m in client.models.list())
    except openai.NotFoundError as exc:
        raise RuntimeError(f"{spec.base_url} has no model list (HTTP 404 on /models): type the model's "
                           "name") from exc
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence for the user
        raise RuntimeError(describe_error(exc, spec, spec.model)) from exc
    finally:
        client.close()


class RemoteBackend:
    """Thread-safe handle over one server and one model."""

    def __init__(self, spec: RemoteSpec | str, *, event_queue: queue.Queue | None = None) -> None:
        self.spec = RemoteSpec(spec) if isinstance(spec, str) else spec
        self.events: queue.Queue[ev.EngineEvent] = event_queue or queue.Queue()
        self.model: str | None = self.spec.model
        self.engine_kind: ServerEngine = ServerEngine.OPENAI
        self.has_metrics = False
        self._client = openai.OpenAI(
            base_url=self.spec.base_url, api_key=self.spec.api_key or "EMPTY", max_retries=0,
            timeout=openai.Timeout(self.spec.read_timeout_s, connect=self.spec.connect_timeout_s))
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(2).hex()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._last_snapshot: ServerSnapshot | None = None
        self.connect_wait_s = self.spec.connect_timeout_s * 3  # how long a request waits for the probe

    # ---- lifecycle
    def start(self) -> "RemoteBackend":
        if self._started:
            raise RuntimeError("backend already started")
        self._started = True
        self._spawn(self._connect, "workbench-remote-connect")
        return self

    @property
    def is_alive(self) -> bool:
        return self._started and not self._stop.is_set()

    @property
    def config(self) -> None:
        """A remote server has no EngineConfig of ours: its settings are launch flags."""
        return None

    @property
    def config_label(self) -> str:
        return f"remote {self.engine_kind.value} · {self.model or '?'}"

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Cancel every request in flight (closing its stream), stop the scraper, join."""
        if not self._started:
            return True
        self._stop.set()
        with self._lock:
            ids = list(self._live)
        for rid in ids:
            self.abort(rid)
        deadline = now_s() + timeout
        ok = True
        for t in list(self._threads):
            t.join(max(0.0, deadline - now_s()))
            ok = ok and not t.is_alive()
        self.events.put(ev.StateChanged(EngineState.STOPPED))
        return ok

    # ---- commands (any thread)
    def submit(self, request: GenerateRequest) -> str:
        if request.request_id is None:
            request = replace(request, request_id=f"remote-{self._id_prefix}-{next(self._ids)}")
        rid = request.request_id
        submitted = now_s()
        live = _Live(request=request, submitted_s=submitted)
        with self._lock:
            if rid in self._live:
                raise ValueError(f"request id {rid!r} is already in flight")
            first = not self._live
            self._live[rid] = live
        prompt_tokens = len(request.prompt_token_ids) if request.prompt_token_ids is not None else None
        self.events.put(ev.RequestQueued(request_id=rid, prompt_tokens=prompt_tokens, tag=request.tag,
                                         timestamp_s=submitted))
        if first:
            self.events.put(ev.StateChanged(EngineState.RUNNING))
        live.thread = self._spawn(lambda: self._run_request(rid, live), f"workbench-remote-{rid}")
        return rid

    def abort(self, request_id: str) -> None:
        """Close the request's stream: the server sees the client go and stops generating."""
        with self._lock:
            live = self._live.get(request_id)
        if live is None:
            return
        live.cancelled.set()
        with live.lock:
            stream = live.stream
        if stream is not None:
            close_stream(stream)
            return
        # still waiting for the server's first byte: the request ends now; its thread closes
        # the connection as soon as the server answers (or its read timeout fires)
        t = now_s()
        stats = remote_request_stats(live.request, live.submitted_s, StreamResult(), t)
        self._finish(request_id, live, ev.RequestFinished(
            request_id=request_id, reason=FinishReason.CANCELLED, text="", token_ids=(), stats=stats,
            config_label=self.config_label, tag=live.request.tag, timestamp_s=t))

    def reconfigure(self, config: object) -> None:
        self.events.put(ev.EngineErrorEvent(message=LAUNCH_FLAGS_REASON, where="config"))

    def load_model(self, spec: object) -> None:
        """Switch to another model the same server serves (its name, or a ModelSpec)."""
        name = getattr(spec, "name_or_path", spec)
        self.model = str(name)
        self._connected.clear()
        self._spawn(lambda: self._connect(scrape=False), "workbench-remote-connect")

    # ---- threads
    def _spawn(self, target, name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return t

    def _connect(self, scrape: bool = True) -> None:
        self.events.put(ev.StateChanged(EngineState.LOADING, detail=self.spec.base_url))
        listed = True
        try:
            models = list(self._client.models.list())
        except openai.NotFoundError as exc:
            if self.model is None:  # no list and no name: nothing to ask for
                self._connect_failed(exc, f"{self.spec.base_url} lists no models (HTTP 404 on /models) "
                                          "and no model was named: give one (--model)")
                return
            models, listed = [], False  # a server without /v1/models: trust the name given
            log.info("%s has no /v1/models; using model %r as given", self.spec.base_url, self.model)
        except Exception as exc:  # noqa: BLE001 - any failure is reported as one clear event
            self._connect_failed(exc)
            return
        ids = tuple(m.id for m in models)
        if self.model is None and ids:
            self.model = ids[0]
        chosen = next((m for m in models if m.id == self.model), None)
        if chosen is None and listed:
            self.events.put(ev.EngineErrorEvent(
                message=f"model {self.model!r} is not served at {self.spec.base_url}; it serves: "
                        f"{', '.join(ids) or 'nothing'}", where="load"))
        first = self._scrape() if scrape else None
        if first is not None:
            self.has_metrics = True
        ollama = None if first is not None else self._ollama_version()
        extra = (chosen.model_extra or {}) if chosen is not None else {}
        owned_by = getattr(chosen, "owned_by", None)
        self.engine_kind = detect_engine(first, owned_by=owned_by, ollama_version=ollama)
        max_len = extra.get("max_model_len")
        self.events.put(RemoteConnected(
            base_url=self.spec.base_url, model=self.model or "", engine=self.engine_kind, models=ids,
            has_metrics=self.has_metrics, max_model_len=max_len if isinstance(max_len, int) else None))
        if chosen is not None or not listed:
            self.events.put(ev.ModelLoaded(ev.ModelInfo(
                name_or_path=self.model, architecture=f"remote · {self.engine_kind.value}", num_params=None,
                dtype=None, device=self.spec.root_url, weights_bytes=None, quantisation=None,
                vocab_size=None, has_chat_template=None)))
        if first is not None:
            self._last_snapshot = snapshot(first, self.engine_kind)
            self.events.put(ServerMetricsSampled(snapshot=self._last_snapshot, interval=None))
            if self.spec.metrics_interval_s > 0:
                self._spawn(self._scrape_loop, "workbench-remote-metrics")
        with self._lock:
            busy = bool(self._live)
        if not busy:
            self.events.put(ev.StateChanged(EngineState.IDLE))
        self._connected.set()

    def _connect_failed(self, exc: Exception, message: str | None = None) -> None:
        message = message or describe_error(exc, self.spec, self.model)
        self.events.put(ev.EngineErrorEvent(message=message, where="load"))
        self.events.put(ev.StateChanged(EngineState.IDLE))
        self._connected.set()

    def _ollama_version(self) -> str | None:
        try:
            body = json.loads(http_get(self.spec.root_url + "/api/version", self.spec.connect_timeout_s))
        except (OSError, ValueError):
            return None
        v = body.get("version") if isinstance(body, dict) else None
        return v if isinstance(v, str) else None

    def _scrape(self) -> Scrape | None:
        t = now_s()
        try:
            text = http_get(self.spec.resolved_metrics_url, self.spec.connect_timeout_s).decode("utf-8", "replace")
            return parse_metrics(text, taken_s=t)
        except (OSError, ValueError, MetricsParseError) as exc:
            log.debug("no /metrics at %s: %s", self.spec.resolved_metrics_url, exc)
            return None

    def scrape_now(self) -> ServerSnapshot | None:
        """One synchronous read of /metrics under our names (None when the server has none)."""
        s = self._scrape()
        return None if s is None else snapshot(s, self.engine_kind)

    def _scrape_loop(self) -> None:
        while not self._stop.wait(self.spec.metrics_interval_s):
            s = self._scrape()
            if s is None:
                continue
            snap = snapshot(s, self.engine_kind)
            prev, self._last_snapshot = self._last_snapshot, snap
            iv = interval(prev, snap) if prev is not None else None
            self.events.put(ServerMetricsSampled(snapshot=snap, interval=iv))
            step = step_stats_from(snap, iv)
            if step is not None:
                self.events.put(ev.StepCompleted(step))

    # ---- one request
    def _run_request(self, rid: str, live: _Live) -> None:
        def emit(piece: str, tok: list[int] | None, t: float) -> None:
            self.events.put(ev.TokensGenerated(
                request_id=rid, text=piece, token_ids=tuple(tok or ()),
                origins=(TokenOrigin.TARGET,) * len(tok or ()), timestamp_s=t))

        got = StreamResult()
        stream = None
        try:
            # the connect probe says which engine this is (which fields it takes); bounded wait
            self._connected.wait(self.connect_wait_s)
            stream = open_stream(self._client, live.request, self.model or "", self.engine_kind)
            with live.lock:
                live.stream = stream
            if live.cancelled.is_set():
                close_stream(stream)
            read_stream(stream, got, emit, live.cancelled)
        except Exception as exc:  # noqa: BLE001 - the server's failure ends this request only
            if not live.cancelled.is_set():
                got.error = describe_error(exc, self.spec, self.model, tokens_so_far=sum(got.counts))
        finally:
            if stream is not None:
                close_stream(stream)
        finished_s = now_s()
        if live.cancelled.is_set():
            reason = FinishReason.CANCELLED
        elif got.error is not None:
            reason = FinishReason.ERROR
        elif got.finish is None:
            reason = FinishReason.ERROR
            got.error = (f"the stream from {self.spec.base_url} ended without a finish reason after "
                         f"{sum(got.counts)} tokens: the answer is interrupted")
        else:
            reason = FinishReason.LENGTH if got.finish == "length" else FinishReason.STOP
        if got.usage is not None and not got.exact_counts and reason is not FinishReason.ERROR:
            got.counts = fit_counts(got.counts, int(got.usage.completion_tokens or 0))
        stats = remote_request_stats(live.request, live.submitted_s, got, finished_s)
        error = got.error
        if error is not None and sum(got.counts):
            error += " (answer interrupted: the partial answer is kept)"
        self._finish(rid, live, ev.RequestFinished(
            request_id=rid, reason=reason, text="".join(got.text), token_ids=tuple(got.ids), stats=stats,
            config_label=self.config_label, error=error, tag=live.request.tag, timestamp_s=finished_s))

    def _finish(self, rid: str, live: _Live, event: ev.RequestFinished) -> None:
        """Emit the request's one terminal event (abort may have emitted it already)."""
        with live.lock:
            if live.finished:
                return
            live.finished = True
        with self._lock:
            self._live.pop(rid, None)
            idle = not self._live
        self.events.put(event)
        if idle:
            self.events.put(ev.StateChanged(EngineState.IDLE))
