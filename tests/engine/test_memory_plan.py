"""The memory planner's formula against the KV tensors and weights the engine really holds."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from engine.config import ModelSpec, Quantisation
from engine.kv import BatchKV
from engine.memory_plan import MemoryPlan, check_fits, kv_bytes_per_token, model_shape, plan_memory, weights_bytes
from engine.models import load_model
from engine.runner import ModelRunner, RowInput


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def model_dir(request, tmp_path_factory, tiny_llama_dir, tiny_gpt2_dir):
    from tests.helpers.tiny_models import build_qwen2

    return {"llama": lambda: tiny_llama_dir, "gpt2": lambda: tiny_gpt2_dir,
            "qwen2": lambda: build_qwen2(tmp_path_factory.mktemp("qwen2"))}[request.param]()


@pytest.mark.parametrize("length", [1, 17, 130])
def test_kv_bytes_per_token_matches_the_cache_tensors(model_dir, length):
    loaded = load_model(ModelSpec(str(model_dir)))
    runner = ModelRunner(loaded.model, loaded.device, loaded.tokenizer.pad_token_id)
    kv = BatchKV()
    kv.add_rows(["r"], [None])
    runner.step_cached([RowInput("r", list(range(3, 3 + length)), 1)], kv=kv)
    measured = kv.extract("r").nbytes  # the row's own tensors, no spare capacity
    predicted = kv_bytes_per_token(model_shape(loaded.model.config)) * length
    assert abs(measured - predicted) <= 0.05 * predicted
    assert measured == predicted


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_plan_knows_which_half_precision_caches_stay_half(tiny_llama_dir, dtype):
    """float16 on our CPU kernel keeps a float16 cache, bfloat16 a float32 one: the plan's bytes
    per token are those of the tensors the engine holds."""
    from engine.config import DType

    loaded = load_model(ModelSpec(str(tiny_llama_dir), dtype=DType(dtype)))
    runner = ModelRunner(loaded.model, loaded.device, loaded.tokenizer.pad_token_id)
    kv = BatchKV()
    kv.add_rows(["r"], [None])
    runner.step_cached([RowInput("r", list(range(3, 20)), 1)], kv=kv)
    plan = plan_memory(loaded.model.config, dtype=getattr(torch, dtype), available=1 << 40)
    assert kv.extract("r").nbytes == plan.kv_bytes_per_token * 17


def test_weights_estimate_matches_the_loaded_model(model_dir):
    loaded = load_model(ModelSpec(str(model_dir)))
    shape = model_shape(AutoConfig.from_pretrained(model_dir))
    est = weights_bytes(shape, Quantisation.NONE)
    assert abs(est - loaded.info.weights_bytes) <= 0.05 * loaded.info.weights_bytes


def test_nf4_estimate_is_near_the_quantised_model(tiny_pair_dirs):
    target, _ = tiny_pair_dirs
    from engine.quant import availability

    if availability(Quantisation.NF4, torch.device("cpu")):
        pytest.skip("bitsandbytes 4-bit is not available here")
    loaded = load_model(ModelSpec(str(target)), Quantisation.NF4)
    shape = model_shape(AutoConfig.from_pretrained(target))
    est = weights_bytes(shape, Quantisation.NF4)
    assert est < weights_bytes(shape, Quantisation.NONE)
    assert abs(est - loaded.info.weights_bytes) <= 0.25 * loaded.info.weights_bytes


def test_largest_context_and_batch_are_consistent():
    plan = MemoryPlan(weights_bytes=1000, kv_bytes_per_token=10, available_bytes=1000 + 50 + 10 * 800, overhead_bytes=50)
    assert plan.max_context(batch=1) == 800 and plan.fits(800) and not plan.fits(801)
    assert plan.max_context(batch=4) == 200 and plan.max_batch(context=200) == 4 and not plan.fits(200, batch=5)


def test_a_model_too_big_for_this_machine_is_warned_about_without_loading_it(tiny_llama_dir):
    from transformers import LlamaConfig

    huge = LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192)
    warning = check_fits("llama-70b-ish", huge, Quantisation.NONE)
    assert warning is not None and "GiB" in warning
    assert check_fits("tiny", AutoConfig.from_pretrained(tiny_llama_dir), Quantisation.NONE) is None
    plan = plan_memory(huge, Quantisation.NF4)
    assert plan.weights_bytes < plan_memory(huge, Quantisation.NONE).weights_bytes / 6
