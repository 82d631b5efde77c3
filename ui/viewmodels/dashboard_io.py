"""Dashboard exports and imports: a tidy CSV and a JSON session, with readers for both.

CSV: ``time_s,series,request_id,value``, one row per sample (missing values left out), plus a
``config`` row per configuration in force and a ``marker`` row per change (their value is a
label). Session: the configurations, markers and every table, versioned.
"""

from __future__ import annotations

import csv
import io
import time

import numpy as np

from ui.viewmodels.dashboard_records import AdviceView, ConfigRecord, Marker

# CSV series name -> (table, column); per-request tables carry a request_id
CSV_SERIES = {
    "engine_tokens_per_s": ("steps", "tokens_per_s"),
    "num_output_tokens": ("steps", "num_output_tokens"),
    "batch_size": ("steps", "batch_size"),
    "num_waiting": ("steps", "num_waiting"),
    "weights_bytes": ("steps", "weights_bytes"),
    "kv_cache_bytes": ("steps", "kv_cache_bytes"),
    "prefix_cache_bytes": ("steps", "prefix_cache_bytes"),
    "other_bytes": ("steps", "other_bytes"),
    "rss_bytes": ("steps", "rss_bytes"),
    "accelerator_bytes": ("steps", "accelerator_bytes"),
    "acceptance_rate": ("steps", "acceptance_rate"),
    "tokens_per_verify": ("steps", "tokens_per_verify"),
    "step_time_s": ("steps", "step_time_s"),
    "prefix_hits": ("steps", "prefix_hits"),
    "prefix_misses": ("steps", "prefix_misses"),
    "request_tokens_per_s": ("rates", "tokens_per_s"),
    "ttft_s": ("latency", "ttft_s"),
    "itl_p50_s": ("latency", "itl_p50_s"),
    "itl_p95_s": ("latency", "itl_p95_s"),
    "tpot_s": ("latency", "tpot_s"),
    "e2e_s": ("latency", "e2e_s"),
    "completion_tokens": ("latency", "completion_tokens"),
}
CSV_HEADER = ("time_s", "series", "request_id", "value")
TEXT_SERIES = ("config", "marker")  # CSV rows whose value is a label: the configuration in force, a change
SESSION_FORMAT = "inference-workbench-dashboard"
SESSION_VERSION = 1


def to_csv(model) -> str:
    """Every recorded sample as tidy CSV rows: time_s,series,request_id,value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    tables = {"steps": model.steps, "latency": model.latency, "rates": model.rates}
    for series, (table_name, column) in CSV_SERIES.items():
        table = tables[table_name]
        t = table.column("t_s")
        v = table.column(column)
        req = table.column("request") if "request" in table.columns else None
        for i in np.flatnonzero(np.isfinite(v)):
            rid = model.request_ids[int(req[i])] if req is not None else ""
            writer.writerow((repr(float(t[i])), series, rid, repr(float(v[i]))))
    # the settings in force and each change, so a reader can tell the stretches apart
    for c in model.configs:
        writer.writerow((repr(float(c.t_s)), "config", "", c.label))
    for m in model.markers:
        writer.writerow((repr(float(m.t_s)), "marker", "", m.label))
    return out.getvalue()


def to_session(model, extra: dict | None = None) -> dict:
    """The whole session as JSON-ready data: configurations, markers, every table."""
    return {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "time_axis": "seconds since the session start",
        "configs": [{"t_s": c.t_s, "label": c.label, "changes": list(c.changes), "config": c.config}
                    for c in model.configs],
        "markers": [{"t_s": m.t_s, "label": m.label} for m in model.markers],
        "request_ids": list(model.request_ids),
        "tables": {"steps": model.steps.to_lists(), "latency": model.latency.to_lists(),
                   "rates": model.rates.to_lists()},
        "spec": {
            "accepted_per_position": model.accepted_per_position.tolist(),
            "drafted_per_position": model.drafted_per_position.tolist(),
            "advice": None if model.advice is None else {
                "acceptance_rate": model.advice.acceptance_rate, "cost_ratio": model.advice.cost_ratio,
                "speedup_by_k": list(model.advice.speedup_by_k), "recommended_k": model.advice.recommended_k,
                "pays_off": model.advice.pays_off},
        },
        "extra": extra or {},
    }


def load_session(data: dict, model) -> None:
    """Fill a fresh model with a saved session (to inspect or re-export it)."""
    if data.get("format") != SESSION_FORMAT:
        raise ValueError("not a dashboard session file")
    if int(data.get("version", 0)) > SESSION_VERSION:
        raise ValueError(f"session version {data.get('version')} is newer than this workbench reads")
    tables = data.get("tables", {})
    for name, table in (("steps", model.steps), ("latency", model.latency), ("rates", model.rates)):
        table.load_lists(tables.get(name, {}))
    model.request_ids = list(data.get("request_ids", []))
    model.reindex_requests()
    model.markers = [Marker(float(m["t_s"]), str(m["label"])) for m in data.get("markers", [])]
    model.configs = [ConfigRecord(float(c["t_s"]), c["label"], tuple(c["changes"]), dict(c["config"]))
                     for c in data.get("configs", [])]
    spec = data.get("spec", {})
    model.accepted_per_position = np.asarray(spec.get("accepted_per_position", []), dtype=np.int64)
    model.drafted_per_position = np.asarray(spec.get("drafted_per_position", []), dtype=np.int64)
    advice = spec.get("advice")
    if advice:
        model.advice = AdviceView(advice["acceptance_rate"], advice["cost_ratio"],
                                  tuple(advice["speedup_by_k"]), advice["recommended_k"], advice["pays_off"])
    model.num_finished = len(model.latency)


def read_csv(text: str) -> dict[str, dict[str, list]]:
    """Parse to_csv() output: series -> {'t': [...], 'value': [...], 'request_id': [...]}
    (values are floats, labels for the TEXT_SERIES)."""
    reader = csv.reader(io.StringIO(text))
    header = tuple(next(reader, ()))
    if header != CSV_HEADER:
        raise ValueError(f"unexpected CSV header {header!r}")
    out: dict[str, dict[str, list]] = {}
    for t, series, rid, value in reader:
        entry = out.setdefault(series, {"t": [], "value": [], "request_id": []})
        entry["t"].append(float(t))
        entry["value"].append(value if series in TEXT_SERIES else float(value))
        entry["request_id"].append(rid)
    return out
