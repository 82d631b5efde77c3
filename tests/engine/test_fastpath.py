"""The Llama-family fast forward: the same greedy tokens as transformers' generate(), alone and
in batches with holes, on Llama, Qwen2 (q/k/v biases) and Mistral (one KV head); other
architectures and 8-bit models keep transformers' forward (4-bit ones: tests/engine/test_fastpath_quantised.py)."""

from __future__ import annotations

import pytest
import torch

from engine.config import BatchingConfig, EngineConfig, KVCacheMode, ModelSpec, SpeculativeConfig, \
    SpeculativeMode
from engine.fastpath import kernels
from engine.fastpath.llama import LlamaFastForward, unsupported_reason
from engine.kv import BatchKV
from engine.models import load_model
from engine.runner import ModelRunner, RowInput
from tests.helpers.engine_utils import engine_greedy, hf_greedy

PROMPTS = ["to be or not to be", "a horse", "now is the winter of our discontent made glorious", "we"]
# longer than the native forward's 128 tokens per row: its prefill takes the layer loop
LONG = "now is the winter of our discontent made glorious summer by this sun of york " * 8


def test_the_engine_takes_the_fast_path_for_the_llama_family(arch_dir):
    loaded = load_model(ModelSpec(str(arch_dir)))
    assert unsupported_reason(loaded.model) is None
    assert isinstance(ModelRunner(loaded.model, loaded.device, 0).fast, LlamaFastForward)


def test_fast_logits_match_transformers_forward(arch_dir):
    loaded = load_model(ModelSpec(str(arch_dir)))
    tok = loaded.tokenizer
    rows = [RowInput(f"r{i}", tok.encode(p), 1) for i, p in enumerate(PROMPTS)]
    fast = ModelRunner(loaded.model, loaded.device, tok.pad_token_id)
    slow = ModelRunner(loaded.model, loaded.device, tok.pad_token_id, fast_path=False)
    assert fast.fast is not None and slow.fast is None
    kv_fast, kv_slow = BatchKV(), BatchKV()
    for kv in (kv_fast, kv_slow):
        kv.add_rows([r.row_id for r in rows], [None] * len(rows))
    a = fast.step_cached(rows, kv=kv_fast)
    b = slow.step_cached(rows, kv=kv_slow)
    for r in rows:
        assert torch.allclose(a[r.row_id], b[r.row_id], atol=1e-4, rtol=1e-4)
    # a decode step on top of the (left-padded, holey) cache
    step = [RowInput(r.row_id, [5], 1) for r in rows]
    a, b = fast.step_cached(step, kv=kv_fast), slow.step_cached(step, kv=kv_slow)
    for r in rows:
        assert torch.allclose(a[r.row_id], b[r.row_id], atol=1e-4, rtol=1e-4)
    uncached = [RowInput(r.row_id, r.token_ids, 1) for r in rows]
    a, b = fast.step_uncached(uncached), slow.step_uncached(uncached)
    for r in rows:
        assert torch.allclose(a[r.row_id], b[r.row_id], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", [
    EngineConfig(),
    EngineConfig(batching=BatchingConfig(max_batch_size=4, token_budget=7)),
    EngineConfig(kv_cache=KVCacheMode.OFF),
    EngineConfig(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=3)),
], ids=["batched", "chunked", "kv-off", "ngram"])
def test_fast_greedy_equals_generate(arch_dir, config):
    ref = load_model(ModelSpec(str(arch_dir)))
    tok = ref.tokenizer
    prompts = PROMPTS + [LONG]
    assert len(tok.encode(LONG)) > kernels.ATTENTION_MAX_QUERIES
    expected = {p: hf_greedy(ref.model, tok.encode(p), 16, tok.pad_token_id) for p in prompts}
    assert engine_greedy(ModelSpec(str(arch_dir)), config, {p: tok.encode(p) for p in prompts}, 16) == expected


def test_other_architectures_keep_transformers_forward(tiny_gpt2_dir):
    loaded = load_model(ModelSpec(str(tiny_gpt2_dir)))
    assert unsupported_reason(loaded.model) is not None
    assert ModelRunner(loaded.model, loaded.device, 0).fast is None


def test_fusing_keeps_one_copy_of_the_weights(tiny_llama_dir):
    from engine.models import weights_bytes

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    before = weights_bytes(loaded.model)
    ModelRunner(loaded.model, loaded.device, 0)
    ModelRunner(loaded.model, loaded.device, 0)  # a second engine on the same weights fuses nothing again
    attn = loaded.model.model.layers[0].self_attn
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()
    assert weights_bytes(loaded.model) == before


def test_positions_past_the_rotation_table_use_the_rotary_module(tiny_llama_dir, monkeypatch):
    """The rotation table covers the first ROPE_TABLE_MAX_POSITIONS positions; a step reaching
    past it computes with the model's rotary module, to the same logits."""
    import engine.fastpath.llama as fast_llama

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    ids = list(range(5, 40))
    out = {}
    for cap in (fast_llama.ROPE_TABLE_MAX_POSITIONS, 8):
        monkeypatch.setattr(fast_llama, "ROPE_TABLE_MAX_POSITIONS", cap)
        runner = ModelRunner(loaded.model, loaded.device, 0)
        assert runner.fast._rope_table[0].shape[0] == min(cap, loaded.model.config.max_position_embeddings)
        kv = BatchKV()
        kv.add_rows(["a"], [None])
        first = runner.step_cached([RowInput("a", ids, 1)], kv)["a"]
        out[cap] = (first, runner.step_cached([RowInput("a", [7], 1)], kv)["a"])
    (a1, a2), (b1, b2) = out.values()
    torch.testing.assert_close(a1, b1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a2, b2, rtol=1e-5, atol=1e-5)
