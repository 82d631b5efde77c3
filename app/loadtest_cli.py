"""`workbench loadtest`: simulated users against the engine, live figures once a second."""

from __future__ import annotations

import argparse
import queue
import sys
import time

from app.cli import default_model
from app.cli_types import check_device, fail, float_range, int_range
from engine import events as ev
from engine.config import BatchingConfig, DeviceKind, DType, EngineConfig, KVCacheMode, ModelSpec
from engine.engine import Engine
from engine.loadgen import LoadGenerator, LoadSpec
from engine.metrics import percentile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int_range(1, 256), default=4, help="simulated users (requests in flight at most)")
    p.add_argument("--rate", type=float_range(0.0, 1000.0, lo_open=True), default=2.0, help="request arrivals per second (Poisson)")
    p.add_argument("--duration", type=float_range(0.0, 86400.0, lo_open=True), default=30.0, help="seconds to generate load")
    p.add_argument("--min-tokens", type=int_range(1, 100_000), default=16)
    p.add_argument("--max-tokens", type=int_range(1, 100_000), default=96)
    p.add_argument("--no-batching", action="store_true")
    p.add_argument("--max-batch", type=int_range(1, 256), default=8)
    p.add_argument("--no-kv-cache", action="store_true")


def run(args: argparse.Namespace) -> int:
    check_device("workbench loadtest", args.device)
    if args.min_tokens > args.max_tokens:
        fail("workbench loadtest", f"--min-tokens ({args.min_tokens}) is more than --max-tokens ({args.max_tokens})")
    if getattr(args, "launch", None):  # start the profile's server, drive it, stop it
        from app.remote_cli import launched

        with launched("workbench loadtest", args):
            args.launch = None
            return run(args)
    if getattr(args, "backend", None):
        from app.remote_cli import open_backend

        engine = open_backend("workbench loadtest", args)  # same surface and events as Engine
    else:
        spec = ModelSpec(default_model(args.model), device=DeviceKind(args.device), dtype=DType(args.dtype),
                         trust_remote_code=args.trust_remote_code)
        config = EngineConfig(kv_cache=KVCacheMode.OFF if args.no_kv_cache else KVCacheMode.ON,
                              batching=BatchingConfig(enabled=not args.no_batching, max_batch_size=args.max_batch))
        engine = Engine(spec, config).start()
    try:
        while True:
            e = engine.events.get()
            if isinstance(e, ev.ModelLoaded):
                break
            if isinstance(e, ev.EngineErrorEvent):
                print(f"error: {e.message}", file=sys.stderr)
                return 1
        gen = LoadGenerator(engine.submit, LoadSpec(users=args.users, rate_per_s=args.rate,
                                                    min_new_tokens=args.min_tokens, max_new_tokens=args.max_tokens))
        finished: list[ev.RequestFinished] = []
        last = None
        t0 = time.monotonic()
        next_print = t0 + 1.0
        gen.start()
        while time.monotonic() - t0 < args.duration or gen.stats.in_flight:
            if time.monotonic() - t0 >= args.duration and gen.running:
                gen.stop()
            try:
                e = engine.events.get(timeout=max(0.01, next_print - time.monotonic()))
            except queue.Empty:
                e = None
            if isinstance(e, ev.RequestFinished):
                gen.notify_finished(e.request_id)
                finished.append(e)
            elif isinstance(e, ev.StepCompleted):
                last = e.stats
            if time.monotonic() >= next_print and last is not None:
                next_print += 1.0
                tps = "    n/a" if last.tokens_per_s is None else f"{last.tokens_per_s:7.1f}"  # a remote may not say
                print(f"t={time.monotonic() - t0:5.1f}s  {tps} tok/s  batch {_known(last.batch_size)}  "
                      f"queue {_known(last.num_waiting)}  done {len(finished)}", file=sys.stderr, flush=True)
        gen.stop()
        _summary(finished, time.monotonic() - t0)
        return 0
    finally:
        engine.shutdown()


def _known(x: int | None) -> str:
    return "n/a" if x is None else str(x)


def _summary(finished: list[ev.RequestFinished], wall: float) -> None:
    ttft = [f.stats.ttft_s for f in finished if f.stats.ttft_s is not None]
    itl = [x for f in finished for x in f.stats.itl_s]
    tokens = sum(f.stats.completion_tokens for f in finished)

    def ms(x):
        return "n/a" if x is None else f"{x * 1000:.1f} ms"

    print(f"requests {len(finished)}  tokens {tokens}  throughput {tokens / wall:.1f} tok/s  "
          f"TTFT p50 {ms(percentile(ttft, 50))} p95 {ms(percentile(ttft, 95))}  "
          f"ITL p50 {ms(percentile(itl, 50))} p95 {ms(percentile(itl, 95))}")
