"""The engine's own decoding loop against transformers' generate(), and its lifecycle."""

from __future__ import annotations

import pytest

from engine.config import EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, SamplingParams
from engine.events import FinishReason, TokenOrigin
from engine.models import load_model
from tests.helpers.engine_utils import (
    Collected,
    greedy,
    hf_greedy,
    pump,
    run_requests,
    started_engine,
    wait_finished,
)

PROMPTS = ["the quick brown fox", "to be or not to be that is the question", "a horse", "we are such stuff as"]
N_NEW = 24


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model_dir(request, tiny_llama_dir, tiny_gpt2_dir):
    return tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir


@pytest.fixture(scope="module")
def reference(model_dir):
    loaded = load_model(ModelSpec(str(model_dir)))
    tok = loaded.tokenizer
    prompts = [tok.encode(p) for p in PROMPTS]
    return prompts, [hf_greedy(loaded.model, p, N_NEW, tok.pad_token_id) for p in prompts]


@pytest.mark.parametrize("kv", [KVCacheMode.ON, KVCacheMode.OFF])
@pytest.mark.parametrize("batching", [False, True])
def test_greedy_matches_hf_generate(model_dir, reference, kv, batching):
    prompts, expected = reference
    config = EngineConfig(kv_cache=kv).with_(batching=EngineConfig().batching.__class__(enabled=batching))
    engine, _ = started_engine(model_dir, config)
    try:
        reqs = [GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(N_NEW, ignore_eos=True)) for p in prompts]
        ids, c = run_requests(engine, reqs)
        for rid, exp in zip(ids, expected):
            fin = c.finished[rid]
            assert fin.reason is FinishReason.LENGTH
            assert list(fin.token_ids) == exp
            streamed = [t for e in c.tokens[rid] for t in e.token_ids]
            assert streamed == exp
            assert all(o is TokenOrigin.TARGET for e in c.tokens[rid] for o in e.origins)
    finally:
        assert engine.shutdown(2.0)


def test_kv_toggled_mid_request_still_matches(model_dir, reference):
    prompts, _ = reference
    # long enough to still be streaming after five switches: a tiny model's greedy decode runs
    # in bursts of several steps (engine.core._burst_length), ~1 ms for 8 tokens
    n_new = 160
    loaded = load_model(ModelSpec(str(model_dir)))
    expected = hf_greedy(loaded.model, prompts[1], n_new, loaded.tokenizer.pad_token_id)
    engine, c = started_engine(model_dir)
    try:
        rid = engine.submit(GenerateRequest(prompt_token_ids=tuple(prompts[1]), sampling=greedy(n_new, ignore_eos=True)))
        modes = [KVCacheMode.OFF, KVCacheMode.ON, KVCacheMode.PREFIX, KVCacheMode.OFF, KVCacheMode.ON]
        seen = 0
        for mode in modes:
            # switch after a few more tokens have streamed
            target = seen + 4
            pump(engine, c, lambda c: sum(len(e.token_ids) for e in c.tokens[rid]) >= target or rid in c.finished)
            seen = sum(len(e.token_ids) for e in c.tokens[rid])
            engine.reconfigure(EngineConfig(kv_cache=mode))
        wait_finished(engine, [rid], c)
        assert list(c.finished[rid].token_ids) == expected
        assert len(c.applied) == len(modes)
    finally:
        engine.shutdown()


def test_text_and_token_counts_agree_with_tokenizer(tiny_llama_dir):
    engine, _ = started_engine(tiny_llama_dir)
    tok = load_model(ModelSpec(str(tiny_llama_dir))).tokenizer
    try:
        ids, c = run_requests(engine, [GenerateRequest(prompt="the quick brown", sampling=greedy(16, ignore_eos=True))])
        fin = c.finished[ids[0]]
        assert fin.stats.prompt_tokens == len(tok.encode("the quick brown"))
        assert fin.stats.completion_tokens == len(fin.token_ids) == 16
        assert "".join(e.text for e in c.tokens[ids[0]]) == fin.text
        assert fin.text == tok.decode(list(fin.token_ids), skip_special_tokens=True)
    finally:
        engine.shutdown()


def test_stop_string_cuts_text_and_is_never_streamed(tiny_llama_dir):
    engine, _ = started_engine(tiny_llama_dir)
    try:
        ids, c = run_requests(engine, [GenerateRequest(prompt="the quick", sampling=greedy(30, ignore_eos=True))])
        full = c.finished[ids[0]].text
        assert len(full) > 6
        stop = full[4:7]  # a string the greedy continuation is known to produce
        ids2, c2 = run_requests(engine, [GenerateRequest(prompt="the quick",
                                                         sampling=greedy(30, ignore_eos=True, stop=(stop,)))])
        fin = c2.finished[ids2[0]]
        assert fin.reason is FinishReason.STOP
        assert fin.text == full[: full.find(stop)]
        assert "".join(e.text for e in c2.tokens[ids2[0]]) == fin.text
    finally:
        engine.shutdown()


def test_eos_stops_generation(tiny_llama_dir):
    """Force EOS by choosing, as EOS, the token greedy decoding produces third."""
    engine, _ = started_engine(tiny_llama_dir)
    try:
        ids, c = run_requests(engine, [GenerateRequest(prompt="a horse", sampling=greedy(10, ignore_eos=True))])
        produced = list(c.finished[ids[0]].token_ids)
        engine.shutdown()
        from engine.engine import Engine

        engine = Engine(str(tiny_llama_dir)).start()
        c2 = Collected()
        pump(engine, c2, lambda c: bool(c.loaded))
        engine._core.loaded.tokenizer.eos_token_id = produced[2]  # test-only hook on the engine thread's state
        engine._core.loaded.model.generation_config.eos_token_id = produced[2]
        rid = engine.submit(GenerateRequest(prompt="a horse", sampling=greedy(10)))
        wait_finished(engine, [rid], c2)
        fin = c2.finished[rid]
        assert fin.reason is FinishReason.STOP
        assert list(fin.token_ids) == produced[: produced.index(produced[2]) + 1]
    finally:
        engine.shutdown()


def test_abort_ends_request_once_and_engine_serves_next(tiny_llama_dir):
    engine, c = started_engine(tiny_llama_dir)
    try:
        rid = engine.submit(GenerateRequest(prompt="the", sampling=greedy(400, ignore_eos=True)))
        pump(engine, c, lambda c: len(c.tokens[rid]) >= 3)
        engine.abort(rid)
        wait_finished(engine, [rid], c)
        assert c.finished[rid].reason is FinishReason.CANCELLED
        assert 3 <= c.finished[rid].stats.completion_tokens < 400
        engine.abort(rid)  # aborting twice is harmless
        ids, c2 = run_requests(engine, [GenerateRequest(prompt="the", sampling=greedy(5, ignore_eos=True))])
        assert c2.finished[ids[0]].reason is FinishReason.LENGTH
        assert c.terminal_counts[rid] == 1
    finally:
        engine.shutdown()


def test_shutdown_cancels_in_flight_and_joins_quickly(tiny_llama_dir):
    engine, c = started_engine(tiny_llama_dir)
    ids = [engine.submit(GenerateRequest(prompt="the", sampling=greedy(5000, ignore_eos=True))) for _ in range(3)]
    pump(engine, c, lambda c: all(len(c.tokens[i]) >= 2 for i in ids[:1]))
    assert engine.shutdown(2.0)
    while not engine.events.empty():
        c.record(engine.events.get_nowait())
    assert {c.finished[i].reason for i in ids} == {FinishReason.CANCELLED}
    assert all(c.terminal_counts[i] == 1 for i in ids)


def test_sampling_is_reproducible_with_a_seed(tiny_llama_dir):
    engine, _ = started_engine(tiny_llama_dir)
    try:
        s = SamplingParams(temperature=1.0, top_k=20, top_p=0.9, seed=1234, max_new_tokens=20, ignore_eos=True)
        ids, c = run_requests(engine, [GenerateRequest(prompt="the", sampling=s) for _ in range(2)])
        other = SamplingParams(temperature=1.0, top_k=20, top_p=0.9, seed=99, max_new_tokens=20, ignore_eos=True)
        ids2, c2 = run_requests(engine, [GenerateRequest(prompt="the", sampling=other)])
        a, b = (c.finished[i].token_ids for i in ids)
        assert a == b
        assert c2.finished[ids2[0]].token_ids != a
    finally:
        engine.shutdown()


def test_chat_messages_use_the_tokenizer_template(tiny_llama_dir):
    engine, _ = started_engine(tiny_llama_dir)
    tok = load_model(ModelSpec(str(tiny_llama_dir))).tokenizer
    try:
        msgs = (("user", "to be or not"),)
        ids, c = run_requests(engine, [GenerateRequest(messages=msgs, sampling=greedy(4, ignore_eos=True))])
        expected = tok.apply_chat_template([{"role": "user", "content": "to be or not"}],
                                           add_generation_prompt=True, tokenize=False)
        assert c.finished[ids[0]].stats.prompt_tokens == len(tok.encode(expected, add_special_tokens=False))
    finally:
        engine.shutdown()
