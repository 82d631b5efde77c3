"""`workbench bench --backend URL --suite remote`: a running server measured from the client
(TTFT, ITL, TPOT, tokens/s at concurrency 1 and 8, by the local engine's own formulas) with
the server's own figures beside them (its /metrics counter and histogram deltas over the same
requests), so the two can be checked against each other."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine import events as ev
from engine.bench import BENCH_PROMPTS, Log, RunResult
from engine.config import GenerateRequest, SamplingParams
from engine.events import now_s
from engine.metrics import percentile
from engine.remote import RemoteBackend, RemoteSpec
from engine.remote.events import ServerMetricsSampled
from engine.remote.server_stats import ServerSnapshot, interval


@dataclass(frozen=True)
class RemoteBenchOptions:
    spec: RemoteSpec
    quick: bool = False
    concurrency: tuple[int, ...] = (1, 8)
    warmup: int = 2

    @property
    def max_new_tokens(self) -> int:
        return 32 if self.quick else 128

    def num_requests(self, concurrency: int) -> int:
        return max(4, 2 * concurrency) if self.quick else max(8, 4 * concurrency)


def _request(i: int, n: int) -> GenerateRequest:
    return GenerateRequest(messages=(("user", BENCH_PROMPTS[i % len(BENCH_PROMPTS)]),),
                           sampling=SamplingParams(max_new_tokens=n, ignore_eos=True), tag="bench-remote")


class _Run:
    """Closed loop: `concurrency` requests in flight, the next one submitted as one finishes."""

    def __init__(self, backend: RemoteBackend, total: int, concurrency: int, n: int) -> None:
        self.backend, self.total, self.concurrency, self.n = backend, total, concurrency, n
        self.finished: list[ev.RequestFinished] = []
        self.snapshots: list[ServerSnapshot] = []

    def go(self, timeout_s: float = 600.0) -> float:
        mine: set[str] = set()
        submitted = 0
        t0 = now_s()
        while submitted < min(self.concurrency, self.total):
            mine.add(self.backend.submit(_request(submitted, self.n)))
            submitted += 1
        while len(self.finished) < self.total:
            e = self.backend.events.get(timeout=timeout_s)
            if isinstance(e, ServerMetricsSampled):
                self.snapshots.append(e.snapshot)
            elif isinstance(e, ev.RequestFinished) and e.request_id in mine:
                self.finished.append(e)
                if submitted < self.total:
                    mine.add(self.backend.submit(_request(submitted, self.n)))
                    submitted += 1
        return now_s() - t0


def _settled(backend: RemoteBackend, tokens_before: float | None, tokens: int) -> ServerSnapshot | None:
    """A scrape once the server has counted every token the client received (it records its
    counters just after sending the last chunk); a few tries at most."""
    wait = threading.Event()
    snap = backend.scrape_now()
    for _ in range(40):
        if snap is None or tokens_before is None or snap.generation_tokens is None:
            return snap
        if snap.generation_tokens - tokens_before >= tokens and not snap.num_requests_running:
            return snap
        wait.wait(0.05)
        snap = backend.scrape_now()
    return snap


def _server_request_tps(before: ServerSnapshot, after: ServerSnapshot, tokens: float | None) -> float | None:
    """Generated tokens over the server's own summed e2e latency (its histogram's _sum delta)."""
    if tokens is None or before.e2e is None or after.e2e is None:
        return None
    spent = after.e2e.sum - before.e2e.sum
    return tokens / spent if spent > 0 else None


def _peak(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def measure(backend: RemoteBackend, opts: RemoteBenchOptions, concurrency: int, log: Log) -> RunResult:
    n = opts.max_new_tokens
    total = opts.num_requests(concurrency)
    log(f"remote: concurrency {concurrency}, {total} requests x {n} tokens")
    before = backend.scrape_now()
    run = _Run(backend, total, concurrency, n)
    wall = run.go()
    errors = [f.error for f in run.finished if f.reason is ev.FinishReason.ERROR]
    if errors:
        raise RuntimeError(f"remote c{concurrency}: {errors[0]}")
    fins = run.finished
    tokens = sum(f.stats.completion_tokens for f in fins)
    ttfts = [f.stats.ttft_s for f in fins if f.stats.ttft_s is not None]
    itl = [x for f in fins for x in f.stats.itl_s]
    tpots = [f.stats.tpot_s for f in fins if f.stats.tpot_s is not None]
    res = RunResult(
        name=f"remote c{concurrency}",
        config={"backend": backend.spec.base_url, "engine": backend.engine_kind.value, "model": backend.model,
                "concurrency": concurrency, "requests": total, "max_new_tokens": n},
        tokens_per_s=tokens / wall if wall > 0 else None,
        ttft_s=sum(ttfts) / len(ttfts) if ttfts else None,
        itl_p50_s=percentile(itl, 50),
        itl_p95_s=percentile(itl, 95),
        completion_tokens=tokens,
        wall_s=wall,
        outputs=[list(f.token_ids) for f in fins],
    )
    res.extra.update({
        "ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95),
        "itl_mean_s": sum(itl) / len(itl) if itl else None,
        "tpot_mean_s": sum(tpots) / len(tpots) if tpots else None,
        "e2e_mean_s": sum(f.stats.e2e_s for f in fins) / len(fins),
        # per-request speed on each side's own clock: tokens over summed request latency
        "request_tokens_per_s": tokens / sum(f.stats.e2e_s for f in fins),
    })
    after = _settled(backend, before.generation_tokens if before else None, tokens) if before else None
    if before is None or after is None:
        res.extra["server_metrics"] = None  # the server exposes none: unknown, not zero
        return res
    iv = interval(before, after)
    res.extra.update({
        "server_engine": after.engine.value,
        "server_generation_tokens": iv.generation_tokens,
        "server_request_tokens_per_s": _server_request_tps(before, after, iv.generation_tokens),
        "tokens_match_server": None if iv.generation_tokens is None else iv.generation_tokens == tokens,
        "server_ttft_mean_s": iv.ttft_mean_s,
        "server_itl_mean_s": iv.itl_mean_s,
        "server_e2e_mean_s": iv.e2e_mean_s,
        "server_prefix_cache_hit_rate": iv.prefix_cache_hit_rate,
        "server_running_peak": _peak([s.num_requests_running for s in run.snapshots]),
        "server_waiting_peak": _peak([s.num_requests_waiting for s in run.snapshots]),
        "server_kv_cache_usage_peak": _peak([s.kv_cache_usage for s in run.snapshots]),
    })
    if iv.spec is not None:
        res.extra.update({"acceptance_rate": iv.spec.acceptance_rate,
                          "mean_tokens_per_verify": iv.spec.mean_tokens_per_verify,
                          "server_num_drafts": iv.spec.num_drafts,
                          "server_num_accepted_tokens": iv.spec.num_accepted_tokens})
    return res


def suite_remote(opts: RemoteBenchOptions, log: Log) -> list[RunResult]:
    backend = RemoteBackend(opts.spec).start()
    try:
        backend.wait_connected(opts.spec.connect_timeout_s * 3)
        if opts.warmup:
            log(f"remote: warm-up ({opts.warmup} requests)")
            warm = _Run(backend, opts.warmup, 1, 8)
            warm.go()
            bad = [f.error for f in warm.finished if f.reason is ev.FinishReason.ERROR]
            if bad:
                raise RuntimeError(f"remote warm-up: {bad[0]}")
        return [measure(backend, opts, c, log) for c in opts.concurrency]
    finally:
        backend.shutdown(timeout=10)
