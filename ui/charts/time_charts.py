"""The six time charts: throughput, latency (log scale), memory, batch and queue, speculative
acceptance and tokens per verify step."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics

from ui.charts.base import (
    AMBER,
    BLUE,
    CYAN,
    GREEN,
    MIB,
    ORANGE,
    PURPLE,
    RED,
    SLATE,
    TEAL,
    YELLOW,
    ChartTheme,
    alpha,
    broken_at_idle,
    curve,
    fmt,
    log_tick_label,
    nanmax,
    scatter,
)
from ui.charts.time_axis import TimeChart
from ui.formatting import MISSING, format_ms
from ui.viewmodels.dashboard_records import Snapshot


class ThroughputChart(TimeChart):
    title = "Throughput"
    y_label = "tokens/s"
    legend = (("engine-wide", BLUE), ("per request", TEAL))
    description = "Committed output tokens per second, engine-wide and per request (2 s rolling)"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("throughput", theme, parent)
        requests = curve(TEAL, 1.2, name="per request", monotonic=False, antialias=False)
        requests.setPen(pg.mkPen(alpha(TEAL, 150), width=1.2))
        self.add_series("requests", requests)
        self.add_series("engine", curve(BLUE, 2.4, name="engine-wide"))
        self._req_ids = np.zeros(0)

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        self.set_series("engine", *broken_at_idle(s, "tokens_per_s"))
        r = snap.rates
        t, req, v = r["t_s"], r["request"], r["tokens_per_s"]
        order = np.lexsort((t, req))
        t, req, v = t[order], req[order], v[order]
        breaks = np.flatnonzero(np.diff(req)) + 1  # a NaN between requests breaks the line
        self._req_ids = np.insert(req, breaks, np.nan)
        self.set_series("requests", np.insert(t, breaks, np.nan), np.insert(v, breaks, np.nan))
        self._set_y_top(nanmax(s["tokens_per_s"], v))

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        parts = [f"engine {fmt(s['tokens_per_s'][i])} tok/s" if i is not None else f"engine {MISSING}"]
        r = snap.rates
        if len(r["t_s"]):
            near = np.abs(r["t_s"] - x) <= 0.5
            if near.any():
                # the latest rate of each request near x
                ids, last = np.unique(r["request"][near][::-1], return_index=True)
                vals = r["tokens_per_s"][near][::-1][last]
                if len(ids) == 1:
                    parts.append(f"{snap.request_ids[int(ids[0])]} {fmt(float(vals[0]))} tok/s")
                else:
                    parts.append(f"{len(ids)} requests within ±0.5 s: mean {fmt(float(np.mean(vals)))}, "
                                 f"min {fmt(float(np.min(vals)))}, max {fmt(float(np.max(vals)))} tok/s")
        return "   ".join(parts)


class LatencyChart(TimeChart):
    title = "Latency per finished request"
    y_label = "ms (log)"
    legend = (("TTFT", AMBER), ("ITL p50", GREEN), ("ITL p95", PURPLE))
    description = "Time to first token and inter-token latency p50/p95 of each request, at its finish time"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("latency", theme, parent)
        self.plot.setLogMode(y=True)
        self._ticks_key: tuple | None = None
        self.add_series("ttft", scatter(AMBER, "o", name="TTFT"))
        self.add_series("itl_p50", scatter(GREEN, "t1", name="ITL p50", size=6))
        self.add_series("itl_p95", scatter(PURPLE, "t", name="ITL p95", size=6))

    def draw(self, snap: Snapshot) -> None:
        lat = snap.latency
        t = lat["t_s"]
        for key in ("ttft", "itl_p50", "itl_p95"):
            ms = lat[f"{key}_s"] * 1000.0
            keep = np.isfinite(ms) & (ms > 0)
            self.set_series(key, t[keep], ms[keep])
        # whole decades (log10 units): clean 1 / 10 / 100 ms ticks, and a range that rarely moves
        shown = np.concatenate([lat[f"{k}_s"] for k in ("ttft", "itl_p50", "itl_p95")]) * 1000.0
        shown = shown[np.isfinite(shown) & (shown > 0)]
        low, high = (np.floor(np.log10(shown.min())), np.ceil(np.log10(shown.max()))) if len(shown) else (0.0, 3.0)
        target = (low, max(high, low + 1.0))
        if target != self._y_range:
            self._y_range = target
            self.plot.setYRange(*target, padding=0.1)  # room for the edge decades' labels
        self._set_log_ticks(*target)

    def _set_log_ticks(self, low: float, high: float) -> None:
        """Labels on whole decades only (1, 2, 5 within a single decade), every n-th decade
        when the plot is short, so labels never stack; unlabelled ticks at 2..9 x 10^n."""
        height = max(self.plot.getViewBox().height(), 1.0)
        line = QFontMetrics(self.font()).height()
        key = (low, high, int(height))
        if key == self._ticks_key:
            return
        self._ticks_key = key
        decades = int(round(high - low))
        px_per_decade = height / max(decades, 1)
        every = next(n for n in (1, 2, 3, 5, 10, 100) if n * px_per_decade >= 2.2 * line)
        major = [(float(d), log_tick_label(10.0 ** d)) for d in range(int(low), int(high) + 1)
                 if (d - int(low)) % every == 0]
        if decades == 1 and px_per_decade * np.log10(2.0) >= 2.2 * line:
            major += [(float(np.log10(k * 10.0 ** low)), log_tick_label(k * 10.0 ** low)) for k in (2, 5)]
        minor = [(float(np.log10(k * 10.0 ** d)), "") for d in range(int(low), int(high)) for k in range(2, 10)]
        self.plot.getAxis("left").setTicks([sorted(major), minor])

    def readout_at(self, snap: Snapshot, x: float) -> str:
        lat = snap.latency
        i = self._pick(lat["t_s"], x)
        if i is None:
            return "no request finished here" if self._hover_x is not None else "no finished request yet"
        rid = snap.request_ids[int(lat["request"][i])] if np.isfinite(lat["request"][i]) else "?"
        return (f"{rid} ({lat['t_s'][i]:,.1f} s): TTFT {format_ms(lat['ttft_s'][i])}   "
                f"ITL p50 {format_ms(lat['itl_p50_s'][i])} · p95 {format_ms(lat['itl_p95_s'][i])}   "
                f"{int(lat['completion_tokens'][i])} tok")


class MemoryChart(TimeChart):
    title = "Memory"
    y_label = "MiB"
    legend = (("weights", BLUE), ("KV cache", GREEN), ("prefix", YELLOW), ("other", SLATE), ("device", RED))
    description = ("Stacked: model weights, KV cache, prefix cache and the rest of the process footprint; "
                   "accelerator memory as a line where there is one")
    LAYERS = (("other", SLATE, "other_bytes"), ("prefix", YELLOW, "prefix_cache_bytes"),
              ("kv", GREEN, "kv_cache_bytes"), ("weights", BLUE, "weights_bytes"))

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("memory", theme, parent)
        for name, colour, _ in self.LAYERS:  # tallest first, so each lower layer paints over it
            # 'other' (runtime, allocator, Python) is background: a paler fill
            fill = alpha(colour, 110 if name == "other" else 200)
            # subsample, not peak: a zigzag top would stripe the filled area
            self.add_series(name, curve(colour, 1.2, name=name, fillLevel=0.0, brush=fill, downsample="subsample",
                                         antialias=False))
        accelerator = curve(RED, 2.0, name="accelerator", antialias=False)
        accelerator.setPen(pg.mkPen(RED, width=2, style=Qt.PenStyle.DashLine))
        self.add_series("accelerator", accelerator)

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        t = s["t_s"]
        bottom_up = [s[col] / MIB for _, _, col in reversed(self.LAYERS)]  # weights, kv, prefix, other
        tops = np.cumsum(np.vstack(bottom_up), axis=0)
        for (name, _, _), top in zip(reversed(self.LAYERS), tops):
            self.set_series(name, t, top)
        accel = s["accelerator_bytes"] / MIB
        self.set_series("accelerator", t, accel)
        self._set_y_top(nanmax(tops[-1], accel))

    def data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The layer's own size in MiB (the curve draws its top: the sum of the layers below)."""
        x, y = super().data(name)
        order = [n for n, _, _ in reversed(self.LAYERS)]
        if name in order and order.index(name) > 0:
            _, below = super().data(order[order.index(name) - 1])
            y = y - below
        return x, y

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return ""
        parts = [f"weights {fmt(s['weights_bytes'][i] / MIB)}", f"KV {fmt(s['kv_cache_bytes'][i] / MIB, digits=2)}",
                 f"prefix {fmt(s['prefix_cache_bytes'][i] / MIB, digits=2)}", f"other {fmt(s['other_bytes'][i] / MIB)}"]
        if np.isfinite(s["accelerator_bytes"][i]):
            parts.append(f"device {fmt(s['accelerator_bytes'][i] / MIB)}")
        text = "   ".join(parts) + " MiB"
        hits, misses = s["prefix_hits"][i], s["prefix_misses"][i]
        if np.isfinite(hits) and np.isfinite(misses) and hits + misses > 0:
            text += f"   prefix hits {int(hits)} of {int(hits + misses)} lookups"
        return text


class BatchChart(TimeChart):
    title = "Batch size and queue"
    y_label = "requests"
    legend = (("batch size", BLUE), ("waiting", ORANGE))
    description = "Sequences computed per step and requests waiting to be scheduled"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("batch", theme, parent)
        self.add_series("batch", curve(BLUE, 2.0, name="batch size", antialias=False))
        self.add_series("queue", curve(ORANGE, 2.0, name="queue depth", antialias=False))

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        t, batch, queue = broken_at_idle(s, "batch_size", "num_waiting")
        self.set_series("batch", t, batch)
        self.set_series("queue", t, queue)
        self._set_y_top(nanmax(s["batch_size"], s["num_waiting"]))

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return ""
        return (f"batch {int(s['batch_size'][i])}   waiting {int(s['num_waiting'][i])}   "
                f"step {format_ms(s['step_time_s'][i])}")


class AcceptanceChart(TimeChart):
    title = "Speculative acceptance"
    y_label = "% accepted"
    legend = (("accepted / drafted, 2 s rolling", PURPLE),)
    description = "Accepted draft tokens over drafted tokens, rolling over 2 s; empty while speculation is off"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("acceptance", theme, parent)
        self.add_series("acceptance", curve(PURPLE, 2.0, name="acceptance rate"))
        self.plot.setYRange(0, 105, padding=0)

    def draw(self, snap: Snapshot) -> None:
        t, rate = broken_at_idle(snap.steps, "acceptance_rate")
        self.set_series("acceptance", t, rate * 100.0)

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return "no data here"
        if not np.isfinite(s["acceptance_rate"][i]):
            return "speculation off"
        return f"acceptance {fmt(s['acceptance_rate'][i] * 100)} %"


class VerifyChart(TimeChart):
    title = "Tokens per verify step"
    y_label = "tokens"
    legend = (("mean, 2 s rolling", CYAN),)
    description = "Accepted draft tokens plus the target's own token, per verify step; 1 = no gain"

    def __init__(self, theme: ChartTheme, parent=None) -> None:
        super().__init__("verify", theme, parent)
        self.add_series("tokens_per_verify", curve(CYAN, 2.0, name="tokens per verify"))
        self.plot.addItem(pg.InfiniteLine(pos=1.0, angle=0, pen=pg.mkPen(alpha(SLATE, 150), width=1,
                                                                         style=Qt.PenStyle.DotLine)))

    def draw(self, snap: Snapshot) -> None:
        s = snap.steps
        self.set_series("tokens_per_verify", *broken_at_idle(s, "tokens_per_verify"))
        self._set_y_top(nanmax(s["tokens_per_verify"], default=2.0))

    def readout_at(self, snap: Snapshot, x: float) -> str:
        s = snap.steps
        i = self._pick(s["t_s"], x)
        if i is None:
            return "no data here"
        if not np.isfinite(s["tokens_per_verify"][i]):
            return "speculation off"
        return f"{fmt(s['tokens_per_verify'][i], digits=2)} tokens per verify step"
