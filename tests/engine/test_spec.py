"""Speculative decoding: greedy equivalence across combinations, the rejection sampler's
distribution, drafters, the advisor, and refusals."""

from __future__ import annotations

import itertools

import pytest
import torch

from engine.config import (
    BatchingConfig,
    EngineConfig,
    GenerateRequest,
    KVCacheMode,
    ModelSpec,
    SamplingParams,
    SpeculativeConfig,
    SpeculativeMode,
)
from engine.events import TokenOrigin
from engine.models import load_model
from engine.spec.advisor import advise, expected_speedup, next_k
from engine.spec.drafters import lookup
from engine.spec.verify import accept_greedy, accept_sampling
from tests.helpers.engine_utils import greedy, hf_greedy, pump, run_requests, started_engine, wait_finished

N_NEW = 28
PROMPTS = ["the quick brown fox", "to be or not to be that", "a horse", "all the world's a stage and all"]


@pytest.fixture(scope="module")
def pair_reference(tiny_pair_dirs):
    target, _ = tiny_pair_dirs
    loaded = load_model(ModelSpec(str(target)))
    tok = loaded.tokenizer
    prompts = [tok.encode(p) for p in PROMPTS]
    return prompts, [hf_greedy(loaded.model, p, N_NEW, tok.pad_token_id) for p in prompts]


COMBOS = list(itertools.product(
    [SpeculativeMode.DRAFT, SpeculativeMode.NGRAM],
    [KVCacheMode.ON, KVCacheMode.OFF, KVCacheMode.PREFIX],
    [True, False],  # batching
    [False, True],  # adaptive k
))


@pytest.mark.parametrize("mode,kv,batching,adaptive", COMBOS,
                         ids=[f"{m.value}-kv{k.value}-{'batch' if b else 'seq'}-{'adaptive' if a else 'k3'}"
                              for m, k, b, a in COMBOS])
def test_greedy_speculative_equals_target(tiny_pair_dirs, pair_reference, mode, kv, batching, adaptive):
    target, draft = tiny_pair_dirs
    prompts, expected = pair_reference
    cfg = EngineConfig(kv_cache=kv, batching=BatchingConfig(enabled=batching),
                       speculative=SpeculativeConfig(mode=mode, num_draft_tokens=3, adaptive=adaptive,
                                                     draft_model=str(draft)))
    engine, _ = started_engine(target, cfg)
    try:
        reqs = [GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(N_NEW, ignore_eos=True)) for p in prompts]
        ids, c = run_requests(engine, reqs)
        drafted = 0
        for rid, exp in zip(ids, expected):
            fin = c.finished[rid]
            assert list(fin.token_ids) == exp
            origins = [o for e in c.tokens[rid] for o in e.origins]
            assert len(origins) == len(exp)
            assert origins.count(TokenOrigin.DRAFT) == fin.stats.spec.num_accepted_tokens
            drafted += fin.stats.spec.num_draft_tokens
        assert drafted > 0
        assert not c.errors
    finally:
        engine.shutdown()


def test_partial_acceptance_is_exercised(tiny_pair_dirs, pair_reference):
    """The test pair must really reject some drafts, or the tests above prove little."""
    target, draft = tiny_pair_dirs
    prompts, _ = pair_reference
    cfg = EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT, num_draft_tokens=4,
                                                     draft_model=str(draft)))
    engine, _ = started_engine(target, cfg)
    try:
        ids, c = run_requests(engine, [GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(N_NEW, ignore_eos=True))
                                       for p in prompts])
        rates = [c.finished[i].stats.spec.acceptance_rate for i in ids]
        assert 0.05 < sum(rates) / len(rates) < 0.95
        steps_with_spec = [s for s in c.steps if s.spec.num_drafts]
        assert steps_with_spec and steps_with_spec[-1].spec_advice is not None
    finally:
        engine.shutdown()


def test_switching_speculation_mid_request_keeps_greedy_output(tiny_pair_dirs, pair_reference):
    target, draft = tiny_pair_dirs
    prompts, expected = pair_reference
    engine, c = started_engine(target)
    try:
        rid = engine.submit(GenerateRequest(prompt_token_ids=tuple(prompts[0]), sampling=greedy(N_NEW, ignore_eos=True)))
        configs = [
            EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT, num_draft_tokens=2, draft_model=str(draft))),
            EngineConfig(kv_cache=KVCacheMode.OFF, speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT, num_draft_tokens=5, draft_model=str(draft))),
            EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=3)),
            EngineConfig(),
        ]
        for cfg in configs:
            seen = sum(len(e.token_ids) for e in c.tokens[rid])
            pump(engine, c, lambda c: sum(len(e.token_ids) for e in c.tokens[rid]) >= seen + 3 or rid in c.finished)
            engine.reconfigure(cfg)
        wait_finished(engine, [rid], c)
        assert list(c.finished[rid].token_ids) == expected[0]
        assert not c.errors
    finally:
        engine.shutdown()


def test_draft_with_other_tokenizer_is_refused(tiny_pair_dirs, tmp_path):
    from tests.helpers.tiny_models import build_llama, train_tokenizer

    other = build_llama(tmp_path / "other", vocab_tok=train_tokenizer(tmp_path / "tok", vocab_size=300))
    target, _ = tiny_pair_dirs
    engine, c = started_engine(target)
    try:
        engine.reconfigure(EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT,
                                                                      draft_model=str(other))))
        pump(engine, c, lambda c: bool(c.errors))
        assert c.errors[-1].where == "config" and "tokenizer" in c.errors[-1].message
        assert engine.config.speculative.mode is SpeculativeMode.OFF
        ids, c2 = run_requests(engine, [GenerateRequest(prompt="the", sampling=greedy(3, ignore_eos=True))])
        assert len(c2.finished[ids[0]].token_ids) == 3
    finally:
        engine.shutdown()


def test_sampled_speculation_is_seeded_and_reproducible(tiny_pair_dirs):
    target, draft = tiny_pair_dirs
    cfg = EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT, num_draft_tokens=3,
                                                     draft_model=str(draft)))
    engine, _ = started_engine(target, cfg)
    try:
        s = SamplingParams(temperature=0.8, top_k=40, seed=7, max_new_tokens=20, ignore_eos=True)
        ids, c = run_requests(engine, [GenerateRequest(prompt="the", sampling=s) for _ in range(2)])
        assert c.finished[ids[0]].token_ids == c.finished[ids[1]].token_ids
    finally:
        engine.shutdown()


# ---------------------------------------------------------------- pure cores


def test_accept_greedy_exact_match():
    logits = torch.full((4, 10), -1.0)
    for i, t in enumerate([3, 5, 7, 9]):
        logits[i, t] = 1.0
    assert accept_greedy([3, 5, 7], logits) == [3, 5, 7, 9]
    assert accept_greedy([3, 4, 7], logits) == [3, 5]
    assert accept_greedy([1, 5, 7], logits) == [3]


def test_rejection_sampler_preserves_target_distribution():
    """Chi-square test on a 6-token vocabulary. With 20,000 draws and 5 degrees of freedom the
    statistic exceeds 20.5 with probability 0.001 under the null (false-alarm rate 0.1%);
    seeds are fixed, so the test is deterministic."""
    g = torch.Generator().manual_seed(1234)
    p = torch.tensor([[0.05, 0.4, 0.1, 0.25, 0.15, 0.05], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
    q = torch.tensor([[0.3, 0.1, 0.3, 0.1, 0.1, 0.1]])
    n = 20000
    counts = torch.zeros(6)
    for _ in range(n):
        x = int(torch.multinomial(q[0], 1, generator=g))
        first = accept_sampling([x], p, q, g)[0]
        counts[first] += 1
    expected = p[0] * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5, (counts, expected)



def test_rejection_sampler_accepts_with_probability_sum_of_min_p_q():
    """P(accept) = sum_x min(p(x), q(x)) for a correct sampler (Leviathan et al.); a sampler that
    always (or never) accepts the draft fails this at once."""
    g = torch.Generator().manual_seed(4321)
    p = torch.tensor([[0.05, 0.4, 0.1, 0.25, 0.15, 0.05], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
    q = torch.tensor([[0.3, 0.1, 0.3, 0.1, 0.1, 0.1]])
    n = 20000
    accepted = 0
    for _ in range(n):
        x = int(torch.multinomial(q[0], 1, generator=g))
        accepted += len(accept_sampling([x], p, q, g)) == 2  # the draft token and a bonus token
    expected = float(torch.minimum(p[0], q[0]).sum())  # 0.55
    sd = (expected * (1 - expected) / n) ** 0.5
    assert abs(accepted / n - expected) < 4 * sd, (accepted / n, expected)


def test_rejection_sampler_with_deterministic_drafter():
    g = torch.Generator().manual_seed(99)
    p = torch.tensor([[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    n = 12000
    counts = torch.zeros(3)
    for _ in range(n):
        counts[accept_sampling([2], p, None, g)[0]] += 1
    expected = p[0] * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 13.8  # 2 d.o.f., false-alarm rate 0.1%


def test_ngram_lookup():
    ids = [1, 2, 3, 4, 9, 1, 2, 3]
    assert lookup(ids, 2, 3, 1) == [4, 9]
    assert lookup([5, 6, 7], 3, 3, 1) == []
    assert lookup([1, 2, 1], 4, 3, 1) == [2, 1]
    # a repetitive tail: prefer the occurrence that still offers k tokens
    assert lookup([7, 7, 7, 7, 7, 7], 3, 2, 1) == [7, 7, 7]


def test_advisor_matches_closed_form_and_recommends():
    assert expected_speedup(0.0, 0.1, 4) == pytest.approx(1 / 1.4)
    assert expected_speedup(1.0, 0.0, 3) == pytest.approx(4.0)
    a = advise(0.8, 0.1)
    assert a.pays_off and 3 <= a.recommended_k <= 8
    assert a.best_speedup == max(a.speedup_by_k)
    assert not advise(0.1, 0.5).pays_off
    assert next_k(4, 4) == 6 and next_k(4, 2) == 3 and next_k(1, 0) == 1
