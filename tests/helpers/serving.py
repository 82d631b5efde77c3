"""A real `workbench serve` stack (engine, event hub, session, uvicorn thread) on a free local
port, and small readers for its SSE streams and Prometheus text."""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.serve.runner import ServerThread
from app.serve.session import ServeSession
from engine import events as ev
from engine.config import EngineConfig
from engine.engine import Engine
from engine.event_hub import EventHub

TIMEOUT_S = 60.0


@dataclass
class Served:
    engine: Engine
    hub: EventHub
    session: ServeSession
    server: ServerThread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    def stop(self) -> bool:
        """Server, engine, hub, in that order; True when every thread joined."""
        return all([self.server.stop(), self.engine.shutdown(), self.hub.stop()])


def start_served(model_dir, *, config: EngineConfig | None = None, **session_kw) -> Served:
    engine = Engine(str(model_dir), config or EngineConfig())
    hub = EventHub(engine.events)
    loads: queue.Queue = queue.Queue()
    watch = hub.add_listener(lambda e: loads.put(e) if isinstance(e, (ev.ModelLoaded, ev.EngineErrorEvent))
                             else None)
    session = ServeSession(engine, hub, config=engine.config, **session_kw)
    server = ServerThread(session, "127.0.0.1", 0)
    hub.start()
    engine.start()
    server.start()
    event = loads.get(timeout=TIMEOUT_S)
    hub.remove_listener(watch)
    assert isinstance(event, ev.ModelLoaded), f"model failed to load: {event}"
    return Served(engine, hub, session, server)


class EventWatcher:
    """Events of the served engine as they happen (a hub listener)."""

    KINDS = (ev.RequestFinished, ev.TokensGenerated, ev.StepCompleted)

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.events: queue.Queue[ev.EngineEvent] = queue.Queue()
        self._handle = hub.add_listener(lambda e: self.events.put(e) if isinstance(e, self.KINDS) else None)

    def until_finished(self, request_id: str, timeout: float = TIMEOUT_S) -> list[ev.EngineEvent]:
        """Every recorded event up to and including request_id's terminal event."""
        out = []
        while True:
            event = self.events.get(timeout=timeout)
            out.append(event)
            if isinstance(event, ev.RequestFinished) and event.request_id == request_id:
                return out

    def close(self) -> None:
        self.hub.remove_listener(self._handle)


def sse_events(response: httpx.Response) -> list[dict | str]:
    """Parse a whole SSE body: JSON payloads, and the literal '[DONE]'."""
    out: list[dict | str] = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        data = line[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT_S).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def metric(samples: dict, name: str, **labels) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    total, found = 0.0, False
    for (sample, sample_labels), value in samples.items():
        if sample == name and set(labels.items()) <= set(sample_labels):
            total += value
            found = True
    assert found, f"no sample {name} {labels}"
    return total
