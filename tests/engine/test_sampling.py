"""The sampler's distribution against transformers' own warpers, and seeded determinism."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from engine.config import SamplingParams
from engine.sampling import filtered_probs, make_generator, sample


def hf_probs(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    warpers = LogitsProcessorList([TemperatureLogitsWarper(p.temperature)])
    if p.top_k:
        warpers.append(TopKLogitsWarper(p.top_k))
    if p.top_p < 1.0:
        warpers.append(TopPLogitsWarper(p.top_p))
    return warpers(None, logits.clone()).softmax(dim=-1)


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.9), (0.8, 20, 0.5), (1.0, 3, 0.95),
])
def test_filtered_probs_match_transformers_warpers(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 50, generator=g) * 3
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    ours = filtered_probs(logits, params)
    theirs = hf_probs(logits, params)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.equal(ours > 0, theirs > 0)  # the same tokens survive the filters


def test_greedy_is_argmax_and_seeds_repeat():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.9])
    assert sample(logits, SamplingParams(), make_generator(None, torch.device("cpu"))) == 1
    params = SamplingParams(temperature=1.0)
    a = [sample(logits, params, g) for g in [make_generator(5, torch.device("cpu"))] for _ in range(20)]
    b = [sample(logits, params, g) for g in [make_generator(5, torch.device("cpu"))] for _ in range(20)]
    assert a == b and len(set(a)) > 1
