"""Hostile input and faults: one bad request ends alone with one clear error; nothing else is hurt."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest

from engine import events as ev
from engine.config import (
    EngineConfig,
    GenerateRequest,
    ModelSpec,
    Quantisation,
    SamplingParams,
    SpeculativeConfig,
    SpeculativeMode,
)
from engine.engine import Engine, EngineClosed
from engine.models import ModelLoadError, load_model
from tests.helpers.engine_utils import Collected, greedy, pump, wait_finished, wait_loaded


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    eng = Engine(ModelSpec(str(tiny_llama_dir))).start()
    wait_loaded(eng)
    yield eng
    assert eng.shutdown(10.0)


def _run(engine: Engine, requests: list[GenerateRequest]) -> tuple[list[str], Collected]:
    ids = [engine.submit(r) for r in requests]
    return ids, wait_finished(engine, ids)


def _reference(engine: Engine, prompt: str, n: int) -> tuple[int, ...]:
    ids, c = _run(engine, [GenerateRequest(prompt=prompt, sampling=greedy(n, ignore_eos=True))])
    return c.finished[ids[0]].token_ids


# ---------------------------------------------------------------- validation at the edge
@pytest.mark.parametrize("fields, needle", [
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": 1e-40}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": float("nan")}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_k": -3}, "top_k"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -1}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"stop": ("",)}, "stop"),
    ({"stop": (3,)}, "stop"),
])
def test_bad_sampling_values_are_refused_with_their_name(fields, needle):
    with pytest.raises(ValueError, match=needle):
        SamplingParams(**fields)


def test_one_stop_string_is_not_split_into_characters():
    assert SamplingParams(stop="the end").stop == ("the end",)


@pytest.mark.parametrize("messages, needle", [
    ((("user", None),), "content"),
    (((None, "hi"),), "role"),
    ((("user",),), "pair"),
    ((), "empty"),
    ("user: hi", "pairs"),
])
def test_bad_messages_are_refused(messages, needle):
    with pytest.raises(ValueError, match=needle):
        GenerateRequest(messages=messages)


def test_messages_as_mappings_are_read_as_role_and_content():
    req = GenerateRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert req.messages == (("system", "be brief"), ("user", "hi"))


def test_config_types_are_checked():
    with pytest.raises(ValueError):
        EngineConfig(quantisation="nf4")
    with pytest.raises(ValueError):
        SpeculativeConfig(num_draft_tokens=0)


def test_every_config_field_round_trips():
    cfg = EngineConfig(
        speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=6, adaptive=True,
                                      draft_model="somewhere", ngram_max=5, ngram_min=2),
        quantisation=Quantisation.NF4, prefix_cache_max_bytes=12345,
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert EngineConfig.from_dict(data) == cfg
    assert data["speculative"]["ngram_max"] == 5 and data["prefix_cache_max_bytes"] == 12345
    with pytest.raises(ValueError, match="unknown"):
        EngineConfig.from_dict({"kv_cache": "on", "surprise": 1})


# ---------------------------------------------------------------- the engine keeps bad requests apart
def test_out_of_range_token_ids_fail_alone(engine):
    ref = _reference(engine, "to be or not", 12)
    good = GenerateRequest(prompt="to be or not", sampling=greedy(12, ignore_eos=True))
    bad = GenerateRequest(prompt_token_ids=(5, 10**6, 7), sampling=greedy(4))
    ids, c = _run(engine, [good, bad, good])
    assert c.finished[ids[1]].reason is ev.FinishReason.ERROR
    assert "vocabulary" in c.finished[ids[1]].error
    for rid in (ids[0], ids[2]):
        assert c.finished[rid].reason is ev.FinishReason.LENGTH
        assert c.finished[rid].token_ids == ref
    assert all(n == 1 for n in c.terminal_counts.values())


def test_broken_chat_templates_fail_alone(tiny_llama_dir, tmp_path):
    for template in ("{{ raise_exception('no system role') }}", "{% for m in messages %}{{ m.content "):
        d = tmp_path / f"t{len(template)}"
        shutil.copytree(tiny_llama_dir, d)
        cfg_path = d / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = template
        cfg_path.write_text(json.dumps(cfg))
        (d / "chat_template.jinja").unlink(missing_ok=True)
        eng = Engine(ModelSpec(str(d))).start()
        try:
            wait_loaded(eng)
            ids, c = _run(eng, [GenerateRequest(messages=(("user", "hi"),), sampling=greedy(4)),
                                GenerateRequest(prompt="to be", sampling=greedy(4, ignore_eos=True))])
            assert c.finished[ids[0]].reason is ev.FinishReason.ERROR
            assert "could not build the prompt" in c.finished[ids[0]].error
            assert c.finished[ids[1]].reason is ev.FinishReason.LENGTH
        finally:
            assert eng.shutdown(10.0)


def test_duplicate_request_id_is_refused_until_the_first_ends(engine):
    rid = engine.submit(GenerateRequest(prompt="a horse", sampling=greedy(6), request_id="mine"))
    with pytest.raises(ValueError, match="already in use"):
        engine.submit(GenerateRequest(prompt="a horse", sampling=greedy(6), request_id="mine"))
    c = wait_finished(engine, [rid])
    assert c.terminal_counts["mine"] == 1
    again = engine.submit(GenerateRequest(prompt="a horse", sampling=greedy(6), request_id="mine"))
    assert wait_finished(engine, [again]).finished["mine"].reason is not ev.FinishReason.ERROR


def test_bad_reconfigure_is_refused_at_the_call(engine):
    with pytest.raises(TypeError):
        engine.reconfigure("kv off")  # type: ignore[arg-type]


def test_a_step_fault_fails_only_the_request_that_caused_it(engine, monkeypatch):
    """Fault injection beside the real model: its forward raises whenever one row is in it."""
    ref = _reference(engine, "now is the winter", 10)
    runner = engine._core.runner
    real = runner.step_cached

    def faulty(rows, kv):
        if any(r.row_id == "poison" for r in rows):
            raise RuntimeError("injected fault")
        return real(rows, kv=kv)

    monkeypatch.setattr(runner, "step_cached", faulty)
    good = [GenerateRequest(prompt="now is the winter", sampling=greedy(10, ignore_eos=True)) for _ in range(3)]
    ids = [engine.submit(good[0]),
           engine.submit(GenerateRequest(prompt="now is the winter", sampling=greedy(10), request_id="poison")),
           engine.submit(good[1]), engine.submit(good[2])]
    c = wait_finished(engine, ids)
    assert c.finished["poison"].reason is ev.FinishReason.ERROR and "injected fault" in c.finished["poison"].error
    for rid in ids[0:1] + ids[2:]:
        assert c.finished[rid].reason is ev.FinishReason.LENGTH, c.finished[rid].error
        assert c.finished[rid].token_ids == ref
    assert all(n == 1 for n in c.terminal_counts.values())
    monkeypatch.undo()
    # batching is back once the culprit is gone
    ids, c = _run(engine, [GenerateRequest(prompt="to be", sampling=greedy(8, ignore_eos=True)) for _ in range(3)])
    assert max(s.batch_size for s in c.steps) > 1


def test_submit_after_shutdown_raises_instead_of_never_answering(tiny_llama_dir):
    eng = Engine(ModelSpec(str(tiny_llama_dir))).start()
    wait_loaded(eng)
    assert eng.shutdown(10.0)
    with pytest.raises(EngineClosed):
        eng.submit(GenerateRequest(prompt="hello", sampling=greedy(4)))


def test_requests_queued_behind_shutdown_get_their_terminal_event(tiny_llama_dir):
    eng = Engine(ModelSpec(str(tiny_llama_dir))).start()
    wait_loaded(eng)
    ids = [eng.submit(GenerateRequest(prompt="to be", sampling=greedy(400, ignore_eos=True))) for _ in range(6)]
    assert eng.shutdown(10.0)
    c = Collected()
    while not eng.events.empty():
        c.record(eng.events.get_nowait())
    assert set(ids) <= set(c.finished)
    assert all(c.terminal_counts[i] == 1 for i in ids)


# ---------------------------------------------------------------- models and drafts checked when loaded
def test_config_vocab_smaller_than_tokenizer_is_refused_at_load(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.resize_token_embeddings(len(tok) - 20)
    d = tmp_path / "small-vocab"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    with pytest.raises(ModelLoadError, match="embedding has only"):
        load_model(ModelSpec(str(d)))


def _draft_variant(src, dst, *, vocab: int | None = None, context: int | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    if vocab is not None:
        model.resize_token_embeddings(vocab)
    if context is not None:
        model.config.max_position_embeddings = context
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.mark.parametrize("variant, needle", [({"vocab": 364}, "vocabulary"), ({"context": 16}, "context")])
def test_a_draft_that_cannot_serve_is_refused_at_configure_time(tiny_pair_dirs, tmp_path, variant, needle):
    target, draft = tiny_pair_dirs
    bad = _draft_variant(draft, tmp_path / "bad-draft", **variant)
    eng = Engine(ModelSpec(str(target))).start()
    try:
        wait_loaded(eng)
        eng.reconfigure(EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.DRAFT, draft_model=str(bad))))
        c = pump(eng, Collected(), lambda c: bool(c.errors) or bool(c.applied))
        assert c.errors and needle in c.errors[-1].message
        assert eng.config.speculative.mode is SpeculativeMode.OFF
        ids, c = _run(eng, [GenerateRequest(prompt="to be", sampling=greedy(6))])
        assert c.finished[ids[0]].reason is not ev.FinishReason.ERROR
    finally:
        assert eng.shutdown(10.0)


def test_failed_requantise_keeps_serving(tiny_llama_dir, tmp_path):
    d = tmp_path / "moving"
    shutil.copytree(tiny_llama_dir, d)
    eng = Engine(ModelSpec(str(d))).start()
    try:
        wait_loaded(eng)
        rid = eng.submit(GenerateRequest(prompt="to be or not", sampling=greedy(60, ignore_eos=True)))
        shutil.rmtree(d)  # the directory moved away
        eng.reconfigure(EngineConfig(quantisation=Quantisation.BF16))
        c = wait_finished(eng, [rid])
        assert c.finished[rid].reason is ev.FinishReason.LENGTH
        assert any("bf16" in e.message or "Could not" in e.message or "No such" in e.message for e in c.errors)
        assert eng.config.quantisation is Quantisation.NONE
        ids, c = _run(eng, [GenerateRequest(prompt="to be", sampling=greedy(5))])
        assert c.finished[ids[0]].reason is not ev.FinishReason.ERROR
    finally:
        assert eng.shutdown(10.0)


def test_failed_requantise_without_room_ends_requests_clearly(tiny_llama_dir, tmp_path, monkeypatch):
    import engine.loading

    monkeypatch.setattr(engine.loading, "room_for_second_copy", lambda *a: False)
    d = tmp_path / "moving"
    shutil.copytree(tiny_llama_dir, d)
    eng = Engine(ModelSpec(str(d))).start()
    try:
        wait_loaded(eng)
        rid = eng.submit(GenerateRequest(prompt="to be or not", sampling=greedy(200, ignore_eos=True)))
        pump(eng, Collected(), lambda c: bool(c.tokens))
        shutil.rmtree(d)
        eng.reconfigure(EngineConfig(quantisation=Quantisation.BF16))
        c = wait_finished(eng, [rid])
        assert c.finished[rid].reason is ev.FinishReason.ERROR and "reloaded" in c.finished[rid].error
        ids, c = _run(eng, [GenerateRequest(prompt="to be", sampling=greedy(5))])
        assert c.finished[ids[0]].error == "no model is loaded"
    finally:
        assert eng.shutdown(10.0)


# ---------------------------------------------------------------- text and provenance
@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_final_text_is_the_decoded_tokens_and_the_deltas_add_up(fixture, request):
    from transformers import AutoTokenizer

    d = request.getfixturevalue(fixture)
    tok = AutoTokenizer.from_pretrained(d)
    eng = Engine(ModelSpec(str(d))).start()
    try:
        wait_loaded(eng)
        reqs = [GenerateRequest(prompt="the", sampling=SamplingParams(temperature=1.5, seed=s, max_new_tokens=40,
                                                                      ignore_eos=True)) for s in range(8)]
        ids, c = _run(eng, reqs)
        for rid in ids:
            fin = c.finished[rid]
            assert fin.text == tok.decode(list(fin.token_ids), skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
            assert "".join(t.text for t in c.tokens[rid]) == fin.text
    finally:
        assert eng.shutdown(10.0)


def test_config_spans_record_every_configuration_a_request_ran_under(engine):
    from engine.config import KVCacheMode

    rid = engine.submit(GenerateRequest(prompt="to be", sampling=greedy(120, ignore_eos=True)))
    pump(engine, Collected(), lambda c: sum(len(t.token_ids) for t in c.tokens[rid]) >= 5)
    engine.reconfigure(EngineConfig(kv_cache=KVCacheMode.OFF))
    c = wait_finished(engine, [rid])
    engine.reconfigure(EngineConfig())
    spans = c.finished[rid].config_spans
    assert len(spans) == 2 and spans[0].first_token == 0 and spans[1].first_token >= 5
    assert "kv on" in spans[0].label and "kv off" in spans[1].label
    assert c.finished[rid].config_label == spans[-1].label


# ---------------------------------------------------------------- seeded fuzz
def _hostile(rng: random.Random, vocab: int):
    """(request or None when construction is refused, expected: 'good' | 'bad')."""
    kind = rng.choice(["good", "good", "good", "nan", "huge", "neg", "ids", "role", "seed", "stop", "empty"])
    wild = [float("nan"), float("inf"), -float("inf"), 1e-40, -1.0, 1e300, 2**64, -5, "x", None, True]
    try:
        if kind == "good":
            return GenerateRequest(prompt=rng.choice(["to be", "a horse", "now is the"]),
                                   sampling=greedy(rng.randint(1, 12), ignore_eos=True)), "good"
        if kind in ("nan", "huge", "neg"):
            field_ = rng.choice(["temperature", "top_p", "top_k", "max_new_tokens", "seed"])
            value = rng.choice(wild)
            # the wild values that are valid: a random seed; top_k or max_new_tokens past any limit
            # (top_k larger than the vocabulary is off; the context ends the request)
            valid = (field_ == "seed" and value is None) or (field_ in ("top_k", "max_new_tokens") and value == 2**64)
            expect = "good" if valid else "bad"
            params = {"max_new_tokens": 4, field_: value}
            return GenerateRequest(prompt="hi", sampling=SamplingParams(**params)), expect
        if kind == "ids":
            ids = [rng.choice([0, 5, vocab - 1, vocab, vocab + 7, 10**9]) for _ in range(rng.randint(0, 5))]
            ok = bool(ids) and max(ids) < vocab
            return GenerateRequest(prompt_token_ids=tuple(ids), sampling=greedy(3, ignore_eos=True)), \
                "good" if ok else "bad"
        if kind == "role":
            return GenerateRequest(messages=((rng.choice([None, 3, ""]), "hi"),)), "bad"
        if kind == "seed":
            return GenerateRequest(prompt="hi", sampling=SamplingParams(seed=rng.choice([2**64, -1, 1.5]))), "bad"
        if kind == "stop":
            return GenerateRequest(prompt="hi", sampling=SamplingParams(stop=("",))), "bad"
        return GenerateRequest(prompt="", sampling=greedy(3)), "bad"
    except ValueError:
        return None, "refused"


def test_seeded_fuzz_of_hostile_requests(engine):
    vocab = engine._core.loaded.info.vocab_size
    refs = {p: _reference(engine, p, 12) for p in ("to be", "a horse", "now is the")}
    rng = random.Random(1234)
    submitted: dict[str, tuple[GenerateRequest, str]] = {}
    refused = 0
    for _ in range(120):
        req, expect = _hostile(rng, vocab)
        if req is None:
            refused += 1
            continue
        submitted[engine.submit(req)] = (req, expect)
    c = wait_finished(engine, list(submitted))
    assert refused > 10 and len(submitted) > 40
    for rid, (req, expect) in submitted.items():
        fin = c.finished[rid]
        assert c.terminal_counts[rid] == 1
        if expect == "good":
            assert fin.reason in (ev.FinishReason.LENGTH, ev.FinishReason.STOP), fin.error
            if req.prompt in refs:
                n = req.sampling.max_new_tokens
                assert fin.token_ids == refs[req.prompt][:n]
        else:
            assert fin.reason is ev.FinishReason.ERROR and fin.error, req
    assert not math.isnan(sum(s.tokens_per_s or 0 for s in c.steps))
    assert not engine._core._reqs and not engine._core.scheduler.has_work()


def test_shutdown_interrupts_long_prefills_of_the_bundled_model():
    """16 x 900-token prompts on the demo target: the stop lands between prefill chunks."""
    from app import paths

    eng = Engine(ModelSpec(str(paths.bundled_target_dir()))).start()
    wait_loaded(eng)
    ids = [eng.submit(GenerateRequest(prompt_token_ids=tuple([100 + i] * 900), sampling=greedy(50)))
           for i in range(16)]
    pump(eng, Collected(), lambda c: len(c.steps) >= 1)
    assert eng.shutdown(2.0)
    c = Collected()
    while not eng.events.empty():
        c.record(eng.events.get_nowait())
    assert all(c.terminal_counts[i] == 1 for i in ids)
