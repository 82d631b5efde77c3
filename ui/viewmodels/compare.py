"""Side-by-side comparison results, Qt-free: per-column runs, medians and ranges over repeats,
ratios against the baseline column (column 0), output agreement, and the report as JSON data.
Records live in compare_records, display strings in compare_format, the Markdown report in
compare_report.

The compare bridge feeds a `Comparison` with plain engine events; the view and the reports
read the same formatted figures from it, so what is shown is what is exported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from engine import events as ev
from engine.config import SamplingParams
from engine.metrics import StepStats
from engine.quality import Agreement, agreement
from ui.viewmodels.compare_format import SUMMARY_COLUMNS, fmt_agreement, fmt_ratio, fmt_spread
from ui.viewmodels.compare_records import (
    ColumnSpec,
    CompareJob,
    LiveRun,
    RunRecord,
    Spread,
    ratio,
    spread,
)
from ui.viewmodels.compare_report import markdown_report

METRICS = ("tokens_per_s", "ttft_s", "tpot_s", "memory_bytes", "acceptance_rate")
__all__ = ["SUMMARY_COLUMNS", "ColumnResult", "ColumnSpec", "CompareJob", "Comparison", "LiveRun", "RunRecord",
           "Spread", "ratio", "spread"]

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
            peak_kv_bytes=None if col.spec.backend_label else live.peak_kv_bytes,  # a server's: unknown
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
        if any(r.text and not r.token_ids for r in (ref, out)):
            return None  # a server that streams text without token ids: tokens cannot be compared
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
                "config": c.spec.label,
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
    def to_dict(self, provenance: dict) -> dict:
        """Everything measured, as JSON-ready data; provenance from ui.compare_provenance."""
        return {
            "kind": "inference-workbench comparison",
            "provenance": provenance,
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

    def to_json(self, provenance: dict) -> str:
        return json.dumps(self.to_dict(provenance), indent=2, ensure_ascii=False)

    def to_markdown(self, provenance: dict) -> str:
        return markdown_report(self, provenance)
