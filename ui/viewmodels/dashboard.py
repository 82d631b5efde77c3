"""The live dashboard's data: ring buffers of engine figures on one time axis. Qt-free.

Every series shares one clock: seconds since the model's start (``t0``, a ``time.monotonic``
value, the same clock as the engine's event timestamps). Three tables hold the series, each a
preallocated column-major numpy array that drops its oldest quarter when full:

- ``steps``: one row per engine step (StepStats): engine-wide tokens/s, batch size, queue depth,
  memory split, rolling speculative acceptance and tokens per verify step.
- ``latency``: one row per finished request, at its finish time: TTFT, ITL p50/p95, TPOT.
- ``rates``: one row per token emission: the emitting request's rolling tokens/s.

Memory split: ``other = rss + accelerator - weights - kv - prefix`` (clamped at 0), so the stack
totals the process footprint (host RSS plus device memory where there is a device).

Pause freezes what ``snapshot()`` returns (series, markers and the clock) while recording goes
on, so nothing is lost; resume shows everything recorded meanwhile.

Exports (a tidy CSV, a JSON session) live in ui.viewmodels.dashboard_io, the ring buffer in
ui.viewmodels.ring_table.
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.metrics import percentile
from ui.viewmodels import dashboard_io
from ui.viewmodels.dashboard_records import AdviceView, ConfigRecord, Marker, Snapshot
from ui.viewmodels.ring_table import RingTable
from ui.viewmodels.throughput import Throughput, first_busy_window, measure

STEP_COLUMNS = (
    "t_s", "tokens_per_s", "num_output_tokens", "batch_size", "num_waiting", "weights_bytes",
    "kv_cache_bytes", "prefix_cache_bytes", "other_bytes", "rss_bytes", "accelerator_bytes",
    "acceptance_rate", "tokens_per_verify", "step_time_s", "prefix_hits", "prefix_misses",
)
LATENCY_COLUMNS = ("t_s", "request", "ttft_s", "itl_p50_s", "itl_p95_s", "tpot_s", "e2e_s", "completion_tokens")
RATE_COLUMNS = ("t_s", "request", "tokens_per_s")

SPEC_WINDOW_S = 2.0  # rolling window of the acceptance and tokens-per-verify series
REQUEST_RATE_WINDOW_S = 2.0  # rolling window of each request's tokens/s
REQUEST_RATE_MIN_SPAN_S = 0.1  # no per-request rate over a shorter span,
REQUEST_RATE_MIN_EMISSIONS = 3  # nor before a request's third emission (two close ones spike)
REQUEST_RATE_MIN_INTERVAL_S = 0.1  # one rate sample per request per 0.1 s at most (a chart pixel is coarser)
REQUEST_RATE_MIN_WHOLE_SPAN_S = 0.01  # a request that ends before it was rated: its whole span, if this long
BASELINE_WINDOW_S = 20.0  # the automatic baseline: this much of the first busy stretch at most
CURRENT_WINDOW_S = 30.0  # "current" throughput: steps since the last change, this long at most


@dataclass
class _SpecWindow:
    events: collections.deque = field(default_factory=collections.deque)  # (t, drafts, drafted, accepted)
    drafts: int = 0
    drafted: int = 0
    accepted: int = 0

    def add(self, t: float, drafts: int, drafted: int, accepted: int, window_s: float) -> None:
        if drafts:
            self.events.append((t, drafts, drafted, accepted))
            self.drafts += drafts
            self.drafted += drafted
            self.accepted += accepted
        while self.events and self.events[0][0] <= t - window_s:
            _, d, n, a = self.events.popleft()
            self.drafts -= d
            self.drafted -= n
            self.accepted -= a

    def clear(self) -> None:
        self.events.clear()
        self.drafts = self.drafted = self.accepted = 0


@dataclass
class _RequestWindow:
    """One request's emissions in its rate window: (t, tokens), oldest first; the oldest is
    the reference point, so the running sum counts the tokens emitted after it."""

    emissions: collections.deque = field(default_factory=collections.deque)
    tokens_after_first: int = 0
    count: int = 0  # emissions so far, in all
    last_sample_s: float = -math.inf  # when its rate was last recorded


class DashboardModel:
    def __init__(self, *, t0: float | None = None, clock: Callable[[], float] = time.monotonic,
                 step_capacity: int = 1 << 17, rate_capacity: int = 1 << 17,
                 latency_capacity: int = 1 << 14) -> None:
        self._clock = clock
        self.t0 = clock() if t0 is None else t0
        self.steps = RingTable(STEP_COLUMNS, step_capacity)
        self.latency = RingTable(LATENCY_COLUMNS, latency_capacity)
        self.rates = RingTable(RATE_COLUMNS, rate_capacity)
        self.request_ids: list[str] = []
        self._request_index: dict[str, int] = {}
        self._emissions: dict[str, _RequestWindow] = {}  # active requests' recent emissions
        self._spec = _SpecWindow()
        self.markers: list[Marker] = []
        self.configs: list[ConfigRecord] = []
        self.accepted_per_position = np.zeros(0, dtype=np.int64)
        self.drafted_per_position = np.zeros(0, dtype=np.int64)
        self.advice: AdviceView | None = None
        self.num_finished = 0
        self._frozen: Snapshot | None = None
        self._model_name: str | None = None  # the model loaded last (a switch is a marker)

    # ------------------------------------------------------------------ time
    def rel(self, t_monotonic: float) -> float:
        return t_monotonic - self.t0

    def now_s(self) -> float:
        return self._clock() - self.t0

    # ------------------------------------------------------------------ recording
    def record_step(self, stats) -> None:
        """One engine step (engine.metrics.StepStats)."""
        t = self.rel(stats.timestamp_s)
        accel = stats.accelerator_bytes
        # a remote server's step leaves memory unknown (None): NaN in the series, never 0
        known = None not in (stats.kv_cache_bytes, stats.prefix_cache_bytes, stats.rss_bytes, stats.weights_bytes)
        if known:
            caches = stats.kv_cache_bytes + stats.prefix_cache_bytes
            footprint = stats.rss_bytes + (accel or 0)
            other = max(footprint - stats.weights_bytes - caches, 0)
        else:
            other = math.nan
        spec = stats.spec
        self._spec.add(t, spec.num_drafts, spec.num_draft_tokens, spec.num_accepted_tokens, SPEC_WINDOW_S)
        w = self._spec
        acceptance = w.accepted / w.drafted if w.drafted else math.nan
        per_verify = (w.accepted + w.drafts) / w.drafts if w.drafts else math.nan
        self.steps.append((
            t, stats.tokens_per_s, stats.num_output_tokens, stats.batch_size, _nan(stats.num_waiting),
            _nan(stats.weights_bytes), _nan(stats.kv_cache_bytes), _nan(stats.prefix_cache_bytes), other,
            _nan(stats.rss_bytes),
            math.nan if accel is None else accel, acceptance, per_verify, stats.step_time_s,
            # prefix-cache lookups since the engine started (a remote server's steps have none: NaN)
            _nan(getattr(stats, "prefix_cache_hits", None)), _nan(getattr(stats, "prefix_cache_misses", None)),
        ))
        if spec.drafted_per_position:
            self.accepted_per_position = _add_padded(self.accepted_per_position, spec.accepted_per_position)
            self.drafted_per_position = _add_padded(self.drafted_per_position, spec.drafted_per_position)
        advice = stats.spec_advice
        self.advice = None if advice is None else AdviceView(
            float(advice.acceptance_rate), float(advice.cost_ratio), tuple(float(s) for s in advice.speedup_by_k),
            int(advice.recommended_k), bool(advice.pays_off))

    def record_tokens(self, event) -> None:
        """One emission of one request (engine.events.TokensGenerated): its rolling tokens/s.

        The reference point is the newest emission at or before the window's start (else the
        oldest one): the rate is the tokens emitted after it divided by the time since it.
        No rate before the request's REQUEST_RATE_MIN_EMISSIONS-th emission, nor over a span
        shorter than REQUEST_RATE_MIN_SPAN_S; at most one sample per REQUEST_RATE_MIN_INTERVAL_S.
        """
        if not event.token_ids:
            return  # a text flush at the end, no tokens
        rid = event.request_id
        t = self.rel(event.timestamp_s)
        n = len(event.token_ids)
        state = self._emissions.get(rid)
        if state is None:
            state = self._emissions[rid] = _RequestWindow()
        window = state.emissions
        window.append((t, n))
        state.count += 1
        state.tokens_after_first += n if len(window) > 1 else 0
        while len(window) > 2 and window[1][0] <= t - REQUEST_RATE_WINDOW_S:
            window.popleft()
            state.tokens_after_first -= window[0][1]  # the new reference's tokens came before it
        if state.count < REQUEST_RATE_MIN_EMISSIONS or t - window[0][0] < REQUEST_RATE_MIN_SPAN_S:
            return
        if t - state.last_sample_s < REQUEST_RATE_MIN_INTERVAL_S - 1e-9:
            return
        state.last_sample_s = t
        self.rates.append((t, self._index_of(rid), state.tokens_after_first / (t - window[0][0])))

    def record_finished(self, event) -> None:
        """A finished request (engine.events.RequestFinished): its latency figures at finish time.

        A request that ended before it was ever rated (all of it within REQUEST_RATE_MIN_SPAN_S,
        as short answers on a fast engine are) gets one rate over its whole span, at its last
        emission, so the per-request chart is not empty exactly when the engine is fast.
        """
        state = self._emissions.pop(event.request_id, None)
        if state is not None and state.last_sample_s == -math.inf and state.count >= REQUEST_RATE_MIN_EMISSIONS:
            first, last = state.emissions[0][0], state.emissions[-1][0]
            if last - first >= REQUEST_RATE_MIN_WHOLE_SPAN_S:
                self.rates.append((last, self._index_of(event.request_id), state.tokens_after_first / (last - first)))
        self.num_finished += 1
        st = event.stats
        if st.ttft_s is None:
            return  # produced no token (error, cancelled before the first token)
        self.latency.append((
            self.rel(event.timestamp_s), self._index_of(event.request_id), st.ttft_s,
            _nan(percentile(st.itl_s, 50)), _nan(percentile(st.itl_s, 95)), _nan(st.tpot_s), st.e2e_s,
            st.completion_tokens,
        ))

    def record_config(self, event) -> None:
        """A ConfigApplied: kept for the session; a marker when something changed."""
        t = self.rel(event.timestamp_s)
        changes = tuple(event.changes)
        self.configs.append(ConfigRecord(t, event.label, changes, dict(event.config_dict)))
        if changes:
            self.record_marker(event.timestamp_s, ", ".join(changes))

    def record_initial_config(self, config_dict: dict, label: str) -> None:
        """The configuration in force when recording starts (no marker)."""
        self.configs.append(ConfigRecord(0.0, label, (), dict(config_dict)))

    def record_model_loaded(self, t: float, name: str) -> None:
        """A model finished loading (t monotonic): a marker when it replaces another model."""
        if self._model_name is not None and name != self._model_name:
            self.record_marker(t, f"model {name}")
        self._model_name = name

    def record_marker(self, t: float, label: str) -> None:
        """A labelled change marker; t is a monotonic timestamp like the events'."""
        self.markers.append(Marker(self.rel(t), label))

    def _index_of(self, rid: str) -> int:
        index = self._request_index.get(rid)
        if index is None:
            index = self._request_index[rid] = len(self.request_ids)
            self.request_ids.append(rid)
        return index

    # ------------------------------------------------------------------ pause / reset
    @property
    def paused(self) -> bool:
        return self._frozen is not None

    def pause(self) -> None:
        if self._frozen is None:
            self._frozen = self._snapshot(None)

    def resume(self) -> None:
        self._frozen = None

    def reset(self) -> None:
        """Forget every series and marker; the time axis starts again at 0. Configs stay."""
        self.t0 = self._clock()
        for table in (self.steps, self.latency, self.rates):
            table.clear()
        self.request_ids.clear()
        self._request_index.clear()
        self._emissions.clear()
        self._spec.clear()
        self.markers.clear()
        current = self.configs[-1] if self.configs else None
        self.configs = [] if current is None else [ConfigRecord(0.0, current.label, (), current.config)]
        self.accepted_per_position = np.zeros(0, dtype=np.int64)
        self.drafted_per_position = np.zeros(0, dtype=np.int64)
        self.advice = None
        self.num_finished = 0
        if self._frozen is not None:
            self._frozen = self._snapshot(None)

    # ------------------------------------------------------------------ reading
    def display_now_s(self) -> float:
        """The time the display is at: now, or the moment of the pause."""
        return self.now_s() if self._frozen is None else self._frozen.t_now_s

    def snapshot(self, window_s: float | None = None, *, t_from: float | None = None) -> Snapshot:
        """The series to draw: from t_from, else the last window_s seconds, else everything kept
        (one sample before the start is included, so lines reach the left edge).

        While paused, the frozen copy taken at pause time, cut the same way."""
        if t_from is None and window_s is not None:
            t_from = self.display_now_s() - window_s
        if self._frozen is None:
            return self._snapshot(t_from)
        snap = self._frozen
        if t_from is None:
            return snap
        return Snapshot(snap.t_now_s, _cut(snap.steps, t_from), _cut(snap.latency, t_from), _cut(snap.rates, t_from),
                        snap.request_ids, snap.markers, snap.accepted_per_position, snap.drafted_per_position,
                        snap.advice)

    def _snapshot(self, t_from: float | None) -> Snapshot:
        return Snapshot(self.now_s(), self.steps.since(t_from), self.latency.since(t_from), self.rates.since(t_from),
                        list(self.request_ids), list(self.markers), self.accepted_per_position.copy(),
                        self.drafted_per_position.copy(), self.advice)

    def throughput(self, t_from: float, t_to: float | None = None) -> Throughput | None:
        """Committed output tokens per second over (t_from, t_to], from the step records, with
        how much of that span the engine was busy (ui.viewmodels.throughput)."""
        s = self.steps
        return measure(s.column("t_s"), s.column("step_time_s"), s.column("num_output_tokens"), t_from, t_to)

    def current_throughput(self, window_s: float = CURRENT_WINDOW_S) -> Throughput | None:
        """The configuration in force now: since the last change marker, window_s at most."""
        t = self.steps.column("t_s")
        if not len(t):
            return None
        t_from = float(t[-1]) - window_s
        if self.markers:
            t_from = max(t_from, self.markers[-1].t_s)
        return self.throughput(max(t_from, float(t[0])))

    def auto_baseline(self, window_s: float = BASELINE_WINDOW_S) -> Throughput | None:
        """The first busy stretch of steps before any configuration change, window_s of it at
        most (None until one holds enough tokens to compare on)."""
        s = self.steps
        before = self.markers[0].t_s if self.markers else None
        return first_busy_window(s.column("t_s"), s.column("step_time_s"), s.column("num_output_tokens"),
                                 before=before, window_s=window_s)

    def mean_completion_tokens(self) -> float | None:
        n = self.latency.column("completion_tokens")
        return float(np.mean(n)) if len(n) else None

    def config_label_at(self, t_s: float) -> str:
        label = ""
        for record in self.configs:
            if record.t_s <= t_s:
                label = record.label
        return label

    # ------------------------------------------------------------------ export / import
    def to_csv(self) -> str:
        """Every recorded sample as tidy CSV rows (ui.viewmodels.dashboard_io)."""
        return dashboard_io.to_csv(self)

    def to_session(self, extra: dict | None = None) -> dict:
        return dashboard_io.to_session(self, extra)

    def to_json(self, extra: dict | None = None) -> str:
        return json.dumps(self.to_session(extra), indent=1, allow_nan=False)

    def reindex_requests(self) -> None:
        self._request_index = {rid: i for i, rid in enumerate(self.request_ids)}

    @classmethod
    def from_session(cls, data: dict, **kwargs) -> DashboardModel:
        """A model holding a saved session (to inspect or re-export it)."""
        model = cls(**kwargs)
        dashboard_io.load_session(data, model)
        return model

    @classmethod
    def from_json(cls, text: str, **kwargs) -> DashboardModel:
        return cls.from_session(json.loads(text), **kwargs)


def _cut(columns: dict[str, np.ndarray], t_from: float) -> dict[str, np.ndarray]:
    t = columns["t_s"]
    start = max(int(np.searchsorted(t, t_from, side="left")) - 1, 0)
    return {name: values[start:] for name, values in columns.items()}


def _add_padded(total: np.ndarray, more: tuple[int, ...]) -> np.ndarray:
    n = max(len(total), len(more))
    out = np.zeros(n, dtype=np.int64)
    out[: len(total)] += total
    out[: len(more)] += np.asarray(more, dtype=np.int64)
    return out


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)
