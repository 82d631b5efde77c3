"""Loading by the user path, and clear refusals that leave the engine serving."""

from __future__ import annotations

import json

import pytest

from engine.config import GenerateRequest, ModelSpec
from engine.events import FinishReason
from engine.models import ModelLoadError, check_source, load_model, weights_bytes
from tests.helpers.engine_utils import greedy, pump, run_requests, started_engine
from tests.helpers.tiny_models import build_non_causal, train_tokenizer


def test_loads_local_directory_with_info(tiny_llama_dir):
    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    params = sum(p.numel() for p in loaded.model.parameters())
    assert loaded.info.num_params == params
    buffers = sum(b.numel() * b.element_size() for b in loaded.model.buffers())
    assert loaded.info.weights_bytes == params * 4 + buffers  # float32 on CPU, tied embeddings counted once
    assert loaded.info.device == "cpu"
    assert loaded.info.architecture == "LlamaForCausalLM"


def _bad_dirs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bert = build_non_causal(tmp_path / "bert")
    return empty, bert


def test_bad_sources_are_refused_with_clear_messages(tmp_path):
    empty, bert = _bad_dirs(tmp_path)
    with pytest.raises(ModelLoadError, match="No such directory"):
        check_source(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        check_source(str(empty))
    with pytest.raises(ModelLoadError, match="causal"):
        load_model(ModelSpec(str(bert)))
    with pytest.raises(ModelLoadError, match="hub cannot be reached"):
        check_source("some-org/some-model")  # HF_HUB_OFFLINE=1 in the test config


def test_tokenizer_without_eos_is_refused(tmp_path, tiny_llama_dir):
    import shutil

    d = tmp_path / "noeos"
    shutil.copytree(tiny_llama_dir, d)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (d / f).unlink(missing_ok=True)
    train_tokenizer(d, with_eos=False)
    cfg = json.loads((d / "generation_config.json").read_text())
    cfg.pop("eos_token_id", None)
    (d / "generation_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="end-of-sequence"):
        load_model(ModelSpec(str(d)))


def test_failed_loads_keep_the_previous_model_serving(tmp_path, tiny_llama_dir):
    empty, bert = _bad_dirs(tmp_path)
    engine, c = started_engine(tiny_llama_dir)
    try:
        for bad in (str(tmp_path / "missing"), str(empty), str(bert), "org/not-cached-model"):
            before = len(c.errors)
            engine.load_model(bad)
            pump(engine, c, lambda c: len(c.errors) > before)
            assert c.errors[-1].where == "load"
            ids, c2 = run_requests(engine, [GenerateRequest(prompt="the", sampling=greedy(3, ignore_eos=True))])
            assert c2.finished[ids[0]].reason is FinishReason.LENGTH
        assert len(c.loaded) == 1
    finally:
        engine.shutdown()


def test_request_without_model_ends_with_error(tmp_path):
    from engine.engine import Engine

    engine = Engine(None).start()
    try:
        ids, c = run_requests(engine, [GenerateRequest(prompt="hi")])
        fin = c.finished[ids[0]]
        assert fin.reason is FinishReason.ERROR and "no model" in fin.error
    finally:
        engine.shutdown()


def test_weights_bytes_counts_tied_tensors_once(tiny_gpt2_dir):
    loaded = load_model(ModelSpec(str(tiny_gpt2_dir)))
    manual = sum(t.numel() * t.element_size() for t in {id(p): p for p in loaded.model.parameters()}.values())
    manual += sum(b.numel() * b.element_size() for b in loaded.model.buffers())
    assert weights_bytes(loaded.model) == manual
