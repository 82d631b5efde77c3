"""Fan-out of one engine's event queue to several consumers (GUI bridge, HTTP server, ...).

An Engine has one event queue and a queue has one reader. The hub is that reader: a thread
that blocks on the engine's queue and hands every event to

- *listeners*, which see every event (a GUI bridge, a metrics recorder), and
- *request sinks*, which see only the events of one request id (an HTTP stream).

Listeners get each event before its request's sink, so a consumer that answers a client when
its sink sees the terminal event knows every listener (e.g. a metrics counter) has it too.
Sinks are called on the hub thread: they must be quick and must not block (hand the event to
a queue or an event loop). A sink that raises is dropped and logged; it never stops the hub.
Qt-free on purpose: the engine layer must not import Qt.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Callable

from engine import events as ev

log = logging.getLogger(__name__)

Sink = Callable[[ev.EngineEvent], None]

_STOP = object()  # sentinel put on the engine's queue to wake and end the hub thread


def event_request_id(event: ev.EngineEvent) -> str | None:
    """The request an event belongs to, or None for engine-wide events."""
    return getattr(event, "request_id", None)


class EventHub:
    def __init__(self, source: queue.Queue) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._listeners: dict[int, Sink] = {}
        self._sinks: dict[str, Sink] = {}
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> "EventHub":
        if self._thread is not None:
            raise RuntimeError("event hub already started")
        self._thread = threading.Thread(target=self._run, name="workbench-event-hub", daemon=True)
        self._thread.start()
        return self

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> bool:
        """Deliver what is already queued, then end the thread; True when it joined in time."""
        if self._thread is None:
            return True
        self._source.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- subscriptions (any thread)
    def add_listener(self, sink: Sink) -> int:
        """Call sink(event) for every event; returns a handle for remove_listener."""
        with self._lock:
            handle = next(self._ids)
            self._listeners[handle] = sink
        return handle

    def remove_listener(self, handle: int) -> None:
        with self._lock:
            self._listeners.pop(handle, None)

    def open_queue(self) -> queue.Queue:
        """A new queue that receives every event (for a consumer that drains a queue, like the
        GUI bridge). It lives as long as the hub."""
        q: queue.Queue = queue.Queue()
        self.add_listener(q.put)
        return q

    def subscribe(self, request_id: str, sink: Sink) -> None:
        """Route the events of request_id to sink. Subscribe before submitting the request
        (choose its id yourself) so that no event can pass before the sink is in place."""
        with self._lock:
            if request_id in self._sinks:
                raise ValueError(f"request {request_id!r} already has a subscriber")
            self._sinks[request_id] = sink

    def unsubscribe(self, request_id: str) -> None:
        with self._lock:
            self._sinks.pop(request_id, None)

    # ---- thread body
    def _run(self) -> None:
        while True:
            event = self._source.get()
            if event is _STOP:
                return
            self._deliver(event)

    def _deliver(self, event: ev.EngineEvent) -> None:
        rid = event_request_id(event)
        with self._lock:
            listeners = list(self._listeners.items())
            sink = self._sinks.get(rid) if rid is not None else None
            if isinstance(event, ev.RequestFinished):
                self._sinks.pop(rid, None)  # the terminal event: nothing follows for this id
        for handle, listener in listeners:
            if not self._call(listener, event):
                self.remove_listener(handle)
        if sink is not None and not self._call(sink, event):
            self.unsubscribe(rid)

    @staticmethod
    def _call(sink: Sink, event: ev.EngineEvent) -> bool:
        try:
            sink(event)
        except Exception:  # noqa: BLE001 - one broken consumer must not starve the others
            log.exception("event consumer failed; it is removed")
            return False
        return True
