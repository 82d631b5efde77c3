"""Quality probes for quantisation: perplexity on held-out text, greedy agreement."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def perplexity(model: torch.nn.Module, token_ids: list[int], window: int = 256) -> float:
    """exp(mean token NLL) over non-overlapping windows of the text. On a CPU it runs on one
    torch thread: it is called from the bench's and tune's own thread, and a parallel region
    run there leaves an OpenMP team behind that slowed the engine thread's later steps (the
    bench's speculative suite, after the quantisation suite's perplexities: 360 -> 211 tok/s)."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        return _perplexity(model, token_ids, window, device)
    from engine.machine import one_torch_thread

    with one_torch_thread():
        return _perplexity(model, token_ids, window, device)


@dataclass(frozen=True)
class LevelQuality:
    perplexity: float
    skipped_layers: int  # layers the quantisation left in full precision


def level_quality(spec, level, token_ids: list[int]) -> LevelQuality:
    """Perplexity of the model loaded (and quantised) at `level`, for the bench and tune, whose
    own thread calls it. Loading and measuring run on one torch thread: quantising with two on
    that thread left an OpenMP team behind, and every later engine step ran at half speed (tune's
    nf4 + draft k=2 point: 418 tok/s after the nf4 load, 1250 without it)."""
    from engine.machine import one_torch_thread
    from engine.models import load_model

    with one_torch_thread():
        probe = load_model(spec, level)
        try:
            return LevelQuality(perplexity(probe.model, token_ids), len(probe.skipped_modules))
        finally:
            del probe


@torch.inference_mode()
def _perplexity(model: torch.nn.Module, token_ids: list[int], window: int, device: torch.device) -> float:
    total_nll, total = 0.0, 0
    for start in range(0, len(token_ids) - 1, window):
        chunk = token_ids[start: start + window + 1]
        if len(chunk) < 2:
            break
        ids = torch.tensor([chunk], device=device)
        logits = model(input_ids=ids[:, :-1]).logits.float()  # [1, T, vocab]
        nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum")
        total_nll += float(nll)
        total += len(chunk) - 1
    return math.exp(total_nll / max(total, 1))


@dataclass(frozen=True)
class Agreement:
    share: float  # identical tokens at the same positions / reference tokens
    first_divergence: int | None  # index of the first differing token, None when identical


def agreement(reference: list[int], other: list[int]) -> Agreement:
    n = len(reference)
    same = sum(1 for a, b in zip(reference, other) if a == b)
    first = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b), None)
    if first is None and len(other) != n:
        first = min(len(other), n)
    return Agreement(same / n if n else 1.0, first)
