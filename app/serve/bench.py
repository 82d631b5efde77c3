"""`workbench bench --suite serve`: served tokens/s against the in-process engine, one run.

One engine, loaded once, answers the same workload two ways, interleaved (A B A B ...):
- in-process: the requests submitted straight to the engine;
- served: the same requests from streaming HTTP clients (SSE, as the openai SDK reads it) over
  a local socket, the clients in a child process (a client loop in this process would compete
  with the engine thread for the interpreter lock; a real client is elsewhere).
Both rows use the engine's own per-request stats (TTFT, ITL) so the definitions match; the
served row also says what its clients measured. Greedy outputs must be identical.
"""

from __future__ import annotations

import json
import queue
import statistics
import subprocess
import sys
import time

from app.serve.runner import ServerThread
from app.serve.session import ServeSession
from engine import events as ev
from engine.bench import BENCH_PROMPTS, Log, RunResult, greedy_requests
from engine.bench_suites import BenchOptions
from engine.config import EngineConfig
from engine.engine import Engine
from engine.event_hub import EventHub
from engine.metrics import percentile

NUM_CLIENTS = 8
TIMEOUT_S = 1800.0

# The client side, run as `python -c CLIENT_SCRIPT URL` with the requests as JSON on stdin:
# all requests at once, each a streaming /v1/completions over its own connection.
CLIENT_SCRIPT = r"""
import asyncio, json, sys, time
import httpx

async def one(client, url, body):
    t0 = time.perf_counter()
    first, ids = None, []
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            new = chunk["choices"][0].get("token_ids") or []
            if new and first is None:
                first = time.perf_counter() - t0
            ids += new
    return ids, first

async def main():
    url = sys.argv[1] + "/v1/completions"
    bodies = json.load(sys.stdin)
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, b) for b in bodies))
        wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "outputs": [r[0] for r in results], "ttft_s": [r[1] for r in results]}))

asyncio.run(main())
"""


class _Collector:
    """RequestFinished events of the given ids, from the hub (any thread)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.finished: queue.Queue[ev.RequestFinished] = queue.Queue()
        self._handle = hub.add_listener(lambda e: self.finished.put(e) if isinstance(e, ev.RequestFinished)
                                        else None)

    def wait(self, count: int, accept) -> list[ev.RequestFinished]:
        out = []
        while len(out) < count:
            fin = self.finished.get(timeout=TIMEOUT_S)
            if accept(fin):
                out.append(fin)
        return out

    def close(self) -> None:
        self.hub.remove_listener(self._handle)


def _prompts(tokenizer) -> list[list[int]]:
    return [tokenizer.encode(BENCH_PROMPTS[i % len(BENCH_PROMPTS)]) for i in range(NUM_CLIENTS)]


def _run_in_process(engine: Engine, collector: _Collector, prompts, lengths) -> tuple[float, list]:
    requests = greedy_requests(prompts, lengths)
    t0 = time.perf_counter()
    ids = [engine.submit(r) for r in requests]
    wanted = set(ids)
    fins = {f.request_id: f for f in collector.wait(len(ids), lambda f: f.request_id in wanted)}
    wall = time.perf_counter() - t0
    return wall, [fins[rid] for rid in ids]


def _run_served(url: str, collector: _Collector, prompts, lengths, model_id: str) -> tuple[float, list, dict]:
    # "stop": [] — no stop strings, as the in-process requests (absent, the model's defaults apply)
    bodies = [{"model": model_id, "prompt": p, "max_tokens": n, "temperature": 0, "stream": True, "stop": [],
               "ignore_eos": True, "return_token_ids": True} for p, n in zip(prompts, lengths)]
    proc = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, url], input=json.dumps(bodies),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"serve clients failed: {proc.stderr.strip().splitlines()[-1:]}")
    client = json.loads(proc.stdout)
    fins = collector.wait(len(bodies), lambda f: f.tag == "serve")
    return client["wall_s"], fins, client


def _row(name: str, config: EngineConfig, walls: list[float], fins: list[ev.RequestFinished], counts: list[int],
         outputs: list[list[int]], weights: int) -> RunResult:
    """counts: the tokens each repeat actually produced (what its clients received)."""
    rates = [n / w for n, w in zip(counts, walls)]
    tokens = counts[-1]
    itl = [x for f in fins for x in f.stats.itl_s]
    ttfts = [f.stats.ttft_s for f in fins if f.stats.ttft_s is not None]
    return RunResult(
        name=name, config=config.to_dict(), tokens_per_s=statistics.median(rates),
        ttft_s=sum(ttfts) / len(ttfts) if ttfts else None, itl_p50_s=percentile(itl, 50),
        itl_p95_s=percentile(itl, 95), weights_bytes=weights, completion_tokens=tokens,
        wall_s=statistics.median(walls), outputs=outputs,
        extra={"tokens_per_s_min": min(rates), "tokens_per_s_max": max(rates), "repeats": len(walls)})


def suite_serve(opts: BenchOptions, log: Log, *, repeats: int | None = None,
                new_tokens: int | None = None) -> list[RunResult]:
    """repeats / new_tokens: by default opts.repeats (--repeats) of 64 tokens (--quick) or 192 per client."""
    config = EngineConfig()  # continuous batching, 8 slots: the 8 clients share steps
    engine = Engine(opts.spec, config)
    hub = EventHub(engine.events)
    loaded: queue.Queue = queue.Queue()
    watch = hub.add_listener(lambda e: loaded.put(e) if isinstance(e, (ev.ModelLoaded, ev.EngineErrorEvent))
                             else None)
    session = ServeSession(engine, hub, config=config, default_max_tokens=256)
    server = ServerThread(session, "127.0.0.1", 0)
    collector = _Collector(hub)
    hub.start()
    engine.start()
    try:
        event = loaded.get(timeout=TIMEOUT_S)
        if not isinstance(event, ev.ModelLoaded):
            raise RuntimeError(event.message)
        hub.remove_listener(watch)
        server.start()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(opts.spec.name_or_path,
                                                  trust_remote_code=opts.spec.trust_remote_code)
        prompts = _prompts(tokenizer)
        lengths = [new_tokens or (64 if opts.quick else 192)] * NUM_CLIENTS
        repeats = repeats or opts.repeats
        log(f"serve: warm-up (both paths, {NUM_CLIENTS} requests of 8 tokens)")
        _run_in_process(engine, collector, prompts, [8] * NUM_CLIENTS)
        _run_served(server.url, collector, prompts, [8] * NUM_CLIENTS, session.model_id)
        local_walls, served_walls, client_ttfts = [], [], []
        local_counts, served_counts = [], []
        local_fins = served_fins = []
        for i in range(repeats):
            log(f"serve: in-process, repeat {i + 1}/{repeats} ({NUM_CLIENTS} x {lengths[0]} tokens)")
            wall, local_fins = _run_in_process(engine, collector, prompts, lengths)
            local_walls.append(wall)
            local_counts.append(sum(len(f.token_ids) for f in local_fins))
            log(f"serve: served over HTTP, repeat {i + 1}/{repeats}")
            wall, served_fins, client = _run_served(server.url, collector, prompts, lengths, session.model_id)
            served_walls.append(wall)
            client_ttfts += [t for t in client["ttft_s"] if t is not None]
            served_outputs = client["outputs"]
            served_counts.append(sum(len(o) for o in served_outputs))
        weights = session.model_info.weights_bytes
        local = _row("in-process-8", config, local_walls, local_fins, local_counts,
                     [list(f.token_ids) for f in local_fins], weights)
        served = _row("served-8", config, served_walls, served_fins, served_counts, served_outputs, weights)
        local.outputs_match_reference = None
        served.outputs_match_reference = served.outputs == local.outputs
        served.extra["served_ratio"] = served.tokens_per_s / local.tokens_per_s
        served.extra["client_ttft_s"] = sum(client_ttfts) / len(client_ttfts) if client_ttfts else None
        served.extra["note"] = "streaming HTTP clients in a child process; TTFT/ITL from the engine's stats"
        return [local, served]
    finally:
        collector.close()
        server.stop()
        engine.shutdown()
        hub.stop()
