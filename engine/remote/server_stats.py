"""Server-side figures mapped onto ours: which engine a server is, what its /metrics say.

Each engine names the same quantities differently (vLLM `vllm:*`, SGLang `sglang:*`, TGI
`tgi_*`, llama.cpp `llamacpp:*`). A ServerSnapshot holds one scrape's figures under our names;
anything the server does not expose is None (unknown), never 0. Rates and per-interval figures
come from counter deltas between two snapshots (`interval()`), never from a server's own
averaged gauges.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from engine.metrics import SpecStats
from engine.remote.prom import Scrape


class ServerEngine(enum.Enum):
    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    LLAMACPP = "llama.cpp"
    OLLAMA = "ollama"
    OPENAI = "openai-compatible"  # speaks the API; which engine it is, it does not say


METRIC_PREFIXES = {
    "vllm:": ServerEngine.VLLM,
    "sglang:": ServerEngine.SGLANG,
    "llamacpp:": ServerEngine.LLAMACPP,
    "tgi_": ServerEngine.TGI,
}

OWNED_BY = {"vllm": ServerEngine.VLLM, "sglang": ServerEngine.SGLANG, "llamacpp": ServerEngine.LLAMACPP,
            "library": ServerEngine.OLLAMA, "tgi": ServerEngine.TGI}


def detect_engine(scrape: Scrape | None, owned_by: str | None = None,
                  ollama_version: str | None = None) -> ServerEngine:
    """From what the server exposes: its metric names first, then Ollama's /api/version,
    then /v1/models' owned_by."""
    if scrape is not None:
        for name in scrape.names:
            for prefix, engine in METRIC_PREFIXES.items():
                if name.startswith(prefix):
                    return engine
    if ollama_version:
        return ServerEngine.OLLAMA
    if owned_by:
        return OWNED_BY.get(owned_by.lower(), ServerEngine.OPENAI)
    return ServerEngine.OPENAI


# our field -> candidate sample names, first present wins. Counters are cumulative totals;
# histograms are read through their _sum and _count samples.
_VLLM = {
    "num_requests_running": ("vllm:num_requests_running",),
    "num_requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "requests_finished": ("vllm:request_success_total",),
    "num_drafts": ("vllm:spec_decode_num_drafts_total",),
    "num_draft_tokens": ("vllm:spec_decode_num_draft_tokens_total",),
    "num_accepted_tokens": ("vllm:spec_decode_num_accepted_tokens_total",),
    "ttft": ("vllm:time_to_first_token_seconds",),
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
}
_SGLANG = {
    "num_requests_running": ("sglang:num_running_reqs",),
    "num_requests_waiting": ("sglang:num_queue_reqs",),
    "kv_cache_usage": ("sglang:token_usage",),
    "prefix_cache_queries": ("sglang:prompt_tokens_total",),
    "prefix_cache_hits": ("sglang:cached_tokens_total",),
    "prompt_tokens": ("sglang:prompt_tokens_total",),
    "generation_tokens": ("sglang:generation_tokens_total",),
    "requests_finished": ("sglang:num_requests_total",),
    "spec_accept_length": ("sglang:spec_accept_length",),
    "ttft": ("sglang:time_to_first_token_seconds",),
    "itl": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    "e2e": ("sglang:e2e_request_latency_seconds",),
}
_TGI = {
    "num_requests_running": ("tgi_batch_current_size",),
    "num_requests_waiting": ("tgi_queue_size",),
    "prompt_tokens": ("tgi_request_input_length_sum",),
    "generation_tokens": ("tgi_request_generated_tokens_sum",),
    "requests_finished": ("tgi_request_success",),
    "e2e": ("tgi_request_duration",),
}
_LLAMACPP = {
    "num_requests_running": ("llamacpp:requests_processing",),
    "num_requests_waiting": ("llamacpp:requests_deferred",),
    "kv_cache_usage": ("llamacpp:kv_cache_usage_ratio",),
    "prompt_tokens": ("llamacpp:prompt_tokens_total",),
    "generation_tokens": ("llamacpp:tokens_predicted_total",),
}
METRIC_MAPS = {ServerEngine.VLLM: _VLLM, ServerEngine.SGLANG: _SGLANG, ServerEngine.TGI: _TGI,
               ServerEngine.LLAMACPP: _LLAMACPP}
PER_POSITION = {ServerEngine.VLLM: ("vllm:spec_decode_num_accepted_tokens_per_pos_total", "position")}


@dataclass(frozen=True)
class Histogram:
    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


@dataclass(frozen=True)
class ServerSnapshot:
    """One scrape under our names. None = the server does not expose it."""

    engine: ServerEngine
    taken_s: float
    num_requests_running: float | None = None
    num_requests_waiting: float | None = None
    kv_cache_usage: float | None = None  # fraction 0..1 of the KV cache in use
    prefix_cache_queries: float | None = None  # tokens looked up (counter)
    prefix_cache_hits: float | None = None  # tokens found (counter)
    prompt_tokens: float | None = None  # counter
    generation_tokens: float | None = None  # counter
    requests_finished: float | None = None  # counter
    num_drafts: float | None = None  # counter
    num_draft_tokens: float | None = None  # counter
    num_accepted_tokens: float | None = None  # counter
    accepted_per_position: tuple[float, ...] | None = None  # counters, position 0..k-1
    spec_accept_length: float | None = None  # a server's own gauge (SGLang)
    ttft: Histogram | None = None
    itl: Histogram | None = None
    e2e: Histogram | None = None


def snapshot(scrape: Scrape, engine: ServerEngine) -> ServerSnapshot:
    mapping = METRIC_MAPS.get(engine, {})
    values: dict[str, object] = {}
    for ours, names in mapping.items():
        for name in names:
            if ours in ("ttft", "itl", "e2e"):
                s, c = scrape.total(name + "_sum"), scrape.total(name + "_count")
                if s is not None and c is not None:
                    values[ours] = Histogram(sum=s, count=c)
                    break
            else:
                v = scrape.total(name)
                if v is not None:
                    values[ours] = v
                    break
    if engine in PER_POSITION:
        name, label = PER_POSITION[engine]
        per = scrape.by_label(name, label)
        if per and all(k.isdigit() for k in per):
            n = max(int(k) for k in per) + 1
            values["accepted_per_position"] = tuple(per.get(str(i), 0.0) for i in range(n))
    return ServerSnapshot(engine=engine, taken_s=scrape.taken_s, **values)


def _delta(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return b - a if b >= a else None  # a counter that went down: the server restarted


@dataclass(frozen=True)
class ServerInterval:
    """What happened between two snapshots, from counter deltas."""

    engine: ServerEngine
    interval_s: float
    prompt_tokens: float | None
    generation_tokens: float | None
    generation_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    requests_finished: float | None
    prefix_cache_hit_rate: float | None
    spec: SpecStats | None  # None when the server exposes no speculative counters
    ttft_mean_s: float | None  # mean of the server's TTFT histogram over the interval
    itl_mean_s: float | None
    e2e_mean_s: float | None


def _hist_delta(a: Histogram | None, b: Histogram | None) -> float | None:
    if a is None or b is None:
        return None
    c = b.count - a.count
    return (b.sum - a.sum) / c if c > 0 else None


def interval(prev: ServerSnapshot, cur: ServerSnapshot) -> ServerInterval:
    dt = cur.taken_s - prev.taken_s
    gen = _delta(prev.generation_tokens, cur.generation_tokens)
    prompt = _delta(prev.prompt_tokens, cur.prompt_tokens)
    q = _delta(prev.prefix_cache_queries, cur.prefix_cache_queries)
    h = _delta(prev.prefix_cache_hits, cur.prefix_cache_hits)
    spec = None
    drafts = _delta(prev.num_drafts, cur.num_drafts)
    drafted = _delta(prev.num_draft_tokens, cur.num_draft_tokens)
    accepted = _delta(prev.num_accepted_tokens, cur.num_accepted_tokens)
    if drafts is not None and drafted is not None and accepted is not None:
        per: tuple[int, ...] = ()
        if prev.accepted_per_position is not None and cur.accepted_per_position is not None:
            a = prev.accepted_per_position + (0.0,) * (len(cur.accepted_per_position) - len(prev.accepted_per_position))
            per = tuple(int(round(y - x)) for x, y in zip(a, cur.accepted_per_position))
        spec = SpecStats(num_drafts=int(round(drafts)), num_draft_tokens=int(round(drafted)),
                         num_accepted_tokens=int(round(accepted)), accepted_per_position=per,
                         drafted_per_position=(int(round(drafts)),) * len(per))
    return ServerInterval(
        engine=cur.engine,
        interval_s=dt,
        prompt_tokens=prompt,
        generation_tokens=gen,
        generation_tokens_per_s=gen / dt if gen is not None and dt > 0 else None,
        prompt_tokens_per_s=prompt / dt if prompt is not None and dt > 0 else None,
        requests_finished=_delta(prev.requests_finished, cur.requests_finished),
        prefix_cache_hit_rate=h / q if q and h is not None else None,
        spec=spec,
        ttft_mean_s=_hist_delta(prev.ttft, cur.ttft),
        itl_mean_s=_hist_delta(prev.itl, cur.itl),
        e2e_mean_s=_hist_delta(prev.e2e, cur.e2e),
    )


@dataclass(frozen=True)
class ResponseTimings:
    """Per-response timing fields some servers return beside the text."""

    prompt_tokens: int | None = None
    prompt_s: float | None = None
    generated_tokens: int | None = None
    generation_s: float | None = None
    num_draft_tokens: int | None = None
    num_accepted_tokens: int | None = None

    @property
    def generation_tokens_per_s(self) -> float | None:
        if self.generated_tokens is None or not self.generation_s:
            return None
        return self.generated_tokens / self.generation_s


def _num(d: dict, key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def llamacpp_timings(timings: object) -> ResponseTimings | None:
    """llama.cpp's `timings` object (milliseconds; draft_n / draft_n_accepted with a draft)."""
    if not isinstance(timings, dict):
        return None
    pm, gm = _num(timings, "prompt_ms"), _num(timings, "predicted_ms")
    return ResponseTimings(
        prompt_tokens=_int(_num(timings, "prompt_n")),
        prompt_s=None if pm is None else pm / 1000.0,
        generated_tokens=_int(_num(timings, "predicted_n")),
        generation_s=None if gm is None else gm / 1000.0,
        num_draft_tokens=_int(_num(timings, "draft_n")),
        num_accepted_tokens=_int(_num(timings, "draft_n_accepted")),
    )


def ollama_timings(body: object) -> ResponseTimings | None:
    """Ollama's native final response (/api/chat, /api/generate): counts and nanoseconds."""
    if not isinstance(body, dict) or "eval_count" not in body:
        return None
    pd, ed = _num(body, "prompt_eval_duration"), _num(body, "eval_duration")
    return ResponseTimings(
        prompt_tokens=_int(_num(body, "prompt_eval_count")),
        prompt_s=None if pd is None else pd / 1e9,
        generated_tokens=_int(_num(body, "eval_count")),
        generation_s=None if ed is None else ed / 1e9,
    )
