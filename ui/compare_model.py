"""Side-by-side comparison results, Qt-free: per-column runs, medians and ranges over repeats,
ratios against the baseline column (column 0), output agreement, Markdown and JSON reports.

The compare bridge feeds a `Comparison` with plain engine events; the view and the reports
read the same formatted figures from it, so what is shown is what is exported.
"""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from engine import events as ev
from engine.config import EngineConfig, SamplingParams
from engine.metrics import StepStats
from engine.quality import Agreement, agreement
from ui.formatting import format_bytes, format_ms, sampling_label

METRICS = ("tokens_per_s", "ttft_s", "tpot_s", "memory_bytes", "acceptance_rate")
HIGHER_IS_BETTER = {"speed": True, "ttft": False, "tpot": False, "memory": False}

# (key, header) of the summary table, in order; the view and the Markdown report both use it.
SUMMARY_COLUMNS = (
    ("column", "Column"),
    ("config", "Configuration"),
    ("tokens_per_s", "tok/s"),
    ("speed", "Speed ×"),
    ("ttft", "TTFT"),
    ("ttft_ratio", "TTFT ×"),
    ("tpot", "TPOT"),
    ("tpot_ratio", "TPOT ×"),
    ("memory", "Memory"),
    ("memory_ratio", "Memory ×"),
    ("acceptance", "Acceptance"),
    ("agreement", "Agreement"),
)


@dataclass(frozen=True)
class ColumnSpec:
    """One column: a name, the model it runs and the engine configuration."""

    name: str
    model: str
    config: EngineConfig
    preset: str = "custom"

    def to_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset, "model": self.model,
                "config": self.config.to_dict(), "config_label": self.config.describe()}


@dataclass(frozen=True)
class CompareJob:
    """One request the bridge submitted for a column."""

    column: int
    repeat: int  # 0-based; warm-up runs have repeat -1
    request_id: str
    submitted_s: float

    @property
    def warmup(self) -> bool:
        return self.repeat < 0


@dataclass
class LiveRun:
    """A run in progress: tokens so far and the memory its engine's steps reported."""

    job: CompareJob
    token_ids: list[int] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    peak_kv_bytes: int = 0
    weights_bytes: int | None = None
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0

    def add_tokens(self, event: ev.TokensGenerated) -> None:
        ids = list(event.token_ids)
        pieces = list(event.token_texts)
        # pieces cover the visible tokens; an EOS (always last) has none
        pieces += [""] * (len(ids) - len(pieces))
        self.token_ids += ids
        self.origins += [o.value for o in event.origins]
        self.pieces += pieces[: len(ids)]

    def add_step(self, stats: StepStats) -> None:
        if stats.timestamp_s < self.job.submitted_s:
            return  # the tail of an earlier run on the same engine
        self.peak_kv_bytes = max(self.peak_kv_bytes, stats.kv_cache_bytes)
        self.weights_bytes = stats.weights_bytes
        self.num_draft_tokens += stats.spec.num_draft_tokens
        self.num_accepted_tokens += stats.spec.num_accepted_tokens

    @property
    def acceptance_rate(self) -> float | None:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else None


@dataclass(frozen=True)
class RunRecord:
    """The figures of one finished run."""

    repeat: int
    token_ids: tuple[int, ...]
    origins: tuple[str, ...]
    pieces: tuple[str, ...]
    text: str
    reason: str
    error: str | None
    completion_tokens: int
    tokens_per_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float
    weights_bytes: int | None
    peak_kv_bytes: int
    acceptance_rate: float | None

    @property
    def warmup(self) -> bool:
        return self.repeat < 0

    @property
    def memory_bytes(self) -> int | None:
        return None if self.weights_bytes is None else self.weights_bytes + self.peak_kv_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory_bytes"] = self.memory_bytes
        return d


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int


def spread(values: list[float | None]) -> Spread | None:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return Spread(statistics.median(xs), min(xs), max(xs), len(xs))


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


# ---------------------------------------------------------------------- formatting


def fmt_rate(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def fmt_percent(v: float) -> str:
    return f"{v * 100:.0f}%"


FORMATTERS = {
    "tokens_per_s": lambda v: f"{fmt_rate(v)} tok/s",
    "ttft_s": format_ms,
    "tpot_s": format_ms,
    "memory_bytes": format_bytes,
    "weights_bytes": format_bytes,
    "peak_kv_bytes": format_bytes,
    "acceptance_rate": fmt_percent,
}


def fmt_spread(s: Spread | None, metric: str) -> str:
    """'412 tok/s' for one run; '412 tok/s (398–430)': median (min–max) over repeats that differ."""
    if s is None:
        return "–"
    fmt = FORMATTERS[metric]
    text = fmt(s.median)
    low, high = fmt(s.low), fmt(s.high)
    if s.n > 1 and low != high:
        unit_low, unit_high = low.rpartition(" ")[2], high.rpartition(" ")[2]
        if unit_low == unit_high and " " in low:  # '4.9–5.5' under '5.2 ms'
            low, high = low.rpartition(" ")[0], high.rpartition(" ")[0]
        text += f" ({low}–{high})"
    return text


def fmt_agreement(a: Agreement | None, *, baseline: bool = False) -> str:
    if baseline:
        return "reference"
    if a is None:
        return "–"
    if a.first_divergence is None:
        return "identical"
    return f"{fmt_percent(a.share)} same · differs from token {a.first_divergence}"


def ratio_quality(key: str, r: float | None, tolerance: float = 0.05) -> str:
    """'better' | 'worse' | 'same' | '' for colouring a ratio cell."""
    if r is None:
        return ""
    if abs(r - 1.0) <= tolerance:
        return "same"
    return "better" if (r > 1.0) == HIGHER_IS_BETTER[key] else "worse"


# ---------------------------------------------------------------------- results


@dataclass
class ColumnResult:
    spec: ColumnSpec
    runs: list[RunRecord] = field(default_factory=list)  # measured runs, warm-ups excluded
    warmups: list[RunRecord] = field(default_factory=list)
    live: LiveRun | None = None
    model_info: ev.ModelInfo | None = None
    errors: list[str] = field(default_factory=list)

    def spread(self, metric: str) -> Spread | None:
        return spread([getattr(r, metric) for r in self.runs])

    @property
    def output(self) -> RunRecord | None:
        """The run whose text and tokens stand for the column (the first measured one)."""
        return self.runs[0] if self.runs else None

    @property
    def consistent(self) -> bool:
        """True when every repeat produced the same tokens."""
        return len({r.token_ids for r in self.runs}) <= 1


class Comparison:
    """One comparison: the columns, what they were asked, and what each run measured."""

    def __init__(self, columns: list[ColumnSpec], *, prompt: str | None = None,
                 messages: tuple[tuple[str, str], ...] | None = None, sampling: SamplingParams | None = None,
                 mode: str = "fair", repeats: int = 1, warmup: bool = False) -> None:
        if not columns:
            raise ValueError("a comparison needs at least one column")
        if mode not in ("fair", "race"):
            raise ValueError("mode is 'fair' or 'race'")
        if repeats < 1:
            raise ValueError("repeats must be at least 1")
        if (prompt is None) == (messages is None):
            raise ValueError("give a prompt or messages")
        self.columns = [ColumnResult(spec) for spec in columns]
        self.prompt = prompt
        self.messages = messages
        self.sampling = sampling or SamplingParams()
        self.mode = mode
        self.repeats = repeats
        self.warmup = warmup
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.finished = False
        self.cancelled = False

    # ---- feeding (the bridge calls these)
    def begin(self, job: CompareJob) -> None:
        self.columns[job.column].live = LiveRun(job)

    def add_tokens(self, column: int, event: ev.TokensGenerated) -> None:
        live = self.columns[column].live
        if live is not None and live.job.request_id == event.request_id:
            live.add_tokens(event)

    def add_step(self, column: int, stats: StepStats) -> None:
        live = self.columns[column].live
        if live is not None:
            live.add_step(stats)

    def set_model_info(self, column: int, info: ev.ModelInfo) -> None:
        self.columns[column].model_info = info

    def finish(self, column: int, event: ev.RequestFinished) -> RunRecord:
        col = self.columns[column]
        live = col.live
        if live is None or live.job.request_id != event.request_id:
            raise KeyError(f"no run {event.request_id} in progress in column {column}")
        s = event.stats
        weights = live.weights_bytes
        if weights is None and col.model_info is not None:
            weights = col.model_info.weights_bytes
        rate = s.spec.acceptance_rate
        record = RunRecord(
            repeat=live.job.repeat,
            token_ids=tuple(event.token_ids),
            origins=tuple(live.origins),
            pieces=tuple(live.pieces),
            text=event.text,
            reason=event.reason.value,
            error=event.error,
            completion_tokens=s.completion_tokens,
            tokens_per_s=s.tokens_per_s,
            ttft_s=s.ttft_s,
            tpot_s=s.tpot_s,
            e2e_s=s.e2e_s,
            weights_bytes=weights,
            peak_kv_bytes=live.peak_kv_bytes,
            acceptance_rate=rate if rate is not None else live.acceptance_rate,
        )
        col.live = None
        if event.error:
            col.errors.append(event.error)
        (col.warmups if record.warmup else col.runs).append(record)
        return record

    # ---- reading
    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def agreement(self, column: int) -> Agreement | None:
        """Output of `column` against the baseline column (None until both have output)."""
        ref, out = self.columns[0].output, self.columns[column].output
        if ref is None or out is None:
            return None
        return agreement(list(ref.token_ids), list(out.token_ids))

    def ratios(self, column: int) -> dict[str, float | None]:
        base, col = self.columns[0], self.columns[column]

        def med(c: ColumnResult, metric: str) -> float | None:
            s = c.spread(metric)
            return None if s is None else s.median

        return {
            "speed": ratio(med(col, "tokens_per_s"), med(base, "tokens_per_s")),
            "ttft": ratio(med(col, "ttft_s"), med(base, "ttft_s")),
            "tpot": ratio(med(col, "tpot_s"), med(base, "tpot_s")),
            "memory": ratio(med(col, "memory_bytes"), med(base, "memory_bytes")),
        }

    def figures(self, column: int) -> dict[str, str]:
        """A column's figures as shown under its text (medians, with ranges over repeats)."""
        c = self.columns[column]
        return {
            "tokens_per_s": fmt_spread(c.spread("tokens_per_s"), "tokens_per_s"),
            "ttft": fmt_spread(c.spread("ttft_s"), "ttft_s"),
            "tpot": fmt_spread(c.spread("tpot_s"), "tpot_s"),
            "weights": fmt_spread(c.spread("weights_bytes"), "weights_bytes"),
            "kv": fmt_spread(c.spread("peak_kv_bytes"), "peak_kv_bytes"),
            "acceptance": fmt_spread(c.spread("acceptance_rate"), "acceptance_rate"),
        }

    def summary_rows(self) -> list[dict[str, str]]:
        """One row per column, keyed like SUMMARY_COLUMNS, every value a display string."""
        rows = []
        for i, c in enumerate(self.columns):
            fig = self.figures(i)
            r = self.ratios(i)
            base = i == 0
            rows.append({
                "column": c.spec.name,
                "config": c.spec.config.describe(),
                "tokens_per_s": fig["tokens_per_s"],
                "speed": "baseline" if base else fmt_ratio(r["speed"]),
                "ttft": fig["ttft"],
                "ttft_ratio": "baseline" if base else fmt_ratio(r["ttft"]),
                "tpot": fig["tpot"],
                "tpot_ratio": "baseline" if base else fmt_ratio(r["tpot"]),
                "memory": fmt_spread(c.spread("memory_bytes"), "memory_bytes"),
                "memory_ratio": "baseline" if base else fmt_ratio(r["memory"]),
                "acceptance": fig["acceptance"],
                "agreement": fmt_agreement(self.agreement(i), baseline=base),
            })
        return rows

    def describe_run(self) -> str:
        text = "fair (one column at a time)" if self.mode == "fair" else "race (all columns at once)"
        text += f", {self.repeats} repeat{'s' if self.repeats != 1 else ''}"
        if self.warmup:
            text += " after a warm-up run per column"
        return text

    # ---- reports
    def to_dict(self, provenance: dict | None = None) -> dict:
        return {
            "kind": "inference-workbench comparison",
            "provenance": provenance if provenance is not None else collect_provenance(self),
            "started_at": self.started_at,
            "prompt": self.prompt,
            "messages": [list(m) for m in self.messages] if self.messages else None,
            "sampling": asdict(self.sampling),
            "seed": self.sampling.seed,
            "mode": self.mode,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "finished": self.finished,
            "cancelled": self.cancelled,
            "baseline": self.columns[0].spec.name,
            "columns": [self._column_dict(i) for i in range(self.num_columns)],
        }

    def _column_dict(self, i: int) -> dict:
        c = self.columns[i]
        a = self.agreement(i)
        d = c.spec.to_dict()
        d["model_info"] = asdict(c.model_info) if c.model_info else None
        d["figures"] = {m: (asdict(s) if (s := c.spread(m)) else None)
                        for m in (*METRICS, "weights_bytes", "peak_kv_bytes")}
        d["figures_shown"] = self.figures(i)
        d["ratios_vs_baseline"] = self.ratios(i)
        d["agreement"] = None if a is None else {"identical": a.first_divergence is None, "share": a.share,
                                                 "first_divergence": a.first_divergence}
        d["consistent_across_repeats"] = c.consistent
        d["runs"] = [r.to_dict() for r in c.runs]
        d["warmup_runs"] = [r.to_dict() for r in c.warmups]
        d["errors"] = list(c.errors)
        return d

    def to_json(self, provenance: dict | None = None) -> str:
        return json.dumps(self.to_dict(provenance), indent=2, ensure_ascii=False)

    def to_markdown(self, provenance: dict | None = None) -> str:
        return markdown_report(self, provenance if provenance is not None else collect_provenance(self))


LEGEND = ("Speed × above 1 is faster; TTFT ×, TPOT × and memory × below 1 are better. Figures are medians "
          "over the repeats, with the range in brackets; memory is model weights (draft included) plus the "
          "peak KV cache.")


def _fmt(metric: str, value) -> str:
    return "–" if value is None else FORMATTERS[metric](value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> list[str]:
    return ["~~~~text", text.replace("~~~~", "~ ~ ~ ~"), "~~~~"]


def markdown_report(comp: Comparison, prov: dict) -> str:
    lines = ["# Inference Workbench — comparison", ""]
    s = comp.sampling
    hardware = f" ({prov['hardware']})" if prov.get("hardware") else ""
    versions = (f"Workbench {prov.get('app_version')} · Python {prov.get('python')} · torch {prov.get('torch')} · "
                f"transformers {prov.get('transformers')} · bitsandbytes {prov.get('bitsandbytes')}")
    sampling = (f"{sampling_label(s).split(', seed')[0]}; temperature {s.temperature:g}, top-k {s.top_k}, "
                f"top-p {s.top_p:g}, max {s.max_new_tokens} tokens, seed {s.seed}")
    lines += [
        f"- Created: {prov.get('created', comp.started_at)}",
        f"- {versions}",
        f"- Device: {', '.join(prov.get('devices') or ['?'])}{hardware}",
        f"- Platform: {prov.get('platform')}",
        f"- Run: {comp.describe_run()}" + (" — cancelled before the end" if comp.cancelled else ""),
        f"- Sampling: {sampling}",
        "",
        "## Prompt",
        "",
    ]
    if comp.messages:
        for role, content in comp.messages:
            lines += [f"**{role}**", ""] + _fence(content) + [""]
    else:
        lines += _fence(comp.prompt or "") + [""]
    lines += [f"## Summary (ratios against the baseline column, “{comp.columns[0].spec.name}”)", ""]
    lines.append("| " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in SUMMARY_COLUMNS) + "|")
    for row in comp.summary_rows():
        lines.append("| " + " | ".join(_md_cell(row[k]) for k, _ in SUMMARY_COLUMNS) + " |")
    lines += ["", LEGEND, ""]
    for i, c in enumerate(comp.columns):
        lines += _md_column(comp, i, c)
    return "\n".join(lines) + "\n"


def _md_column(comp: Comparison, i: int, c: ColumnResult) -> list[str]:
    fig = comp.figures(i)
    info = c.model_info
    lines = [f"## Column {i + 1}: {c.spec.name}" + (" (reference)" if i == 0 else ""), ""]
    lines += [
        f"- Preset: {c.spec.preset}",
        f"- Configuration: {c.spec.config.describe()}",
        f"- Configuration (JSON): `{json.dumps(c.spec.config.to_dict(), sort_keys=True)}`",
        f"- Model: {c.spec.model}",
    ]
    if info is not None:
        lines.append(f"- Loaded: {info.architecture}, {info.num_params:,} parameters, {info.dtype}, "
                     f"{info.device}, weights {format_bytes(info.weights_bytes)}")
    lines.append(f"- tok/s {fig['tokens_per_s']} · TTFT {fig['ttft']} · TPOT {fig['tpot']} · weights "
                 f"{fig['weights']} · peak KV {fig['kv']} · acceptance {fig['acceptance']}")
    a = comp.agreement(i)
    if i > 0:
        lines.append(f"- Agreement with the baseline: {fmt_agreement(a)}")
    if not c.consistent:
        lines.append("- Note: the repeats of this column did not all produce the same tokens")
    for err in c.errors:
        lines.append(f"- Error: {err}")
    lines += ["", "| Repeat | tok/s | TTFT | TPOT | Tokens | Weights | Peak KV | Acceptance | Finish |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in c.warmups + c.runs:
        cells = ["warm-up" if r.warmup else str(r.repeat + 1)]
        cells += [_fmt(m, getattr(r, m)) for m in ("tokens_per_s", "ttft_s", "tpot_s")]
        cells.append(str(r.completion_tokens))
        cells += [_fmt(m, getattr(r, m)) for m in ("weights_bytes", "peak_kv_bytes", "acceptance_rate")]
        cells.append(r.reason)
        lines.append("| " + " | ".join(cells) + " |")
    out = c.output
    if out is not None:
        where = "" if a is None or a.first_divergence is None or i == 0 else \
            f" (differs from the baseline from token {a.first_divergence})"
        lines += ["", f"Output{where}:", ""] + _fence(out.text)
    lines.append("")
    return lines


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_provenance(comp: Comparison | None = None) -> dict:
    """Versions and machine, for reproducing a comparison."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    devices = []
    if comp is not None:
        devices = sorted({c.model_info.device for c in comp.columns if c.model_info is not None})
    hardware = _cpu_name()
    try:
        import torch

        if torch.cuda.is_available() and any(d.startswith("cuda") for d in devices):
            hardware = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - the engine needs torch
        pass
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "app": "inference-workbench",
        "app_version": version("inference-workbench"),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "bitsandbytes": version("bitsandbytes"),
        "pyside6": version("PySide6-Essentials") or version("PySide6"),
        "platform": platform.platform(),
        "devices": devices,
        "hardware": hardware,
    }
