"""The server's side of one engine: what is loaded, admission, and per-request event streams.

The server talks to the engine only through its public API (submit, abort, config) and the
event hub. Each HTTP request becomes one or more engine requests (several prompts, `n`
choices); their events arrive on the hub thread and are handed to the server's event loop
with call_soon_threadsafe, merged into one asyncio queue per HTTP request.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from app.serve.metrics import ServeMetrics
from app.serve.openai_schema import APIError, Defaults
from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, SamplingParams
from engine.engine import Engine, EngineClosed
from engine.event_hub import EventHub
from engine.generation_defaults import generation_defaults

DEFAULT_MAX_TOKENS = 512  # when a client gives no max_tokens (the engine also stops at the context end)
DEFAULT_MAX_PENDING = 256  # engine requests from this server in flight before 429


def model_id_for(name_or_path: str) -> str:
    """The id clients use: a directory's name, or a hub id as it is."""
    path = Path(name_or_path)
    if path.is_absolute() or name_or_path.startswith((".", "~")):
        return path.name or name_or_path
    return name_or_path


@dataclass(frozen=True)
class SubRequest:
    """One engine request of an HTTP request: which choice and prompt it answers."""

    index: int  # the choice index in the response
    prompt_index: int
    request: GenerateRequest


class LoopHandoff:
    """Hands events from the hub thread to the server's event loop with one wake-up per burst:
    a step's events for every stream arrive together, so the loop is woken once, not once per
    event (each wake-up is a system call and a trip through the interpreter lock)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[Callable, object]] = []

    def send(self, put: Callable, item: object) -> None:
        with self._lock:
            wake = not self._items
            self._items.append((put, item))
        if wake:
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for put, item in items:
            put(item)


class ServeSession:
    def __init__(self, engine: Engine, hub: EventHub, *, model_info: ev.ModelInfo | None = None,
                 config: EngineConfig | None = None, served_model_name: str | None = None,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS, max_pending: int = DEFAULT_MAX_PENDING,
                 api_key: str | None = None) -> None:
        self.engine = engine
        self.hub = hub
        self.served_model_name = served_model_name
        self.default_max_tokens = default_max_tokens
        self.max_pending = max_pending
        self.api_key = api_key
        self.on_clients_changed: Callable[[int], None] | None = None  # called on the server thread
        self._lock = threading.Lock()
        self._model_info: ev.ModelInfo | None = None
        self._defaults: dict[str, Defaults] = {}
        self._state = ev.EngineState.IDLE
        self._pending: set[str] = set()
        self._clients = 0
        self._handoffs: dict[asyncio.AbstractEventLoop, LoopHandoff] = {}
        self.metrics = ServeMetrics()
        if model_info is not None:
            self._set_model(model_info)
        cfg = config or engine.config
        self.metrics.set_config(cfg.to_dict(), cfg.describe())
        self._listener = hub.add_listener(self._on_event)

    def close(self) -> None:
        self.hub.remove_listener(self._listener)
        with self._lock:
            pending = list(self._pending)
        for rid in pending:
            self.engine.abort(rid)

    # ---- engine-wide state (hub thread)
    def _on_event(self, event: ev.EngineEvent) -> None:
        if isinstance(event, ev.ModelLoaded):
            self._set_model(event.info)
        elif isinstance(event, ev.StateChanged):
            self._state = event.state
        self.metrics.record(event)

    def _set_model(self, info: ev.ModelInfo) -> None:
        with self._lock:
            self._model_info = info
        self.metrics.set_model_name(self.model_id or "")
        self.metrics.set_model(info)

    @property
    def model_info(self) -> ev.ModelInfo | None:
        return self._model_info

    @property
    def model_id(self) -> str | None:
        info = self._model_info
        if self.served_model_name:
            return self.served_model_name
        return None if info is None else model_id_for(info.name_or_path)

    def accepts_model(self, name: str | None) -> bool:
        info = self._model_info
        if name is None:
            return True
        return name == self.model_id or (info is not None and name == info.name_or_path)

    def defaults(self) -> Defaults:
        info = self._model_info
        key = info.name_or_path if info else ""
        if key not in self._defaults:
            sampling = generation_defaults(key) if key and os.path.isdir(key) else SamplingParams()
            self._defaults[key] = Defaults(sampling=sampling, max_tokens=self.default_max_tokens)
        return self._defaults[key]

    # ---- clients (server thread)
    @property
    def clients(self) -> int:
        return self._clients

    def client_started(self) -> None:
        self._clients += 1
        self._clients_changed()

    def client_ended(self) -> None:
        self._clients -= 1
        self._clients_changed()

    def _clients_changed(self) -> None:
        self.metrics.http_clients.set(self._clients)
        if self.on_clients_changed is not None:
            self.on_clients_changed(self._clients)

    # ---- admission
    def check_available(self, model: str | None) -> None:
        if self._state is ev.EngineState.STOPPED or not self.engine.is_alive:
            raise APIError(503, "the engine is stopped", type="server_error", code="engine_stopped")
        if self._model_info is None:
            raise APIError(503, "no model is loaded yet", type="server_error", code="model_not_loaded")
        if not self.accepts_model(model):
            raise APIError(404, f"The model `{model}` does not exist; this server serves `{self.model_id}`",
                           param="model", code="model_not_found")

    def handoff(self, loop: asyncio.AbstractEventLoop) -> LoopHandoff:
        """The hand-off to `loop` (one per event loop: the server has one)."""
        with self._lock:
            if loop not in self._handoffs:
                self._handoffs[loop] = LoopHandoff(loop)
            return self._handoffs[loop]

    def new_request_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    def generation(self, subs: list[SubRequest]) -> "Generation":
        return Generation(self, subs)


class Generation:
    """The engine requests of one HTTP request, as an async context: reserves admission,
    subscribes before submitting, and on exit aborts whatever has not finished."""

    def __init__(self, session: ServeSession, subs: list[SubRequest]) -> None:
        self.session = session
        self.subs = subs
        self.queue: asyncio.Queue[tuple[int, ev.EngineEvent]] = asyncio.Queue()
        self.prompt_tokens: dict[int, int] = {}  # choice index -> prompt tokens
        self.finished: dict[int, ev.RequestFinished] = {}
        self._early: list[tuple[int, ev.EngineEvent]] = []  # events read while waiting for the start
        self._ids = [s.request.request_id for s in subs]

    async def __aenter__(self) -> "Generation":
        s = self.session
        if len(self.subs) > s.max_pending:  # would never fit: retrying cannot help, so not a 429
            raise APIError(400, f"this request needs {len(self.subs)} engine requests (prompts x n); the server "
                                f"takes at most {s.max_pending} at once", param="n")
        with s._lock:
            if len(s._pending) + len(self.subs) > s.max_pending:
                raise APIError(429, f"the server's queue is full ({s.max_pending} requests in flight); "
                                    "retry later", type="rate_limit_exceeded", code="queue_full")
            s._pending.update(self._ids)
        handoff = s.handoff(asyncio.get_running_loop())
        put = self.queue.put_nowait
        for sub in self.subs:
            s.hub.subscribe(sub.request.request_id, lambda e, i=sub.index: handoff.send(put, (i, e)))
        try:
            for sub in self.subs:
                s.engine.submit(sub.request)
        except EngineClosed:
            await self.__aexit__(None, None, None)
            raise APIError(503, "the engine is shut down", type="server_error", code="engine_stopped") from None
        return self

    async def __aexit__(self, *exc) -> None:
        s = self.session
        for sub in self.subs:
            rid = sub.request.request_id
            if sub.index not in self.finished:
                s.engine.abort(rid)  # a client gone, or an error: free the batch slot now
            s.hub.unsubscribe(rid)
        with s._lock:
            s._pending.difference_update(self._ids)

    async def started(self) -> None:
        """Wait until every engine request is queued; an engine refusal (prompt too long, no
        template) becomes a 400 before any response byte is sent."""
        waiting = {sub.index for sub in self.subs}
        while waiting:
            index, event = await self.queue.get()
            self._early.append((index, event))
            if isinstance(event, ev.RequestQueued):
                self.prompt_tokens[index] = event.prompt_tokens
                waiting.discard(index)
            elif isinstance(event, ev.RequestFinished):
                self.finished[index] = event
                waiting.discard(index)
                if event.reason is ev.FinishReason.ERROR and index not in self.prompt_tokens:
                    raise APIError(400, event.error or "the engine refused the request", param="messages"
                                   if self.subs[0].request.messages is not None else "prompt")

    async def events(self) -> AsyncIterator[tuple[int, ev.EngineEvent]]:
        """(choice index, event) until every engine request has finished."""
        early, self._early = self._early, []
        for item in early:
            if not isinstance(item[1], ev.RequestQueued):
                yield item
        while len(self.finished) < len(self.subs):
            index, event = await self.queue.get()
            if isinstance(event, ev.RequestFinished):
                self.finished[index] = event
            yield index, event
