"""`workbench tune`: sweep a grid of settings, print the table, the Pareto front and the picks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from app import paths
from app.cli_types import check_device, check_writable, fail, int_range


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft", default=None, help="draft model for speculative points (default: the bundled draft)")
    p.add_argument("--grid", default="quick", help="quick, full, or a JSON file of EngineConfig dicts")
    p.add_argument("--users", type=int_range(1, 64), default=4, help="concurrent users for the throughput figure")
    p.add_argument("--repeats", type=int_range(1, 20), default=1, help="measurements per point (median)")
    p.add_argument("--json", dest="json_path", default=None,
                   help="save results here after every point; run again with the same file to resume")


def run(args: argparse.Namespace) -> int:
    from app.cli import default_draft, default_model
    from engine.config import DeviceKind, DType, ModelSpec
    from engine.tune import GOALS, Sweep, load_grid, make_grid, pareto_front, recommend

    prog = "workbench tune"
    check_device(prog, args.device)
    check_writable(prog, args.json_path)
    draft = default_draft(args.draft)
    try:
        points = make_grid(args.grid, draft) if args.grid in ("quick", "full") else load_grid(args.grid, draft)
    except (OSError, ValueError) as exc:
        fail(prog, f"--grid {args.grid}: {exc}")
    from engine.models import pin_dtype

    spec = pin_dtype(ModelSpec(default_model(args.model), device=DeviceKind(args.device), dtype=DType(args.dtype),
                               trust_remote_code=args.trust_remote_code))
    heldout = paths.MODELS / "heldout.txt"
    sweep = Sweep(spec, points, users=args.users, repeats=args.repeats,
                  eval_text=heldout.read_text() if heldout.is_file() else None, save_to=args.json_path)
    resumed = sweep.resume()
    t0 = time.perf_counter()
    if resumed:
        print(f"[tune] resuming: {resumed} of {len(points)} points already measured", file=sys.stderr)

    def progress(p) -> None:
        if p.result is None:
            eta = f", about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            print(f"[{time.perf_counter() - t0:6.1f}s] {p.done + 1}/{p.total} {p.point}{eta}", file=sys.stderr,
                  flush=True)
        elif not p.result.measured:
            print(f"          {p.point}: {p.result.status}: {p.result.reason}", file=sys.stderr, flush=True)

    try:
        results = sweep.run(progress)
    except KeyboardInterrupt:
        sweep.cancel.set()
        print("[tune] cancelled; run again with the same --json to resume", file=sys.stderr)
        return 130
    rows = [vars(r) for r in results]
    front = set(pareto_front(rows))
    print(format_results(results, front))
    print()
    for goal in GOALS:
        rec = recommend(results, goal)
        print(f"{goal}: {rec.point or '—'} ({rec.why})")
    if args.json_path:
        print(f"[tune] saved {Path(args.json_path)}", file=sys.stderr)
    return 0 if any(r.measured for r in results) else 1


def format_results(results, front: set[int]) -> str:
    head = ["", "point", "tok/s 1 user", "TTFT ms", "tok/s N users", "weights MB", "KV MB", "RSS MB", "ppl x",
            "agree", "accept", "k adv"]
    rows = []
    for i, r in enumerate(results):
        if not r.measured:
            rows.append(["", r.name, f"{r.status}: {r.reason}"] + [""] * (len(head) - 3))
            continue

        def f(v, fmt, scale=1.0):
            return "" if v is None else fmt.format(v * scale)

        rows.append(["*" if i in front else "", r.name, f(r.single_tokens_per_s, "{:.1f}"), f(r.ttft_s, "{:.1f}", 1000),
                     f(r.throughput_tokens_per_s, "{:.1f}"), f(r.weights_bytes, "{:.1f}", 1e-6),
                     f(r.kv_cache_bytes, "{:.2f}", 1e-6), f(r.peak_rss_bytes, "{:.0f}", 1e-6),
                     f(r.perplexity_ratio, "{:.3f}"), f(r.agreement, "{:.2f}"), f(r.acceptance_rate, "{:.2f}"),
                     "" if r.advisor_k is None else str(r.advisor_k)])
    widths = [max(len(h), *(len(row[c]) for row in rows if len(row[c]) < 60)) for c, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out.append("-" * len(out[0]))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    out.append("* = on the Pareto front of single-stream tokens/s against process memory")
    return "\n".join(out)
