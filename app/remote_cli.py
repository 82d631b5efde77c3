"""`--backend URL --model NAME` for `workbench generate|bench|loadtest`: drive a running
OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, Ollama, transformers serve) through the
same surface as the local engine."""

from __future__ import annotations

import argparse
import os
import sys

# local-engine options that are a remote server's launch flags: refused with --backend
LOCAL_ONLY = {
    "no_kv_cache": "--no-kv-cache", "quantisation": "--quantisation", "speculative": "--speculative",
    "draft": "--draft", "adaptive": "--adaptive", "no_batching": "--no-batching", "max_batch": "--max-batch",
    "device": "--device", "dtype": "--dtype", "trust_remote_code": "--trust-remote-code",
}
LOCAL_DEFAULTS = {"quantisation": "none", "speculative": "off", "device": "auto", "dtype": "auto", "max_batch": 8}


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, metavar="URL",
                   help="drive a running OpenAI-compatible server instead of the local engine, e.g. "
                        "http://127.0.0.1:8000/v1 (vLLM, SGLang, llama.cpp, TGI, Ollama, transformers "
                        "serve); --model then names the served model (default: the first it lists)")
    p.add_argument("--api-key", default=None,
                   help="API key for --backend (default: $WORKBENCH_API_KEY, then $OPENAI_API_KEY)")
    p.add_argument("--launch", action="append", default=None, metavar="FILE[:NAME]",
                   help="start a launch profile's server (a JSON list of profiles), use it as --backend, "
                        "stop it after; bench takes several and measures each in turn")
    p.add_argument("--read-timeout", type=float, default=120.0, metavar="S",
                   help="with --backend: longest wait for the next streamed chunk (default 120 s)")


def refuse_local_flags(command: str, args: argparse.Namespace) -> None:
    """A remote server's KV cache, batching, quantisation and speculative settings are its
    launch flags: asking for them here would silently measure something else."""
    for attr, flag in LOCAL_ONLY.items():
        if not hasattr(args, attr):
            continue
        value = getattr(args, attr)
        if value in (None, False) or LOCAL_DEFAULTS.get(attr) == value:
            continue
        print(f"{command}: {flag} sets the local engine; with --backend it is the server's launch flag "
              f"(start the server with it)", file=sys.stderr)
        raise SystemExit(2)


def backend_spec(command: str, args: argparse.Namespace, *, metrics_interval_s: float = 1.0):
    from engine.remote import RemoteSpec

    refuse_local_flags(command, args)
    key = args.api_key or os.environ.get("WORKBENCH_API_KEY") or os.environ.get("OPENAI_API_KEY")
    try:
        spec = RemoteSpec(args.backend, model=args.model, api_key=key, read_timeout_s=args.read_timeout,
                          metrics_interval_s=metrics_interval_s)
    except ValueError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return spec


def open_backend(command: str, args: argparse.Namespace, *, metrics_interval_s: float = 1.0):
    from engine.remote import RemoteBackend

    return RemoteBackend(backend_spec(command, args, metrics_interval_s=metrics_interval_s)).start()


SERVER_COLUMNS = [
    ("run", "name", "{}", 1),
    ("client req tok/s", "request_tokens_per_s", "{:.1f}", 1),
    ("server req tok/s", "server_request_tokens_per_s", "{:.1f}", 1),
    ("client TTFT ms", "ttft_s", "{:.1f}", 1000),
    ("server TTFT ms", "server_ttft_mean_s", "{:.1f}", 1000),
    ("client ITL ms", "itl_mean_s", "{:.2f}", 1000),
    ("server ITL ms", "server_itl_mean_s", "{:.2f}", 1000),
    ("tokens = server", "tokens_match_server", "{}", 1),
    ("peak running", "server_running_peak", "{:.0f}", 1),
    ("peak KV %", "server_kv_cache_usage_peak", "{:.1f}", 100),
]


def format_server_table(runs: list[dict]) -> str:
    """Client-side figures beside the server's own, per run; blank = the server does not say."""
    headers = [c[0] for c in SERVER_COLUMNS]
    rows = []
    for r in runs:
        row = []
        for _, key, fmt, scale in SERVER_COLUMNS:
            v = r.get(key)
            row.append("" if v is None else fmt.format(v * scale if isinstance(v, (int, float)) and
                                                       not isinstance(v, bool) else v))
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = ["\n== client vs server, same requests (req tok/s: tokens / summed request latency, each on its own clock) ==",
           line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def _targets(command: str, args: argparse.Namespace):
    """(label, profile or None) per server to measure: --launch profiles, else --backend."""
    if getattr(args, "launch", None):
        return [(p.name, p) for p in launch_profiles(command, args)]
    return [("", None)]


def launch_profiles(command: str, args: argparse.Namespace):
    """--launch FILE[:NAME] -> LaunchProfiles (a file with one profile needs no name)."""
    from pathlib import Path

    from engine.remote.launch import load_profiles

    out = []
    for item in args.launch or ():
        path, _, name = item.partition(":") if not os.path.isfile(item) else (item, "", "")
        try:
            profiles = load_profiles(Path(path))
        except (OSError, ValueError) as exc:
            print(f"{command}: --launch {item}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        chosen = [p for p in profiles if p.name == name] if name else profiles[:1] if len(profiles) == 1 else []
        if not chosen:
            names = ", ".join(p.name for p in profiles) or "none"
            print(f"{command}: --launch {item}: name one profile of {path} (it has: {names})", file=sys.stderr)
            raise SystemExit(2)
        out.append(chosen[0])
    return out


class launched:
    """Context: with --launch, start the profile's server, point args at it, stop it after."""

    def __init__(self, command: str, args: argparse.Namespace, profile=None) -> None:
        self.command, self.args = command, args
        profiles = [profile] if profile is not None else launch_profiles(command, args)
        if len(profiles) > 1:
            print(f"{command}: one --launch profile at a time here (bench takes several)", file=sys.stderr)
            raise SystemExit(2)
        self.profile = profiles[0] if profiles else None
        self.server = None

    def __enter__(self):
        if self.profile is None:
            return None
        from engine.remote.launch import LaunchedServer, LaunchError

        self.server = LaunchedServer(self.profile)
        print(f"{self.command}: starting profile {self.profile.name!r} (log: {self.server.log_path or 'temp file'})",
              file=sys.stderr, flush=True)
        try:
            self.server.__enter__()
        except LaunchError as exc:
            print(f"{self.command}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        self.args.backend = self.server.base_url
        self.args.model = self.args.model or self.profile.model
        self.args.api_key = self.args.api_key or self.profile.api_key
        return self.server

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.stop()


def run_remote_bench(args: argparse.Namespace, format_table) -> int:
    import time

    from engine.bench_remote import RemoteBenchOptions, suite_remote

    command = "workbench bench"
    if not args.backend and not getattr(args, "launch", None):
        print(f"{command}: --suite remote needs --backend URL (a running server) or --launch PROFILES",
              file=sys.stderr)
        raise SystemExit(2)
    if args.suite not in ("remote", "all"):
        print(f"{command}: --suite {args.suite} runs the local engine; with --backend use --suite remote",
              file=sys.stderr)
        raise SystemExit(2)
    refuse_local_flags(command, args)
    targets = _targets(command, args)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    report: dict = {"backend": args.backend, "model": args.model, "quick": args.quick, "suites": {},
                    "profiles": [p.to_dict() for _, p in targets if p is not None]}
    runs: list[dict] = []
    failed = False
    for label, profile in targets:  # one server at a time: two on one machine would share its cores
        try:
            with launched(command, args, profile):
                opts = RemoteBenchOptions(spec=backend_spec(command, args, metrics_interval_s=0.5), quick=args.quick)
                for r in suite_remote(opts, log):
                    d = r.to_dict()
                    if label:
                        d["name"] = f"{label} {d['name']}"
                        d["config"]["profile"] = label
                    runs.append(d)
        except Exception as exc:  # noqa: BLE001 - reported, and the JSON still written
            log(f"remote{' ' + label if label else ''}: FAILED: {exc}")
            report["suites"]["remote"] = {"error": str(exc), "runs": runs}
            failed = True
    report["suites"].setdefault("remote", {"runs": runs})
    if runs:
        print(format_table("remote", runs))
        print(format_server_table(runs))
    report["total_wall_s"] = time.perf_counter() - t0
    from app.bench_cli import write_report

    write_report(report, args, log)
    return 1 if failed else 0
