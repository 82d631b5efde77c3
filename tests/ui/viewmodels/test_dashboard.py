"""The dashboard's Qt-free model: ring buffers, derived series, pause/reset, exports."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from engine.events import TokensGenerated
from engine.metrics import percentile
from engine.spec.advisor import advise
from tests.helpers.engine_timeline import MIB, T0, Clock, applied, finished, spec_step, step, tokens
from ui.viewmodels.dashboard import DashboardModel
from ui.viewmodels.dashboard_io import read_csv
from ui.viewmodels.ring_table import RingTable

@pytest.fixture
def model() -> DashboardModel:
    clock = Clock()
    m = DashboardModel(t0=T0, clock=clock)
    m.clock = clock  # the tests move time by hand
    return m


# ---------------------------------------------------------------------- ring buffer
def test_ring_table_keeps_the_newest_rows_contiguous_when_full():
    table = RingTable(("t_s", "v"), capacity=8)
    for i in range(8):
        table.append((i, i * 10))
    assert list(table.column("v")) == [i * 10 for i in range(8)]
    table.append((8, 80))  # full: the oldest quarter (2 rows) goes
    assert list(table.column("t_s")) == [2, 3, 4, 5, 6, 7, 8]
    assert table.dropped == 2
    assert not table.column("t_s").flags.writeable


def test_ring_table_since_keeps_one_row_before_the_window_and_copies():
    table = RingTable(("t_s", "v"), capacity=16)
    for i in range(10):
        table.append((float(i), float(i)))
    part = table.since(5.5)
    assert list(part["t_s"]) == [5, 6, 7, 8, 9]  # 5 reaches the left edge of a window opening at 5.5
    part["v"][:] = -1
    assert table.column("v")[9] == 9  # a copy, never a view the caller can change


# ---------------------------------------------------------------------- steps
def test_step_series_and_memory_split(model):
    model.record_step(step(1.0, weights=10 * MIB, kv=2 * MIB, prefix=1 * MIB, rss=50 * MIB))
    model.record_step(step(2.0, accel=30 * MIB, rss=40 * MIB))
    s = model.snapshot().steps
    assert list(s["t_s"]) == [1.0, 2.0]
    assert s["other_bytes"][0] == (50 - 10 - 2 - 1) * MIB
    # with a device, the stack totals host RSS plus device memory
    assert s["other_bytes"][1] == (40 + 30 - 10 - 2) * MIB
    assert math.isnan(s["accelerator_bytes"][0]) and s["accelerator_bytes"][1] == 30 * MIB


def test_acceptance_and_tokens_per_verify_roll_over_two_seconds(model):
    model.record_step(step(0.5))  # speculation off: no value
    model.record_step(step(1.0, spec=spec_step(4, 4)))
    model.record_step(step(1.5, spec=spec_step(4, 0)))
    model.record_step(step(3.2, spec=spec_step(2, 1)))  # the step at 1.0 has left the window
    s = model.snapshot().steps
    assert math.isnan(s["acceptance_rate"][0]) and math.isnan(s["tokens_per_verify"][0])
    assert s["acceptance_rate"][1] == 1.0 and s["tokens_per_verify"][1] == 5.0
    assert s["acceptance_rate"][2] == 4 / 8 and s["tokens_per_verify"][2] == (4 + 2) / 2
    assert s["acceptance_rate"][3] == 1 / 6 and s["tokens_per_verify"][3] == (1 + 2) / 2


def test_acceptance_per_position_is_cumulative_and_advice_is_copied(model):
    model.record_step(step(1.0, spec=spec_step(4, 2), advice=advise(0.5, 0.1)))
    model.record_step(step(2.0, spec=spec_step(2, 2), advice=advise(0.8, 0.1)))
    snap = model.snapshot()
    assert list(snap.drafted_per_position) == [2, 2, 1, 1]
    assert list(snap.accepted_per_position) == [2, 2, 0, 0]
    assert list(snap.acceptance_per_position) == [1.0, 1.0, 0.0, 0.0]
    expected = advise(0.8, 0.1)
    assert snap.advice.speedup_by_k == expected.speedup_by_k and snap.advice.recommended_k == expected.recommended_k
    model.record_step(step(3.0))  # speculation turned off: no advice
    assert model.snapshot().advice is None


# ---------------------------------------------------------------------- requests
def test_per_request_rate_is_tokens_since_the_reference_over_the_span(model):
    for rid, t, n in (("a", 1.0, 1), ("a", 1.1, 1), ("a", 1.2, 1), ("b", 1.25, 3), ("a", 1.3, 1), ("b", 1.3, 3),
                      ("a", 1.4, 1), ("b", 1.32, 3), ("b", 1.65, 3)):
        model.record_tokens(tokens(rid, t, n))
    model.record_tokens(tokens("a", 4.0, n=2))  # reference moves to the last emission <= 2.0 s ago
    r = model.snapshot().rates
    ids = model.request_ids
    rows = [(round(t, 3), ids[int(i)], round(v, 6)) for t, i, v in zip(r["t_s"], r["request"], r["tokens_per_s"])]
    assert rows == [
        (1.2, "a", round(2 / 0.2, 6)),  # from the third emission on
        (1.3, "a", round(3 / 0.3, 6)),
        (1.4, "a", round(4 / 0.4, 6)),
        # b's third emission came 0.07 s after its first: too short a span to rate
        (1.65, "b", round(9 / 0.4, 6)),
        (4.0, "a", round(2 / 2.6, 6)),
    ]


def test_a_request_too_short_to_rate_while_running_is_rated_over_its_span_when_it_ends(model):
    for t in (1.0, 1.02, 1.04, 1.06):  # all within REQUEST_RATE_MIN_SPAN_S: no rate while it runs
        model.record_tokens(tokens("fast", t, 2))
    model.record_tokens(tokens("blink", 2.0, 1))
    model.record_tokens(tokens("blink", 2.001, 1))
    model.record_tokens(tokens("blink", 2.002, 1))  # three emissions within 2 ms: too short to rate at all
    assert len(model.rates) == 0
    model.record_finished(finished("fast", submitted=0.9, emissions=[1.0, 1.02, 1.04, 1.06], t_finish=1.07))
    model.record_finished(finished("blink", submitted=1.9, emissions=[2.0, 2.001, 2.002], t_finish=2.01))
    r = model.snapshot().rates
    assert len(r["t_s"]) == 1
    assert r["t_s"][0] == pytest.approx(1.06)
    assert model.request_ids[int(r["request"][0])] == "fast"
    assert r["tokens_per_s"][0] == pytest.approx(6 / 0.06)  # the tokens after the first emission over the span


def test_empty_token_events_and_finished_requests(model):
    model.record_tokens(TokensGenerated(request_id="a", text="!", token_ids=(), origins=(), timestamp_s=T0 + 1))
    assert len(model.rates) == 0
    event = finished("a", submitted=0.5, emissions=[1.0, 1.1, 1.3, 1.6], t_finish=1.7)
    model.record_finished(event)
    lat = model.snapshot().latency
    assert lat["t_s"][0] == pytest.approx(1.7)
    assert lat["ttft_s"][0] == pytest.approx(0.5)
    assert lat["itl_p50_s"][0] == pytest.approx(percentile(event.stats.itl_s, 50))
    assert lat["itl_p95_s"][0] == pytest.approx(percentile(event.stats.itl_s, 95))
    assert lat["completion_tokens"][0] == 4
    model.record_finished(finished("b", submitted=2.0, emissions=[], t_finish=2.5))  # no token: no latency
    assert len(model.latency) == 1 and model.num_finished == 2


def test_config_changes_become_markers(model):
    model.record_config(applied(2.0, ()))
    model.record_config(applied(3.0, ("batching off",)))
    model.record_config(applied(4.0, ("nf4", "spec draft k=4")))
    assert [(m.t_s, m.label) for m in model.markers] == [(3.0, "batching off"), (4.0, "nf4, spec draft k=4")]
    assert len(model.configs) == 3


# ---------------------------------------------------------------------- pause, reset, windows
def test_pause_freezes_the_snapshot_while_recording_goes_on(model):
    model.record_step(step(1.0))
    model.clock.t = T0 + 1.0
    model.pause()
    before = model.snapshot(30.0)
    model.record_step(step(2.0, tokens_per_s=999.0))
    model.record_config(applied(2.0, ("kv off",)))
    model.clock.t = T0 + 2.0
    during = model.snapshot(30.0)
    assert during.t_now_s == before.t_now_s == 1.0
    assert list(during.steps["tokens_per_s"]) == [100.0] and during.markers == []
    model.resume()
    after = model.snapshot(30.0)
    assert list(after.steps["tokens_per_s"]) == [100.0, 999.0] and len(after.markers) == 1


def test_window_cuts_the_snapshot(model):
    for t in range(0, 100, 10):
        model.record_step(step(float(t)))
    model.clock.t = T0 + 95.0
    assert list(model.snapshot(30.0).steps["t_s"]) == [60.0, 70.0, 80.0, 90.0]
    assert len(model.snapshot(None).steps["t_s"]) == 10


def test_reset_clears_series_and_restarts_time(model):
    model.record_step(step(1.0, spec=spec_step(2, 1)))
    model.record_config(applied(1.5, ("kv off",), label="kv off · batch 8"))
    model.record_tokens(tokens("a", 1.0))
    model.clock.t = T0 + 10.0
    model.reset()
    assert model.t0 == T0 + 10.0 and model.now_s() == 0.0
    snap = model.snapshot()
    assert len(snap.steps["t_s"]) == 0 and snap.markers == [] and snap.request_ids == []
    assert len(snap.drafted_per_position) == 0
    assert [c.label for c in model.configs] == ["kv off · batch 8"]  # the configuration in force stays


# ---------------------------------------------------------------------- throughput figures
def test_throughput_counts_tokens_over_the_interval(model):
    for i in range(1, 21):  # 20 steps 0.25 s apart (exact in binary), 4 tokens each
        model.record_step(step(i * 0.25, out=4))
    tp = model.throughput(0.25, 5.0)  # steps stamped in (0.25, 5.0]: 19 of them
    assert tp.num_tokens == 76 and tp.tokens_per_s == pytest.approx(76 / 4.75)
    assert model.throughput(4.5, 5.0) is None  # too short to measure


def test_current_throughput_starts_at_the_last_change_and_auto_baseline_ends_there(model):
    for i in range(1, 81):  # 8 s at 40 tok/s
        model.record_step(step(i * 0.1, out=4))
    assert model.auto_baseline(window_s=20.0) is None  # the first busy stretch goes on: not full yet
    model.record_marker(T0 + 8.0, "batching off")
    for i in range(81, 161):  # 8 s at 20 tok/s
        model.record_step(step(i * 0.1, out=2))
    current = model.current_throughput()
    assert current.t_from_s == 8.0 and current.tokens_per_s == pytest.approx(20.0)
    base = model.auto_baseline(window_s=20.0)  # closed early by the change
    # the stretch starts where the first step started (its stamp less its 0.01 s compute)
    assert (base.t_from_s, base.t_to_s) == (pytest.approx(0.09), 8.0)
    assert base.num_tokens == 320 and base.tokens_per_s == pytest.approx(320 / 7.91)
    assert base.busy_fraction == pytest.approx(1.0)


def test_auto_baseline_skips_an_idle_start_and_refuses_a_thin_stretch(model):
    # a few requests, then nothing for 20 s: the old 'first 20 s' read this as a 0.9 tok/s baseline
    for i in range(1, 6):
        model.record_step(step(i * 0.1, out=4))
    for i in range(1, 101):  # then 10 s of load at 40 tok/s
        model.record_step(step(25.0 + i * 0.1, out=4))
    assert model.auto_baseline(window_s=20.0) is None  # the busy stretch is still filling its 20 s
    base = model.auto_baseline(window_s=8.0)
    assert base is not None and (base.t_from_s, base.t_to_s) == (pytest.approx(25.09), pytest.approx(33.09))
    assert base.num_tokens == 320 and base.tokens_per_s == pytest.approx(40.0)
    assert model.throughput(0.0, 35.0).busy_fraction < 0.5  # the whole span: mostly idle


# ---------------------------------------------------------------------- exports
def _filled_model(model: DashboardModel) -> DashboardModel:
    model.record_config(applied(0.0, (), label="kv on · batch 8"))
    for i in range(1, 11):
        t = i * 0.3
        model.record_step(step(t, tokens_per_s=10.0 * i, spec=spec_step(3, i % 4), advice=advise(0.6, 0.05)))
        model.record_tokens(tokens("req-1", t))
    model.record_config(applied(1.0, ("batching off",), label="kv on · batching off"))
    model.record_finished(finished("req-1", submitted=0.1, emissions=[0.3, 0.6, 0.9, 1.5], t_finish=3.0))
    return model


def test_csv_round_trips_every_series(model):
    _filled_model(model)
    parsed = read_csv(model.to_csv())
    s = model.snapshot().steps
    assert parsed["engine_tokens_per_s"]["t"] == list(s["t_s"])
    assert parsed["engine_tokens_per_s"]["value"] == list(s["tokens_per_s"])
    assert parsed["other_bytes"]["value"] == list(s["other_bytes"])
    assert "accelerator_bytes" not in parsed  # no device: no rows, not rows of NaN
    assert parsed["acceptance_rate"]["value"] == [v for v in s["acceptance_rate"] if np.isfinite(v)]
    lat = model.snapshot().latency
    assert parsed["ttft_s"] == {"t": [lat["t_s"][0]], "value": [lat["ttft_s"][0]], "request_id": ["req-1"]}
    assert set(parsed["request_tokens_per_s"]["request_id"]) == {"req-1"}


def test_session_json_round_trips(model):
    _filled_model(model)
    text = model.to_json(extra={"cost": {"price_per_hour": 2.5}})
    data = json.loads(text)
    assert data["markers"] == [{"t_s": 1.0, "label": "batching off"}]
    assert [c["label"] for c in data["configs"]] == ["kv on · batch 8", "kv on · batching off"]
    assert data["extra"]["cost"]["price_per_hour"] == 2.5
    restored = DashboardModel.from_json(text)
    a, b = model.snapshot(), restored.snapshot()
    for table in ("steps", "latency", "rates"):
        for column, values in getattr(a, table).items():
            np.testing.assert_array_equal(getattr(b, table)[column], values, err_msg=f"{table}.{column}")
    assert b.markers == a.markers and b.request_ids == a.request_ids
    assert list(b.accepted_per_position) == list(a.accepted_per_position)
    assert b.advice == a.advice
    with pytest.raises(ValueError):
        DashboardModel.from_session({"format": "something else"})


def test_model_modules_do_not_import_qt():
    code = ("import sys, ui.viewmodels.dashboard, ui.viewmodels.cost, ui.viewmodels.compare; "
            "print(any(m.startswith(('PySide6', 'pyqtgraph')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_prefix_cache_lookups_are_recorded_and_exported(model):
    import dataclasses

    from ui.viewmodels.dashboard_io import to_csv

    model.record_step(dataclasses.replace(step(1.0), prefix_cache_hits=3, prefix_cache_misses=2))
    snap = model.snapshot()
    assert snap.steps["prefix_hits"][-1] == 3 and snap.steps["prefix_misses"][-1] == 2
    series = read_csv(to_csv(model))
    assert series["prefix_hits"]["value"] == [3.0] and series["prefix_misses"]["value"] == [2.0]
