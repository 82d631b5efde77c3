"""Tune: sweep configurations of this model on this machine, find the Pareto front, recommend.

Qt-free and reusable: `workbench tune` and the Tune tab drive the same Sweep. Each point is
measured with the bench's warm-up and repeats: single-stream tokens/s and TTFT, throughput
with N concurrent users, peak memory (weights, KV, process) and quality against the
unquantised greedy baseline. A point that cannot run is listed with its reason. Results are
saved after every point, so a cancelled sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from engine.bench import BENCH_PROMPTS, EngineSession, engine_result, greedy_requests
from engine.config import (
    BatchingConfig,
    EngineConfig,
    KVCacheMode,
    ModelSpec,
    Quantisation,
    SpeculativeConfig,
    SpeculativeMode,
)

SINGLE_TOKENS = 64
USER_TOKENS = 48


@dataclass(frozen=True)
class GridPoint:
    name: str
    config: EngineConfig


@dataclass
class PointResult:
    name: str
    config: dict
    status: str = "measured"  # measured | skipped | failed
    reason: str = ""
    single_tokens_per_s: float | None = None
    ttft_s: float | None = None
    throughput_tokens_per_s: float | None = None  # with `users` requests at once
    users: int = 0
    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    peak_rss_bytes: int | None = None
    perplexity: float | None = None
    perplexity_ratio: float | None = None  # against the unquantised model
    agreement: float | None = None  # greedy tokens equal to the baseline's, share
    first_divergence: int | None = None
    acceptance_rate: float | None = None
    advisor_k: int | None = None  # the break-even advisor's recommended k (speculative points)

    @property
    def measured(self) -> bool:
        return self.status == "measured"


def _spec(mode: SpeculativeMode, k: int, draft: str | None) -> SpeculativeConfig:
    return SpeculativeConfig(mode=mode, num_draft_tokens=k, draft_model=draft if mode is SpeculativeMode.DRAFT else None)


def _label(cfg: EngineConfig) -> str:
    parts = [] if cfg.kv_cache is KVCacheMode.ON else [f"kv {cfg.kv_cache.value}"]
    parts.append(f"batch {cfg.batching.max_batch_size}" if cfg.batching.enabled else "no batching")
    parts.append(cfg.quantisation.value)
    s = cfg.speculative
    if s.mode is not SpeculativeMode.OFF:
        parts.append(f"{s.mode.value} k={s.num_draft_tokens}")
    return " · ".join(parts)


def make_grid(kind: str, draft: str | None) -> list[GridPoint]:
    """quick: the choices that matter most, a few minutes on the demo pair; full: the cross product."""
    if kind == "quick":
        quant = [Quantisation.NONE, Quantisation.NF4]
        specs = [(SpeculativeMode.OFF, 4), (SpeculativeMode.DRAFT, 2), (SpeculativeMode.DRAFT, 4),
                 (SpeculativeMode.NGRAM, 4)]
        kvs, batches = [KVCacheMode.ON], [8]
    elif kind == "full":
        quant = list(Quantisation)
        specs = [(SpeculativeMode.OFF, 4)] + [(SpeculativeMode.DRAFT, k) for k in (2, 4, 6)] + \
                [(SpeculativeMode.NGRAM, k) for k in (2, 4)]
        kvs, batches = [KVCacheMode.ON, KVCacheMode.OFF], [1, 8]
    else:
        raise ValueError(f"unknown grid {kind!r}: quick, full or a JSON file")
    points = []
    for kv in kvs:
        for b in batches:
            for q in quant:
                for mode, k in specs:
                    cfg = EngineConfig(kv_cache=kv, quantisation=q, speculative=_spec(mode, k, draft),
                                       batching=BatchingConfig(enabled=b > 1, max_batch_size=max(b, 1)))
                    points.append(GridPoint(_label(cfg), cfg))
    return points


def load_grid(path: str | Path, draft: str | None) -> list[GridPoint]:
    """A JSON list of EngineConfig dicts (as EngineConfig.to_dict writes them), optionally named."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list) or not data:
        raise ValueError("a grid file holds a non-empty JSON list of configurations")
    points = []
    for item in data:
        name = item.pop("name", None) if isinstance(item, dict) else None
        cfg = EngineConfig.from_dict(item)
        if cfg.speculative.mode is SpeculativeMode.DRAFT and not cfg.speculative.draft_model:
            cfg = cfg.with_(speculative=_spec(SpeculativeMode.DRAFT, cfg.speculative.num_draft_tokens, draft))
        points.append(GridPoint(name or _label(cfg), cfg))
    return points


def cannot_run(point: GridPoint, spec: ModelSpec) -> str | None:
    from engine.models import resolve_device
    from engine.quant import availability

    why = availability(point.config.quantisation, resolve_device(spec.device))
    if why:
        return why
    s = point.config.speculative
    if s.mode is SpeculativeMode.DRAFT and not s.draft_model:
        return "no draft model (give --draft)"
    return None


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    point: str
    eta_s: float | None
    result: PointResult | None = None


class Sweep:
    """Measure each point; save after each one; resumable; cancellable between points and runs."""

    def __init__(self, spec: ModelSpec, points: list[GridPoint], *, users: int = 4, repeats: int = 1,
                 eval_text: str | None = None, save_to: str | Path | None = None) -> None:
        self.spec = spec
        self.points = points
        self.users = users
        self.repeats = repeats
        self.eval_text = eval_text or "\n\n".join(BENCH_PROMPTS) * 4
        self.save_to = Path(save_to) if save_to else None
        self.cancel = threading.Event()
        self.results: dict[str, PointResult] = {}
        self._ppl: dict[Quantisation, float] = {}
        self._baseline_outputs: list[list[int]] | None = None

    def resume(self) -> int:
        """Take the points already measured from the save file; returns how many."""
        if self.save_to is None or not self.save_to.is_file():
            return 0
        data = json.loads(self.save_to.read_text())
        names = {p.name for p in self.points}
        for item in data.get("points", []):
            if item.get("name") in names and item.get("status") in ("measured", "skipped"):
                self.results[item["name"]] = PointResult(**item)
        self._baseline_outputs = data.get("baseline_outputs")
        return len(self.results)

    def run(self, on_progress: Callable[[Progress], None] | None = None) -> list[PointResult]:
        report = on_progress or (lambda p: None)
        todo = [p for p in self.points if p.name not in self.results]
        total, done = len(self.points), len(self.points) - len(todo)
        session = None
        t0 = time.perf_counter()
        measured_now = 0
        try:
            for point in todo:
                if self.cancel.is_set():
                    break
                eta = None
                if measured_now:
                    eta = (time.perf_counter() - t0) / measured_now * (len(todo) - measured_now)
                report(Progress(done, total, point.name, eta))
                why = cannot_run(point, self.spec)
                if why:
                    result = PointResult(point.name, point.config.to_dict(), status="skipped", reason=why)
                else:
                    if session is None:
                        session = EngineSession(self.spec, EngineConfig())
                    result = self._measure(session, point)
                if self.cancel.is_set() and result.status == "failed":
                    break  # interrupted half-way: measured again on resume
                self.results[point.name] = result
                done += 1
                measured_now += 1
                self._save()
                report(Progress(done, total, point.name, None, result))
        finally:
            if session is not None:
                session.close()
        return [self.results[p.name] for p in self.points if p.name in self.results]

    def _measure(self, session: EngineSession, point: GridPoint) -> PointResult:
        from engine.metrics import percentile

        res = PointResult(point.name, point.config.to_dict(), users=self.users)
        try:
            session.configure(point.config)
            tok = session.engine._core.loaded.tokenizer if session.engine._core.loaded else None
            prompts = [tok.encode(BENCH_PROMPTS[i % len(BENCH_PROMPTS)]) for i in range(max(self.users, 1))]
            session.run(greedy_requests([prompts[0]], [8]))  # warm, as the bench does
            singles, ttfts, tputs = [], [], []
            for _ in range(self.repeats):
                if self.cancel.is_set():
                    raise InterruptedError("cancelled")
                fin, wall = session.run(greedy_requests([prompts[0]], [SINGLE_TOKENS]))
                single = engine_result(point.name, point.config, session, fin, wall)
                singles.append(single.tokens_per_s)
                ttfts.append(single.ttft_s)
                fin, wall = session.run(greedy_requests(prompts, [USER_TOKENS] * len(prompts)))
                many = engine_result(point.name, point.config, session, fin, wall)
                tputs.append(many.tokens_per_s)
            res.single_tokens_per_s = percentile(singles, 50)
            res.ttft_s = percentile([t for t in ttfts if t is not None], 50)
            res.throughput_tokens_per_s = percentile(tputs, 50)
            res.weights_bytes = many.weights_bytes
            res.kv_cache_bytes = max(single.kv_cache_bytes or 0, many.kv_cache_bytes or 0)
            res.peak_rss_bytes = max(single.peak_rss_bytes or 0, many.peak_rss_bytes or 0)
            res.acceptance_rate = single.extra.get("acceptance_rate")
            if session.last_advice is not None:
                res.advisor_k = session.last_advice.recommended_k
            self._quality(res, point.config.quantisation, single.outputs[0], tok)
        except InterruptedError:
            res.status, res.reason = "failed", "cancelled"
        except Exception as exc:  # noqa: BLE001 - one point failing must not end the sweep
            res.status, res.reason = "failed", f"{type(exc).__name__}: {exc}"
        return res

    def _quality(self, res: PointResult, level: Quantisation, outputs: list[int], tok) -> None:
        from engine.quality import agreement

        res.perplexity = self._perplexity(level, tok)
        res.perplexity_ratio = res.perplexity / self._perplexity(Quantisation.NONE, tok)
        if self._baseline_outputs is None and level is Quantisation.NONE:
            self._baseline_outputs = [outputs]  # greedy: every unquantised point gives the same tokens
        if self._baseline_outputs is not None:
            a = agreement(self._baseline_outputs[0], outputs)
            res.agreement, res.first_divergence = a.share, a.first_divergence

    def _perplexity(self, level: Quantisation, tok) -> float:
        """Held-out perplexity at a level, measured once per level on a model loaded for it."""
        from engine.quality import level_quality

        if level not in self._ppl:
            self._ppl[level] = level_quality(self.spec, level, tok.encode(self.eval_text)[:2048]).perplexity
        return self._ppl[level]

    def _save(self) -> None:
        if self.save_to is None:
            return
        from engine.machine import machine_info

        data = {"model": self.spec.name_or_path, "machine": machine_info(), "users": self.users,
                "repeats": self.repeats, "baseline_outputs": self._baseline_outputs,
                "points": [asdict(r) for r in self.results.values()]}
        tmp = self.save_to.with_suffix(self.save_to.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.save_to)  # atomic: a crash never leaves half a file


# ---------------------------------------------------------------- analysis (pure)
Objective = tuple[str, bool]  # (field, maximise)

DEFAULT_OBJECTIVES: tuple[Objective, ...] = (("single_tokens_per_s", True), ("peak_rss_bytes", False))


def dominates(a: dict, b: dict, objectives: tuple[Objective, ...]) -> bool:
    better = False
    for key, maximise in objectives:
        x, y = a[key], b[key]
        if (x < y) if maximise else (x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(points: list[dict], objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES) -> list[int]:
    """Indices of the points no other point dominates (points missing a figure are left out)."""
    usable = [i for i, p in enumerate(points) if all(p.get(k) is not None for k, _ in objectives)]
    front = []
    for i in usable:
        if not any(dominates(points[j], points[i], objectives) for j in usable if j != i):
            front.append(i)
    # sort along the first objective, best first
    key, maximise = objectives[0]
    return sorted(front, key=lambda i: points[i][key], reverse=maximise)


@dataclass(frozen=True)
class Recommendation:
    goal: str
    point: str | None
    why: str


GOALS = ("fastest single stream", "most throughput", "smallest memory within 2% perplexity")


def recommend(results: list[PointResult], goal: str, *, max_ppl_ratio: float = 1.02) -> Recommendation:
    ok = [r for r in results if r.measured]
    if goal == "fastest single stream":
        pool = [r for r in ok if r.single_tokens_per_s is not None]
        best = max(pool, key=lambda r: r.single_tokens_per_s, default=None)
        why = f"{best.single_tokens_per_s:.1f} tok/s for one user" if best else "nothing measured"
    elif goal == "most throughput":
        pool = [r for r in ok if r.throughput_tokens_per_s is not None]
        best = max(pool, key=lambda r: r.throughput_tokens_per_s, default=None)
        why = f"{best.throughput_tokens_per_s:.1f} tok/s with {best.users} users" if best else "nothing measured"
    elif goal == "smallest memory within 2% perplexity":
        pool = [r for r in ok if r.peak_rss_bytes and r.perplexity_ratio is not None and r.perplexity_ratio <= max_ppl_ratio]
        best = min(pool, key=lambda r: (r.weights_bytes or 0) + (r.kv_cache_bytes or 0), default=None)
        why = (f"weights {best.weights_bytes / 1e6:.1f} MB, perplexity x{best.perplexity_ratio:.3f}"
               if best else "no point within the perplexity bound")
    else:
        raise ValueError(f"unknown goal {goal!r}")
    return Recommendation(goal, best.name if best else None, why)
