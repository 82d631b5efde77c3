"""The Tune tab's state, Qt-free: the sweep's results, the axes the user picked, the Pareto front,
the recommendations, the advisor's k beside the measured best k, and the exported reports.

The view (ui/tune_view.py) only draws what this model says, so the table, the scatter and the
CSV/Markdown exports show the same figures.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, fields
from pathlib import Path

from engine.config import EngineConfig, SpeculativeMode
from engine.tune import GOALS, PointResult, Progress, Recommendation, pareto_front, recommend

MIB = float(1 << 20)


@dataclass(frozen=True)
class Axis:
    key: str  # a PointResult field, or "model_bytes" (weights + KV, what the configuration itself holds)
    title: str
    unit: str
    maximise: bool
    scale: float = 1.0  # shown value = field / scale

    def value(self, r: PointResult) -> float | None:
        if self.key == "model_bytes":
            if r.weights_bytes is None:
                return None
            return r.weights_bytes + (r.kv_cache_bytes or 0)
        return getattr(r, self.key)


Y_AXES = {
    "single": Axis("single_tokens_per_s", "single-stream tokens/s", "tok/s", True),
    "throughput": Axis("throughput_tokens_per_s", "throughput, N users", "tok/s", True),
}
X_AXES = {
    # the sweep measures every point in one process, so its RSS only grows: weights + KV is what
    # a configuration itself costs; the process RSS is there to see the whole footprint
    "memory": Axis("model_bytes", "memory: weights + KV cache", "MiB", False, MIB),
    "rss": Axis("peak_rss_bytes", "peak process RSS", "MiB", False, MIB),
    "ttft": Axis("ttft_s", "time to first token", "ms", False, 1e-3),
    "quality": Axis("perplexity_ratio", "perplexity vs unquantised", "×", False),
}

TABLE_COLUMNS = (
    ("name", "configuration"), ("status", "status"), ("single_tokens_per_s", "tok/s (1 user)"),
    ("ttft_s", "TTFT ms"), ("throughput_tokens_per_s", "tok/s (N users)"), ("weights_bytes", "weights MiB"),
    ("kv_cache_bytes", "KV MiB"), ("peak_rss_bytes", "RSS MiB"), ("perplexity_ratio", "perplexity ×"),
    ("agreement", "greedy agreement"), ("acceptance_rate", "acceptance"), ("advisor_k", "advisor k"),
    ("reason", "reason"),
)


def cell(result: PointResult, key: str) -> str:
    """One table cell as text (the table, the tooltips and the exports use it)."""
    v = getattr(result, key)
    if v is None or v == "":
        return "–"
    if key.endswith("_bytes"):
        return f"{v / MIB:.1f}"
    if key == "ttft_s":
        return f"{v * 1e3:.1f}"
    if key in ("agreement", "acceptance_rate"):
        return f"{v:.0%}"
    if key == "perplexity_ratio":
        return f"{v:.3f}"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def point_summary(result: PointResult) -> str:
    """The figures of one point, several lines (the scatter's hover text)."""
    lines = [result.name]
    for key, title in TABLE_COLUMNS[2:-1]:
        text = cell(result, key)
        if text != "–":
            lines.append(f"{title}: {text}")
    return "\n".join(lines)


@dataclass(frozen=True)
class KAdvice:
    mode: str  # draft | ngram
    advisor_k: int | None  # the break-even advisor's k (most common among the mode's points)
    best_k: int | None  # the k of the fastest measured point of that mode
    best_tokens_per_s: float | None

    def text(self) -> str:
        adv = "–" if self.advisor_k is None else str(self.advisor_k)
        best = "–" if self.best_k is None else f"{self.best_k} ({self.best_tokens_per_s:.1f} tok/s)"
        agree = ""
        if self.advisor_k is not None and self.best_k is not None:
            agree = " · the model of speculation holds" if self.advisor_k == self.best_k else \
                " · measured and modelled disagree"
        return f"{self.mode}: advisor k = {adv}, measured best k = {best}{agree}"


def k_advice(results: list[PointResult]) -> list[KAdvice]:
    out = []
    for mode in (SpeculativeMode.DRAFT, SpeculativeMode.NGRAM):
        pts = [r for r in results if r.measured and r.config.get("speculative", {}).get("mode") == mode.value]
        if not pts:
            continue
        ks = [r.advisor_k for r in pts if r.advisor_k is not None]
        advisor = max(set(ks), key=ks.count) if ks else None
        timed = [r for r in pts if r.single_tokens_per_s is not None]
        best = max(timed, key=lambda r: r.single_tokens_per_s, default=None)
        out.append(KAdvice(mode.value, advisor, best.config["speculative"].get("num_draft_tokens") if best else None,
                           best.single_tokens_per_s if best else None))
    return out


class TuneModel:
    """Results by name in grid order, the chosen axes and what follows from them."""

    def __init__(self) -> None:
        self.results: list[PointResult] = []
        self.order: list[str] = []  # grid order, for points not measured yet
        self.progress: Progress | None = None
        self.y_axis = "single"
        self.x_axis = "memory"
        self.provenance: dict = {}

    # ---- filling
    def start(self, names: list[str]) -> None:
        self.order = list(names)
        self.results = []
        self.progress = None

    def add(self, result: PointResult) -> None:
        self.results = [r for r in self.results if r.name != result.name] + [result]
        if result.name not in self.order:
            self.order.append(result.name)
        rank = {n: i for i, n in enumerate(self.order)}
        self.results.sort(key=lambda r: rank[r.name])

    def on_progress(self, p: Progress) -> None:
        self.progress = p
        if p.result is not None:
            self.add(p.result)

    def load_json(self, path: str | Path) -> int:
        """Results saved by a sweep (`workbench tune --json F` or the tab's own save file)."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            raise ValueError("not a tune results file: no list of points")
        known = {f.name for f in fields(PointResult)}
        self.start([])
        for item in data["points"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError("a point without a name")
            self.add(PointResult(**{k: v for k, v in item.items() if k in known}))
        self.provenance = {k: data.get(k) for k in ("model", "machine", "users", "repeats")}
        return len(self.results)

    # ---- what follows
    @property
    def axes(self) -> tuple[Axis, Axis]:
        return X_AXES[self.x_axis], Y_AXES[self.y_axis]

    def plotted(self) -> list[PointResult]:
        x, y = self.axes
        return [r for r in self.results if r.measured and x.value(r) is not None and y.value(r) is not None]

    def front(self) -> list[str]:
        """Names on the Pareto front of the plotted points (best y first)."""
        x, y = self.axes
        pts = self.plotted()
        rows = [{"y": y.value(r), "x": x.value(r)} for r in pts]
        return [pts[i].name for i in pareto_front(rows, (("y", True), ("x", False)))]

    def labels(self) -> tuple[dict[str, str], str]:
        """Short point labels: the parts every measured point shares are said once, in `common`."""
        names = [r.name for r in self.results if r.measured]
        parts = {n: n.split(" · ") for n in names}
        shared = set.intersection(*(set(p) for p in parts.values())) if len(names) > 1 else set()
        short = {n: " · ".join(x for x in p if x not in shared) or n for n, p in parts.items()}
        common = " · ".join(x for x in parts[names[0]] if x in shared) if names else ""
        return short, common

    def recommendations(self) -> list[Recommendation]:
        return [recommend(self.results, goal) for goal in GOALS]

    def config_of(self, name: str) -> EngineConfig:
        r = next(r for r in self.results if r.name == name)
        return EngineConfig.from_dict(r.config)

    def k_advice(self) -> list[KAdvice]:
        return k_advice(self.results)

    def progress_text(self) -> str:
        p = self.progress
        if p is None:
            return ""
        eta = "" if p.eta_s is None else f" · about {p.eta_s:.0f} s left"
        what = f"measured {p.point}" if p.result is not None else f"measuring {p.point}…"
        return f"{p.done}/{p.total} · {what}{eta}"

    # ---- reports
    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        keys = [k for k, _ in TABLE_COLUMNS]
        w.writerow(keys + ["pareto"])
        front = set(self.front())
        for r in self.results:
            w.writerow([getattr(r, k) for k in keys] + [r.name in front])
        return buf.getvalue()

    def to_markdown(self) -> str:
        x, y = self.axes
        front = set(self.front())
        out = ["# Tune report", ""]
        if self.provenance.get("model"):
            out += [f"Model: `{self.provenance['model']}`", ""]
        out += [f"Objective: {y.title} against {x.title}; ★ = on the Pareto front.", ""]
        heads = [t for _, t in TABLE_COLUMNS]
        out.append("| " + " | ".join(heads) + " |")
        out.append("|" + "---|" * len(heads))
        for r in self.results:
            cells = [cell(r, k).replace("|", "/") for k, _ in TABLE_COLUMNS]
            if r.name in front:
                cells[0] = "★ " + cells[0]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", "## Recommendations", ""]
        for rec in self.recommendations():
            out.append(f"- **{rec.goal}**: {rec.point or 'none'} — {rec.why}")
        adv = self.k_advice()
        if adv:
            out += ["", "## Draft length", ""] + [f"- {a.text()}" for a in adv]
        return "\n".join(out) + "\n"
