"""`workbench bench`: run suites, print a table, write JSON / CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from app import paths
from app.cli_types import int_range

# quant last: its quantised loads run torch on this thread (see engine.machine.one_torch_thread)
SUITE_NAMES = ["kv", "batching", "prefix", "spec", "serve", "quant"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=SUITE_NAMES + ["all", "remote"], default="all",
                   help="'remote' measures a running server given by --backend (the default suite then)")
    p.add_argument("--quick", action="store_true", help="shorter runs, one repeat (about 3 minutes in all on 2 CPU cores)")
    p.add_argument("--repeats", type=int_range(1, 50), default=None,
                   help="measurements per row, interleaved across rows (default 3; 1 with --quick)")
    p.add_argument("--draft", default=None, help="draft model for the spec suite (default: the bundled draft)")
    p.add_argument("--json", dest="json_path", default=None, help="write results as JSON to this file")
    p.add_argument("--csv", dest="csv_path", default=None, help="write one row per run as CSV to this file")


def _suites(name: str) -> list[str]:
    return SUITE_NAMES if name == "all" else [name]


def run(args: argparse.Namespace) -> int:
    from app.cli import default_draft, default_model
    from engine.bench import machine_info, roofline
    from engine.machine import measure_read_bandwidth
    from engine.bench_suites import SUITES, BenchOptions
    from engine.config import DeviceKind, DType, ModelSpec
    from engine.models import resolve_device

    from app.cli_types import check_device, check_writable

    check_device("workbench bench", args.device)
    check_writable("workbench bench", args.json_path)  # before the run, not after it
    check_writable("workbench bench", args.csv_path)
    if getattr(args, "backend", None) or getattr(args, "launch", None) or args.suite == "remote":
        from app.remote_cli import run_remote_bench

        return run_remote_bench(args, format_table)
    from engine.models import pin_dtype

    spec = pin_dtype(ModelSpec(default_model(args.model), device=DeviceKind(args.device), dtype=DType(args.dtype),
                               trust_remote_code=args.trust_remote_code))
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    machine = machine_info(str(resolve_device(spec.device)))
    opts = BenchOptions(spec=spec, quick=args.quick, draft=default_draft(args.draft), repeats=repeats,
                        bandwidth_bytes_per_s=machine.get("read_bandwidth_bytes_per_s"))
    heldout = paths.MODELS / "heldout.txt"
    if heldout.is_file():
        from dataclasses import replace

        opts = replace(opts, eval_text=heldout.read_text())
    report = {"machine": machine, "model": spec.name_or_path, "dtype": spec.dtype.value, "quick": args.quick,
              "repeats": repeats, "suites": {}}
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    suites = dict(SUITES)
    try:  # served tokens/s vs the in-process engine (app/serve/bench.py; needs the 'serve' extra)
        from app.serve.bench import suite_serve

        suites["serve"] = suite_serve
    except ImportError:
        pass
    failed = False
    for name in _suites(args.suite):
        if name not in suites:
            log(f"{name}: not available in this build")
            continue
        # the roofline divides by the bandwidth there was while the suite ran: a shared machine's
        # moves (28-80 GB/s between moments here), so the suite is bracketed by probes right
        # before and after it, and the better of the two counts (a probe never reads faster than
        # the machine can, so the better one is the stricter denominator)
        probes = [measure_read_bandwidth()] if name in ROOFLINE_SUITES and opts.bandwidth_bytes_per_s else []
        try:
            runs = suites[name](opts, log)
        except Exception as exc:  # noqa: BLE001 - one failing suite must not hide the others
            log(f"{name}: FAILED: {exc}")
            report["suites"][name] = {"error": str(exc), "runs": []}
            failed = True
            continue
        if probes:
            probes.append(measure_read_bandwidth())
            for r in runs:
                if "roofline_pct" in r.extra:
                    roofline(r, max(probes))
        report["suites"][name] = {"runs": [r.to_dict() for r in runs]}
        if probes:
            report["suites"][name]["read_bandwidth_bytes_per_s"] = max(probes)
            report["suites"][name]["read_bandwidth_probes"] = probes
        print(format_table(name, report["suites"][name]["runs"]))
    report["total_wall_s"] = time.perf_counter() - t0
    write_report(report, args, log)
    return 1 if failed else 0


ROOFLINE_SUITES = ("kv", "quant")  # suites with rows that carry a roofline figure


def write_report(report: dict, args: argparse.Namespace, log) -> None:
    """The run's JSON and CSV, where --json / --csv asked for them."""
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=2))
        log(f"wrote {args.json_path}")
    if args.csv_path:
        write_csv(report, Path(args.csv_path))
        log(f"wrote {args.csv_path}")


COLUMNS = [
    ("run", "name", "{}"),
    ("tok/s", "tokens_per_s", "{:.1f}"),
    ("min-max", "tokens_per_s_min", None),
    ("x first", None, None),
    ("TTFT ms", "ttft_s", "{:.1f}", 1000),
    ("ITL p50 ms", "itl_p50_s", "{:.1f}", 1000),
    ("ITL p95 ms", "itl_p95_s", "{:.1f}", 1000),
    ("ms/token", "token_gap_p50_s", "{:.2f}", 1000),  # an emission's gap over its tokens, median
    ("weights MB", "weights_bytes", "{:.1f}", 1e-6),
    ("KV MB", "kv_cache_bytes", "{:.2f}", 1e-6),
    ("tokens", "completion_tokens", "{}"),
    ("match", "outputs_match_reference", "{}"),
]
EXTRA = [("roofline %", "roofline_pct", "{:.0f}"), ("accept", "acceptance_rate", "{:.2f}"), ("ppl", "perplexity", "{:.2f}"),
         ("agree", "agreement", "{:.3f}"), ("cached", "cached_prompt_tokens", "{}")]


def format_table(suite: str, runs: list[dict]) -> str:
    extra = [c for c in EXTRA if any(c[1] in r for r in runs)]
    headers = [c[0] for c in COLUMNS] + [c[0] for c in extra]
    base = runs[0].get("tokens_per_s") if runs else None
    rows = []
    for r in runs:
        row = []
        for col in COLUMNS:
            if col[1] is None:  # the ratio of the medians (see engine.bench.run_cases)
                tps = r.get("tokens_per_s")
                row.append(f"{tps / base:.2f}" if tps and base else "")
                continue
            if col[1] == "tokens_per_s_min":
                lo, hi = r.get("tokens_per_s_min"), r.get("tokens_per_s_max")
                row.append(f"{lo:.1f}-{hi:.1f}" if lo is not None and hi is not None and r.get("repeats", 1) > 1 else "")
                continue
            v = r.get(col[1])
            scale = col[3] if len(col) > 3 else 1
            row.append("" if v is None else col[2].format(v * scale if scale != 1 else v))
        for col in extra:
            v = r.get(col[1])
            row.append("" if v is None else col[2].format(v))
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    reps = max((r.get("repeats", 1) for r in runs), default=1)
    title = f"\n== suite {suite} ==" + (f"  (medians of {reps} interleaved repeats)" if reps > 1 else "")
    out = [title, line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def write_csv(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"suite": s, **{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in run.items()}}
            for s, body in report["suites"].items() for run in body["runs"]]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
