"""Benchmark suites: the engine and its peers, measured side by side in one run (no Qt)."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from transformers import GenerationConfig

from engine import events as ev
from engine.config import BatchingConfig, EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, SamplingParams
from engine.engine import Engine
from engine.metrics import percentile, process_rss_bytes

Log = Callable[[str], None]

BENCH_PROMPTS = [
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\n",
    "HAMLET:\nTo be, or not to be, that is the question.\n\nHORATIO:\n",
    "KING LEAR:\nBlow, winds, and crack your cheeks! rage! blow!\n\nFOOL:\n",
    "MACBETH:\nIs this a dagger which I see before me?\n\nLADY MACBETH:\n",
    "PORTIA:\nThe quality of mercy is not strain'd.\n\nSHYLOCK:\n",
    "PROSPERO:\nWe are such stuff as dreams are made on.\n\nMIRANDA:\n",
    "OTHELLO:\nIt is the cause, it is the cause, my soul.\n\nDESDEMONA:\n",
    "RICHARD:\nNow is the winter of our discontent.\n\nBUCKINGHAM:\n",
]


@dataclass
class RunResult:
    name: str
    config: dict
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    peak_rss_bytes: int | None = None
    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    completion_tokens: int = 0
    wall_s: float | None = None
    outputs_match_reference: bool | None = None
    extra: dict = field(default_factory=dict)
    outputs: list[list[int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "name", "config", "tokens_per_s", "ttft_s", "itl_p50_s", "itl_p95_s", "peak_rss_bytes",
            "weights_bytes", "kv_cache_bytes", "completion_tokens", "wall_s", "outputs_match_reference")}
        d.update(self.extra)
        return d


def machine_info(device: str) -> dict:
    """The bench's machine block: the shared probe plus a measured memory read bandwidth."""
    from engine.machine import machine_info as probe

    return probe(device, bandwidth=True)


@dataclass
class Case:
    """One row of a suite: `prepare` (untimed: configure, warm, fill caches) then `measure`."""

    name: str
    measure: Callable[[], "RunResult"]
    prepare: Callable[[], None] = lambda: None


def run_cases(cases: list[Case], repeats: int, log: Log, suite: str) -> list["RunResult"]:
    """Every case prepared the same way before each measurement; repeats interleaved
    (A B C A B C) so drift of the machine hits every row alike; medians with min-max, and each
    repeat's speed in the JSON (`tokens_per_s_runs`). "x first" is the ratio of the medians: on
    this project's VM the noise is per measurement (one pass 10 % slow), not a slow drift, and
    ratios taken within each repeat (tried, with the first row interpolated between repeats)
    agreed worse between two runs (up to 25 % apart) than the ratio of medians (within 9 %)."""
    runs: dict[str, list[RunResult]] = {c.name: [] for c in cases}
    for rep in range(repeats):
        for case in cases:
            log(f"{suite}: {case.name} (repeat {rep + 1}/{repeats})")
            case.prepare()
            runs[case.name].append(case.measure())
    out = [aggregate(runs[c.name]) for c in cases]
    for case, agg in zip(cases, out):
        agg.extra["tokens_per_s_runs"] = [r.tokens_per_s for r in runs[case.name]]
    return out


def _median(values: list[float]) -> float | None:
    return percentile(values, 50) if values else None


def aggregate(results: list["RunResult"]) -> "RunResult":
    """Median of each figure over repeats, with the min and max of the headline ones."""
    first = results[0]
    out = RunResult(name=first.name, config=first.config, outputs=first.outputs, extra=dict(first.extra))
    for name in ("tokens_per_s", "ttft_s", "itl_p50_s", "itl_p95_s", "wall_s"):
        vals = [getattr(r, name) for r in results if getattr(r, name) is not None]
        setattr(out, name, _median(vals))
        if name in ("tokens_per_s", "ttft_s") and vals:
            out.extra[f"{name}_min"], out.extra[f"{name}_max"] = min(vals), max(vals)
    for name in ("peak_rss_bytes", "weights_bytes", "kv_cache_bytes"):
        vals = [getattr(r, name) for r in results if getattr(r, name) is not None]
        setattr(out, name, max(vals) if vals else None)
    for key in first.extra:
        vals = [r.extra.get(key) for r in results]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            med = _median(vals)
            out.extra[key] = int(med) if all(isinstance(v, int) for v in vals) and med == int(med) else med
    out.completion_tokens = first.completion_tokens
    matches = [r.outputs_match_reference for r in results]
    out.outputs_match_reference = None if all(m is None for m in matches) else all(bool(m) for m in matches)
    out.extra["repeats"] = len(results)
    return out


def roofline(result: "RunResult", bandwidth_bytes_per_s: float | None) -> None:
    """Batch-1 decode reads every weight once per step: achieved weight bytes/s = weights / the
    median time per token between emissions (an emission of a burst of decode steps brings
    several tokens, so its ITL is several steps)."""
    per_token = result.extra.get("token_gap_p50_s") or result.itl_p50_s
    if not bandwidth_bytes_per_s or not per_token or not result.weights_bytes:
        return
    achieved = result.weights_bytes / per_token
    result.extra["weight_read_bytes_per_s"] = achieved
    result.extra["roofline_pct"] = 100.0 * achieved / bandwidth_bytes_per_s


class EngineSession:
    """One engine, loaded once, driven synchronously for benchmarks."""

    def __init__(self, spec: ModelSpec, config: EngineConfig | None = None) -> None:
        self.engine = Engine(spec, config or EngineConfig()).start()
        self.info: ev.ModelInfo | None = None
        self.max_kv_bytes = 0
        self.max_weights_bytes = 0
        self.peak_rss = 0
        self.last_advice = None  # the break-even advisor's last word (speculative runs)
        while self.info is None:
            event = self.engine.events.get(timeout=600)
            if isinstance(event, ev.ModelLoaded):
                self.info = event.info
            elif isinstance(event, ev.EngineErrorEvent) and event.where == "load":
                self.engine.shutdown()
                raise RuntimeError(event.message)

    def configure(self, config: EngineConfig) -> None:
        self.engine.reconfigure(config)
        while True:
            event = self.engine.events.get(timeout=600)
            if isinstance(event, ev.ConfigApplied):
                return
            if isinstance(event, ev.EngineErrorEvent) and event.where == "config":
                raise RuntimeError(event.message)
            if isinstance(event, ev.ModelLoaded):
                self.info = event.info

    def run(self, requests: list[GenerateRequest], stagger_s: float = 0.0) -> tuple[dict[str, ev.RequestFinished], float]:
        """Submit all requests (optionally spaced out), wait for all; returns (finished, wall seconds)."""
        self.max_kv_bytes = 0
        self.max_weights_bytes = 0
        self.last_advice = None
        self.peak_rss = process_rss_bytes()
        t0 = time.perf_counter()
        ids = []
        for r in requests:
            ids.append(self.engine.submit(r))
        finished: dict[str, ev.RequestFinished] = {}
        while len(finished) < len(ids):
            event = self.engine.events.get(timeout=600)
            if isinstance(event, ev.RequestFinished):
                finished[event.request_id] = event
            elif isinstance(event, ev.StepCompleted):
                self.max_kv_bytes = max(self.max_kv_bytes, event.stats.kv_cache_bytes)
                self.max_weights_bytes = max(self.max_weights_bytes, event.stats.weights_bytes)
                self.peak_rss = max(self.peak_rss, event.stats.rss_bytes)
                if event.stats.spec_advice is not None:
                    self.last_advice = event.stats.spec_advice
        wall = time.perf_counter() - t0
        return {rid: finished[rid] for rid in ids}, wall

    def close(self) -> None:
        self.engine.shutdown(5.0)
        while True:
            try:
                self.engine.events.get_nowait()
            except queue.Empty:
                break


def engine_result(name: str, config: EngineConfig, session: EngineSession,
                  finished: dict[str, ev.RequestFinished], wall_s: float) -> RunResult:
    fins = list(finished.values())
    tokens = sum(f.stats.completion_tokens for f in fins)
    itl = [x for f in fins for x in f.stats.itl_s]
    gaps = [x for f in fins for x in f.stats.token_gaps_s]
    ttfts = [f.stats.ttft_s for f in fins if f.stats.ttft_s is not None]
    errors = [f.error for f in fins if f.reason is ev.FinishReason.ERROR]
    if errors:
        raise RuntimeError(f"{name}: {errors[0]}")
    acc = None
    spec = None
    for f in fins:
        spec = f.stats.spec if spec is None else spec.merged(f.stats.spec)
    if spec is not None:
        acc = spec.acceptance_rate
    res = RunResult(
        name=name,
        config=config.to_dict(),
        tokens_per_s=tokens / wall_s if wall_s > 0 else None,
        ttft_s=sum(ttfts) / len(ttfts) if ttfts else None,
        itl_p50_s=percentile(itl, 50),
        itl_p95_s=percentile(itl, 95),
        peak_rss_bytes=session.peak_rss,
        weights_bytes=session.max_weights_bytes or session.info.weights_bytes,  # includes a draft model
        kv_cache_bytes=session.max_kv_bytes,
        completion_tokens=tokens,
        wall_s=wall_s,
        outputs=[list(f.token_ids) for f in fins],
    )
    if gaps:
        res.extra["token_gap_p50_s"] = percentile(gaps, 50)
    if acc is not None:
        res.extra["acceptance_rate"] = acc
        res.extra["mean_tokens_per_verify"] = spec.mean_tokens_per_verify
    return res


def greedy_requests(prompt_ids: list[list[int]], lengths: list[int]) -> list[GenerateRequest]:
    return [GenerateRequest(prompt_token_ids=tuple(p), sampling=SamplingParams(max_new_tokens=n, ignore_eos=True))
            for p, n in zip(prompt_ids, lengths)]


def hf_generate(model, prompt_ids: list[list[int]], lengths: list[int], pad_id: int,
                assistant_model=None, num_assistant_tokens: int | None = None) -> tuple[list[list[int]], float]:
    """transformers generate(), greedy, one padded batch (left padding); returns (outputs, seconds)."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    device = next(model.parameters()).device
    n = max(lengths)
    # a clean greedy config: the model's own may sample or carry stop strings
    config = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad_id,
                              eos_token_id=None)
    kwargs = {}
    if assistant_model is not None:
        kwargs["assistant_model"] = assistant_model
        if num_assistant_tokens is not None:
            # a fixed draft length, as our draft-k runs use
            config.num_assistant_tokens = num_assistant_tokens
            config.num_assistant_tokens_schedule = "constant"
            config.assistant_confidence_threshold = 0.0
            assistant_model.generation_config = GenerationConfig(
                num_assistant_tokens=num_assistant_tokens, num_assistant_tokens_schedule="constant",
                assistant_confidence_threshold=0.0, do_sample=False, pad_token_id=pad_id, eos_token_id=None)
    # generate() fills unset fields from model.generation_config (stop strings, sampling):
    # swap in the clean config for the call
    saved, model.generation_config = model.generation_config, config
    try:
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids.to(device), attention_mask=mask.to(device), **kwargs)
        _sync(device)
        wall = time.perf_counter() - t0
    finally:
        model.generation_config = saved
    return [out[i, width: width + lengths[i]].tolist() for i in range(len(prompt_ids))], wall


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hf_result(name: str, outputs: list[list[int]], wall_s: float, weights: int, lengths: list[int]) -> RunResult:
    useful = sum(lengths)
    return RunResult(name=name, config={"peer": "transformers.generate", "batch": len(lengths)},
                     tokens_per_s=useful / wall_s, completion_tokens=useful, wall_s=wall_s,
                     weights_bytes=weights, peak_rss_bytes=process_rss_bytes(), outputs=outputs)


def sequential_config() -> EngineConfig:
    return EngineConfig(batching=BatchingConfig(enabled=False))


def continuous_config(n: int = 8) -> EngineConfig:
    return EngineConfig(batching=BatchingConfig(enabled=True, max_batch_size=n))


def kv_configs() -> dict[str, EngineConfig]:
    from engine.presets import Preset, preset_config

    kv_on = preset_config(Preset.KV_CACHE)
    return {"kv-off": preset_config(Preset.BASELINE), "kv-on": kv_on, "kv-on-stepwise": stepwise(kv_on)}


def stepwise(config: EngineConfig) -> EngineConfig:
    """The same configuration with one decode step per schedule (no greedy decode bursts): the
    bench's `-stepwise` rows show what the bursts add."""
    return config.with_(batching=replace(config.batching, decode_bursts=False))
