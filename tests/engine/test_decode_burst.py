"""Bursts of greedy decode steps in one native call (EngineCore._burst_length): the same tokens
as one step per schedule, token for token, on Llama, Qwen2 and Mistral; never past
max_new_tokens; an EOS inside a burst ends the row there and its cache still serves the next
turn; rows that sample, speculation and architectures without the native forward step one at
a time."""

from __future__ import annotations

import time

import pytest
import torch

from engine import events as ev
from engine.config import BatchingConfig, EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, SamplingParams, \
    SpeculativeConfig, SpeculativeMode
from engine.core import EngineCore
from engine.models import load_model

PROMPTS = ["to be or not to be", "a horse", "now is the winter of our discontent made glorious", "we"]


def _run(model, config: EngineConfig, requests: list[GenerateRequest], *, burst: int | None = None):
    """Every request to its end on an EngineCore stepped here; (finished by id, step stats)."""
    events: list[ev.EngineEvent] = []
    core = EngineCore(events.append, config, model)
    core.startup()
    if burst is not None:
        core.max_decode_burst = burst
    with torch.inference_mode():
        for r in requests:
            core.add_request(r, time.monotonic())
        while core.has_work():
            core.step()
    finished = {e.request_id: e for e in events if isinstance(e, ev.RequestFinished)}
    steps = [e.stats for e in events if isinstance(e, ev.StepCompleted)]
    assert all(f.error is None for f in finished.values()), [f.error for f in finished.values()]
    return finished, steps, core


def _greedy(prompts, n, **kw) -> list[GenerateRequest]:
    return [GenerateRequest(prompt=p, request_id=f"r{i}", sampling=SamplingParams(max_new_tokens=n, **kw))
            for i, p in enumerate(prompts)]


@pytest.mark.parametrize("max_batch", [1, 4])
def test_bursts_give_the_tokens_of_one_step_per_schedule(arch_dir, max_batch):
    loaded = load_model(ModelSpec(str(arch_dir)))
    config = EngineConfig(batching=BatchingConfig(max_batch_size=max_batch))
    # uneven lengths: rows finish at different steps, the batch refills and holds holes
    requests = [GenerateRequest(prompt=p, request_id=f"r{i}",
                                sampling=SamplingParams(max_new_tokens=n, ignore_eos=True))
                for i, (p, n) in enumerate(zip(PROMPTS * 2, [23, 9, 31, 14, 5, 27, 18, 11]))]
    one, one_steps, _ = _run(loaded, config, requests, burst=1)
    many, many_steps, _ = _run(loaded, config, requests)
    assert all(s.decode_steps == 1 for s in one_steps)
    assert max(s.decode_steps for s in many_steps) > 1  # it did burst
    assert len(many_steps) < len(one_steps)
    assert {r: f.token_ids for r, f in many.items()} == {r: f.token_ids for r, f in one.items()}
    for r in requests:  # never past max_new_tokens
        assert len(many[r.request_id].token_ids) == r.sampling.max_new_tokens


def _warm_then(loaded, config: EngineConfig, request: GenerateRequest):
    """A warm-up request first (it times a decode step, so the next request's first decode
    schedule can be a burst), then `request`; (its finish, its steps, the core)."""
    events: list[ev.EngineEvent] = []
    core = EngineCore(events.append, config, loaded)
    core.startup()
    with torch.inference_mode():
        core.add_request(GenerateRequest(prompt=PROMPTS[1], request_id="warm",
                                         sampling=SamplingParams(max_new_tokens=4, ignore_eos=True)), 0.0)
        while core.has_work():
            core.step()
        events.clear()
        core.add_request(request, time.monotonic())
        while core.has_work():
            core.step()
    done = next(e for e in events if isinstance(e, ev.RequestFinished))
    assert done.error is None, done.error
    return done, [e.stats for e in events if isinstance(e, ev.StepCompleted)], core


def test_an_eos_inside_a_burst_ends_the_row_and_its_cache_serves_the_next_turn():
    from app import paths

    loaded = load_model(ModelSpec(str(paths.bundled_target_dir())))  # a trained model: varied text
    config = EngineConfig(kv_cache=KVCacheMode.PREFIX, batching=BatchingConfig(max_batch_size=1))
    prompt = "ROMEO:\nWhat light through yonder window"
    free, _, _ = _run(loaded, config, _greedy([prompt], 20, ignore_eos=True), burst=1)
    out = list(free["r0"].token_ids)
    eos_ids = {loaded.tokenizer.eos_token_id, loaded.model.generation_config.eos_token_id}
    assert not eos_ids & set(out)  # (else the model's own EOS cuts first)
    # the first output token unlike the first made the model's EOS: it lies inside the first
    # burst (outputs 1..8), which computes past it
    cut = next(i for i, t in enumerate(out) if t != out[0]) + 1
    assert cut <= 8, out
    before = loaded.model.generation_config.eos_token_id
    loaded.model.generation_config.eos_token_id = out[cut - 1]
    try:
        done, steps, core = _warm_then(loaded, config, _greedy([prompt], 20)[0])
        assert steps[1].decode_steps > 1  # the schedule after the prefill was a burst
        assert list(done.token_ids) == out[:cut]
        assert done.reason is ev.FinishReason.STOP
        # the finished row went to the prefix cache at its true length: the next turn hits it
        tokens = tuple(loaded.tokenizer.encode(prompt)) + tuple(out[:cut])
        hit = core.prefix_cache.lookup(tokens + (5,), max_tokens=len(tokens))
        assert hit is not None and hit.num_tokens == len(tokens)
    finally:
        loaded.model.generation_config.eos_token_id = before


def test_a_stop_string_inside_a_burst_ends_the_row_at_its_token(tiny_llama_dir):
    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    config = EngineConfig(batching=BatchingConfig(max_batch_size=1))
    free, _, _ = _run(loaded, config, _greedy(PROMPTS[:1], 20, ignore_eos=True), burst=1)
    text = free["r0"].text
    stop = text[: max(1, len(text) // 20 * 3)]  # completed by the third token or so
    one, _, _ = _run(loaded, config, _greedy(PROMPTS[:1], 20, stop=(stop,)), burst=1)
    done, steps, _ = _warm_then(loaded, config, _greedy(PROMPTS[:1], 20, stop=(stop,))[0])
    assert steps[1].decode_steps > 1
    assert done.reason is ev.FinishReason.STOP and 1 < len(done.token_ids) < 8
    assert done.token_ids == one["r0"].token_ids and done.text == one["r0"].text


def test_rows_that_sample_and_speculation_step_one_at_a_time(tiny_llama_dir):
    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    sampled = [GenerateRequest(prompt=p, request_id=f"r{i}",
                               sampling=SamplingParams(max_new_tokens=12, temperature=0.8, seed=i, ignore_eos=True))
               for i, p in enumerate(PROMPTS)]
    _, steps, _ = _run(loaded, EngineConfig(batching=BatchingConfig(max_batch_size=4)), sampled)
    assert all(s.decode_steps == 1 for s in steps)
    spec = EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=3))
    _, steps, _ = _run(loaded, spec, _greedy(PROMPTS, 12, ignore_eos=True))
    assert all(s.decode_steps == 1 for s in steps)


def test_decode_bursts_switched_off_step_one_at_a_time(tiny_llama_dir):
    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    off = EngineConfig(batching=BatchingConfig(decode_bursts=False))
    assert "no bursts" in off.describe() and "no bursts" not in EngineConfig().describe()
    assert EngineConfig.from_dict(off.to_dict()) == off
    with pytest.raises(ValueError, match="decode_bursts"):
        BatchingConfig(decode_bursts="yes")
    done, steps, _ = _run(loaded, off, _greedy(PROMPTS, 20, ignore_eos=True))
    assert all(s.decode_steps == 1 for s in steps) and len(steps) >= 20
    on, _, _ = _run(loaded, EngineConfig(), _greedy(PROMPTS, 20, ignore_eos=True))
    assert {r: f.token_ids for r, f in on.items()} == {r: f.token_ids for r, f in done.items()}


def test_architectures_without_the_native_forward_step_one_at_a_time(tiny_gpt2_dir):
    loaded = load_model(ModelSpec(str(tiny_gpt2_dir)))
    done, steps, _ = _run(loaded, EngineConfig(), _greedy(PROMPTS[:2], 10, ignore_eos=True))
    assert all(s.decode_steps == 1 for s in steps)
    assert all(len(f.token_ids) == 10 for f in done.values())


def test_a_burst_keeps_to_its_time_budget_and_to_max_new_tokens(tiny_llama_dir, monkeypatch):
    import engine.core as core_mod

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    core = EngineCore(lambda e: None, EngineConfig(), loaded)
    core.startup()
    with torch.inference_mode():
        core.add_request(_greedy(PROMPTS[:1], 11, ignore_eos=True)[0], time.monotonic())
        core.step()  # the prefill
        core.step()  # an ordinary decode step: it times one
        assert core._decode_s[1] > 0
        core._decode_s[1] = 0.001
        monkeypatch.setattr(core_mod, "DECODE_BURST_BUDGET_S", 0.0035)
        assert core._burst_length(core.scheduler.schedule(), {}) == 3
        monkeypatch.setattr(core_mod, "DECODE_BURST_BUDGET_S", 1.0)
        assert core._burst_length(core.scheduler.schedule(), {}) == core_mod.MAX_DECODE_BURST
        core.step()  # a burst of 8: outputs 3..10 of 11
        assert core._burst_length(core.scheduler.schedule(), {}) == 1  # one output left: no burst
        core.max_decode_burst = 1
        assert core._burst_length(core.scheduler.schedule(), {}) == 1
