"""One streamed request over the openai SDK: build it, read its chunks, derive its stats.

Token counts per chunk are exact where the server says which tokens a chunk carries (vLLM's
`return_token_ids`); elsewhere each chunk counts as one token and the last emission absorbs the
difference to the server's usage figure, so totals, TPOT and tokens/s stay exact and ITL is per
streamed chunk (as vLLM's own benchmark measures it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Callable

from engine.config import GenerateRequest
from engine.metrics import RequestStats, SpecStats, request_stats
from engine.events import now_s
from engine.remote.server_stats import ResponseTimings, ServerEngine, llamacpp_timings

log = logging.getLogger(__name__)

# engines that take vLLM's extra sampling fields (top_k, ignore_eos) in an OpenAI request;
# others may refuse unknown fields (transformers serve answers HTTP 422)
EXTRA_SAMPLING_OK = frozenset({ServerEngine.VLLM, ServerEngine.SGLANG, ServerEngine.LLAMACPP})


@dataclass
class StreamResult:
    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    exact_counts: bool = True
    text: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    usage: object = None
    finish: str | None = None
    timings: ResponseTimings | None = None
    error: str | None = None


def open_stream(client, request: GenerateRequest, model: str, engine: ServerEngine):
    sp = request.sampling
    kwargs: dict = dict(model=model, max_tokens=sp.max_new_tokens, temperature=sp.temperature,
                        top_p=sp.top_p, stream=True, stream_options={"include_usage": True})
    if sp.seed is not None:
        kwargs["seed"] = sp.seed
    if sp.stop:
        kwargs["stop"] = list(sp.stop)
    extra: dict = {}
    if engine in EXTRA_SAMPLING_OK:
        if sp.top_k > 0:
            extra["top_k"] = sp.top_k
        if sp.ignore_eos:
            extra["ignore_eos"] = True
    elif sp.top_k > 0 or sp.ignore_eos:
        log.info("top_k / ignore_eos not sent to a %s server (not OpenAI fields)", engine.value)
    if engine is ServerEngine.VLLM:
        extra["return_token_ids"] = True  # exact tokens per chunk (speculative chunks carry several)
    if extra:
        kwargs["extra_body"] = extra
    if request.messages is not None:
        msgs = [{"role": r, "content": c} for r, c in request.messages]
        return client.chat.completions.create(messages=msgs, **kwargs)
    prompt = request.prompt if request.prompt is not None else list(request.prompt_token_ids or ())
    return client.completions.create(prompt=prompt, **kwargs)


def _token_ids(choice) -> list[int] | None:
    extra = choice.model_extra or {}
    tok = extra.get("token_ids")
    if isinstance(tok, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in tok):
        return tok
    return None


def read_stream(stream, got: StreamResult, emit: Callable[[str, list[int] | None, float], None],
                cancelled: threading.Event) -> None:
    """Chunks into `got`, one emit() per chunk that carries output. Raises what the stream raises."""
    for chunk in stream:
        if cancelled.is_set():
            return
        if getattr(chunk, "usage", None) is not None:
            got.usage = chunk.usage
        extra = chunk.model_extra or {}
        if "timings" in extra:
            got.timings = llamacpp_timings(extra["timings"])
        for choice in chunk.choices or ():
            delta = getattr(choice, "delta", None)
            piece = getattr(delta, "content", None) if delta is not None else getattr(choice, "text", None)
            if piece is not None and not isinstance(piece, str):
                raise TypeError(f"chunk text is a {type(piece).__name__}, not a string")
            piece = piece or ""
            tok = _token_ids(choice)
            if piece or tok:
                t = now_s()
                got.exact_counts = got.exact_counts and tok is not None
                got.times.append(t)
                got.counts.append(len(tok) if tok is not None else 1)
                got.text.append(piece)
                got.ids.extend(tok or ())
                emit(piece, tok, t)
            if choice.finish_reason:
                got.finish = str(choice.finish_reason)


def fit_counts(counts: list[int], total: int) -> list[int]:
    """Chunk counts (1 per chunk, a guess) made to sum to the server's usage figure."""
    if not counts:
        return counts
    diff = total - sum(counts)
    if diff >= 0:
        return counts[:-1] + [counts[-1] + diff]
    return [1 if i < total else 0 for i in range(len(counts))]


def remote_request_stats(request: GenerateRequest, submitted_s: float, got: StreamResult,
                         finished_s: float) -> RequestStats:
    """The local engine's request_stats() over the client-side timeline; what the server does not
    report (prompt tokens without usage, cached tokens, prefill speed) stays None."""
    usage = got.usage
    prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
    if prompt is None and request.prompt_token_ids is not None:
        prompt = len(request.prompt_token_ids)
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    timings = got.timings
    spec = SpecStats()
    if timings is not None and timings.num_draft_tokens is not None:
        spec = SpecStats(num_draft_tokens=timings.num_draft_tokens,
                         num_accepted_tokens=timings.num_accepted_tokens or 0)
    stats = request_stats(prompt_tokens=prompt or 0, cached_prompt_tokens=cached or 0,
                          submitted_s=submitted_s, emission_times_s=got.times, emission_counts=got.counts,
                          finished_s=finished_s, prefill_time_s=None, spec=spec)
    prefill_tps = None
    if timings is not None and timings.prompt_tokens and timings.prompt_s:
        prefill_tps = timings.prompt_tokens / timings.prompt_s
    return replace(stats, prompt_tokens=prompt, cached_prompt_tokens=cached, prefill_tokens_per_s=prefill_tps)


def close_stream(stream) -> None:
    try:
        stream.close()
    except Exception as exc:  # noqa: BLE001 - closing a broken stream may raise; it is closed either way
        log.debug("closing stream: %s", exc)
