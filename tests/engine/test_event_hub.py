"""EventHub: one reader of an engine's event queue, fanned out to listeners and per-request sinks."""

from __future__ import annotations

import queue

import pytest

from engine import events as ev
from engine.event_hub import EventHub
from engine.metrics import request_stats, SpecStats

TIMEOUT_S = 10.0


def _finished(rid: str) -> ev.RequestFinished:
    stats = request_stats(prompt_tokens=1, cached_prompt_tokens=0, submitted_s=0.0, emission_times_s=[],
                          emission_counts=[], finished_s=0.0, prefill_time_s=None, spec=SpecStats())
    return ev.RequestFinished(request_id=rid, reason=ev.FinishReason.STOP, text="", token_ids=(), stats=stats)


def _tokens(rid: str, text: str) -> ev.TokensGenerated:
    return ev.TokensGenerated(request_id=rid, text=text, token_ids=(1,), origins=(ev.TokenOrigin.TARGET,))


@pytest.fixture
def hub():
    source: queue.Queue = queue.Queue()
    h = EventHub(source).start()
    yield h, source
    assert h.stop()


def test_routes_by_request_and_listeners_see_everything(hub):
    h, source = hub
    everything = h.open_queue()
    order: list[str] = []
    a, b = queue.Queue(), queue.Queue()
    h.add_listener(lambda e: order.append(f"listener:{type(e).__name__}"))
    h.subscribe("a", lambda e: (order.append(f"sink:{type(e).__name__}"), a.put(e)))
    h.subscribe("b", b.put)
    events = [ev.RequestQueued(request_id="a", prompt_tokens=3), _tokens("b", "x"), _tokens("a", "y"),
              ev.StateChanged(ev.EngineState.RUNNING), _finished("a")]
    for e in events:
        source.put(e)
    got_a = [a.get(timeout=TIMEOUT_S) for _ in range(3)]
    assert [type(e) for e in got_a] == [ev.RequestQueued, ev.TokensGenerated, ev.RequestFinished]
    assert b.get(timeout=TIMEOUT_S).text == "x" and b.empty()
    assert [everything.get(timeout=TIMEOUT_S) for _ in events] == events
    # a listener always sees an event before its request's sink does
    assert order.index("listener:RequestFinished") < order.index("sink:RequestFinished")


def test_the_terminal_event_ends_a_subscription(hub):
    h, source = hub
    seen = queue.Queue()
    everything = h.open_queue()
    h.subscribe("a", seen.put)
    source.put(_finished("a"))
    source.put(_tokens("a", "late"))  # nothing may follow a terminal event; if it does, not to the sink
    for _ in range(2):
        everything.get(timeout=TIMEOUT_S)
    assert isinstance(seen.get_nowait(), ev.RequestFinished)
    assert seen.empty()
    h.subscribe("a", seen.put)  # the id is free again


def test_a_failing_consumer_is_dropped_and_the_others_go_on(hub):
    h, source = hub

    def broken(_event):
        raise RuntimeError("consumer bug")

    h.add_listener(broken)
    h.subscribe("a", broken)
    good = h.open_queue()
    source.put(_tokens("a", "1"))
    source.put(_tokens("a", "2"))
    assert [good.get(timeout=TIMEOUT_S).text for _ in range(2)] == ["1", "2"]
    h.subscribe("a", good.put)  # the broken sink was removed, so the id can be taken


def test_duplicate_subscription_is_refused(hub):
    h, _ = hub
    h.subscribe("a", lambda e: None)
    with pytest.raises(ValueError):
        h.subscribe("a", lambda e: None)


def test_stop_delivers_what_was_queued_first():
    source: queue.Queue = queue.Queue()
    h = EventHub(source)
    got = h.open_queue()
    for i in range(50):
        source.put(_tokens("a", str(i)))
    h.start()
    assert h.stop()
    assert not h.is_alive
    assert [got.get_nowait().text for _ in range(50)] == [str(i) for i in range(50)]
