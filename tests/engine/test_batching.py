"""Continuous batching and prefix reuse: greedy outputs equal the unbatched reference, and a
seeded fuzz of random operations leaves no state behind."""

from __future__ import annotations

import random

import pytest

from engine.config import BatchingConfig, EngineConfig, GenerateRequest, KVCacheMode, ModelSpec
from engine.events import FinishReason
from engine.models import load_model
from tests.helpers.engine_utils import Collected, greedy, hf_greedy, pump, run_requests, started_engine

WORDS = "the quick brown fox to be or not question horse kingdom stage players dreams".split()


@pytest.fixture(scope="module")
def ref_model(tiny_llama_dir):
    return load_model(ModelSpec(str(tiny_llama_dir)))


def make_prompts(tok, n, seed):
    rng = random.Random(seed)
    return [tok.encode(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))) for _ in range(n)]


@pytest.mark.parametrize("kv", [KVCacheMode.ON, KVCacheMode.PREFIX])
def test_mixed_lengths_batched_equal_reference(tiny_llama_dir, ref_model, kv):
    tok = ref_model.tokenizer
    prompts = make_prompts(tok, 10, seed=1)
    lengths = [3, 17, 8, 25, 1, 12, 30, 5, 9, 20]
    expected = [hf_greedy(ref_model.model, p, n, tok.pad_token_id) for p, n in zip(prompts, lengths)]
    cfg = EngineConfig(kv_cache=kv, batching=BatchingConfig(max_batch_size=4, token_budget=24))
    engine, _ = started_engine(tiny_llama_dir, cfg)
    try:
        reqs = [GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(n, ignore_eos=True))
                for p, n in zip(prompts, lengths)]
        ids, c = run_requests(engine, reqs)
        assert [list(c.finished[i].token_ids) for i in ids] == expected
        assert max(s.batch_size for s in c.steps) == 4
    finally:
        engine.shutdown()


def test_prefix_reuse_serves_follow_up_turns_from_cache(tiny_llama_dir, ref_model):
    tok = ref_model.tokenizer
    engine, _ = started_engine(tiny_llama_dir, EngineConfig(kv_cache=KVCacheMode.PREFIX))
    try:
        msgs = [("user", "to be or not to be")]
        cached = []
        for turn in range(3):
            ids, c = run_requests(engine, [GenerateRequest(messages=tuple(msgs), sampling=greedy(6, ignore_eos=True))])
            fin = c.finished[ids[0]]
            cached.append(fin.stats.cached_prompt_tokens)
            # reference: the same prompt without any cache
            prompt = tok.encode(tok.apply_chat_template([{"role": r, "content": t} for r, t in msgs],
                                                        add_generation_prompt=True, tokenize=False),
                                add_special_tokens=False)
            assert list(fin.token_ids) == hf_greedy(ref_model.model, prompt, 6, tok.pad_token_id)
            msgs += [("assistant", fin.text), ("user", "the quick brown fox")]
        assert cached[0] == 0 and cached[1] > 5 and cached[2] > cached[1]
    finally:
        engine.shutdown()


def test_live_reconfiguration_loses_nothing(tiny_llama_dir, ref_model):
    tok = ref_model.tokenizer
    prompts = make_prompts(tok, 6, seed=3)
    expected = [hf_greedy(ref_model.model, p, 20, tok.pad_token_id) for p in prompts]
    engine, c = started_engine(tiny_llama_dir)
    try:
        ids = [engine.submit(GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(20, ignore_eos=True)))
               for p in prompts]
        configs = [
            EngineConfig(batching=BatchingConfig(enabled=False)),
            EngineConfig(batching=BatchingConfig(max_batch_size=3), kv_cache=KVCacheMode.OFF),
            EngineConfig(kv_cache=KVCacheMode.PREFIX, batching=BatchingConfig(max_batch_size=2)),
            EngineConfig(),
        ]
        for cfg in configs:
            n = sum(len(e.token_ids) for es in c.tokens.values() for e in es)
            pump(engine, c, lambda c: sum(len(e.token_ids) for es in c.tokens.values() for e in es) >= n + 6
                 or len(c.finished) == len(ids))
            engine.reconfigure(cfg)
        pump(engine, c, lambda c: all(i in c.finished for i in ids))
        assert [list(c.finished[i].token_ids) for i in ids] == expected
        assert all(c.terminal_counts[i] == 1 for i in ids)
        for i in ids:  # streamed tokens are exactly the final ones: nothing duplicated or lost
            assert [t for e in c.tokens[i] for t in e.token_ids] == list(c.finished[i].token_ids)
    finally:
        engine.shutdown()


def test_fuzz_random_operations(tiny_llama_dir, ref_model):
    """500+ seeded random operations: submit, abort, reconfigure, chat follow-ups."""
    tok = ref_model.tokenizer
    rng = random.Random(2026)
    prefix_bytes = 64 * 1024
    engine, c = started_engine(tiny_llama_dir, EngineConfig(prefix_cache_max_bytes=prefix_bytes))
    submitted: dict[str, tuple[list[int], int] | None] = {}
    aborted: set[str] = set()
    chats: list[list[tuple[str, str]]] = []
    ops = 0
    try:
        while ops < 520:
            op = rng.random()
            if op < 0.45:
                p = make_prompts(tok, 1, rng.randint(0, 10**6))[0]
                n = rng.randint(1, 12)
                rid = engine.submit(GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(n, ignore_eos=True)))
                submitted[rid] = (p, n)
            elif op < 0.6 and submitted:
                rid = rng.choice(list(submitted))
                engine.abort(rid)
                aborted.add(rid)
            elif op < 0.75:
                engine.reconfigure(EngineConfig(
                    kv_cache=rng.choice(list(KVCacheMode)),
                    batching=BatchingConfig(enabled=rng.random() < 0.7, max_batch_size=rng.randint(1, 6),
                                            token_budget=rng.choice([8, 32, 256])),
                    prefix_cache_max_bytes=prefix_bytes))
            elif op < 0.9:
                if chats and rng.random() < 0.6:
                    msgs = rng.choice(chats)
                    msgs += [("assistant", rng.choice(WORDS)), ("user", rng.choice(WORDS))]
                else:
                    msgs = [("user", " ".join(rng.choice(WORDS) for _ in range(4)))]
                    chats.append(msgs)
                rid = engine.submit(GenerateRequest(messages=tuple(msgs), sampling=greedy(rng.randint(1, 8), ignore_eos=True)))
                submitted[rid] = None
            else:
                # let the engine make progress
                target = len(c.finished) + 1
                pump(engine, c, lambda c: len(c.finished) >= min(target, len(submitted)))
            ops += 1
        pump(engine, c, lambda c: all(r in c.finished for r in submitted), timeout=300)
        assert all(c.terminal_counts[r] == 1 for r in submitted)
        completed = 0
        for rid, spec in submitted.items():
            fin = c.finished[rid]
            if fin.reason is FinishReason.CANCELLED:
                assert rid in aborted
                continue
            assert fin.reason is FinishReason.LENGTH, fin.error
            if spec is not None:
                p, n = spec
                assert list(fin.token_ids) == hf_greedy(ref_model.model, p, n, tok.pad_token_id)
                completed += 1
        assert completed > 50
        # afterwards: no request state left, and KV held is only what the prefix cache may keep
        engine.reconfigure(EngineConfig(kv_cache=KVCacheMode.PREFIX, prefix_cache_max_bytes=prefix_bytes))
        pump(engine, c, lambda c: c.applied and c.applied[-1].config_dict["kv_cache"] == "prefix")
        core = engine._core
        assert not core._reqs and not core.scheduler.has_work()
        assert core.kv.nbytes == 0
        assert core.prefix_cache.nbytes <= prefix_bytes
    finally:
        engine.shutdown()
