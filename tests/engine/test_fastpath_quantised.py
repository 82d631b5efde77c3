"""bitsandbytes' 4-bit (nf4, fp4) and 8-bit layers on our kernel: the packed data read exactly
as bitsandbytes dequantises it, products equal to float32 ones on the dequantised weights, and
an engine on a quantised model gives the greedy tokens of generate() on its dequantised float32
twin, on Llama, Qwen2 (q/k/v biases) and Mistral (one KV head)."""

from __future__ import annotations

import pytest
import torch

from engine.config import BatchingConfig, EngineConfig, KVCacheMode, ModelSpec, Quantisation, \
    SpeculativeConfig, SpeculativeMode
from engine.fastpath import kernels
from engine.fastpath.llama import unsupported_reason
from engine.models import load_model
from engine.runner import ModelRunner
from tests.helpers.engine_utils import engine_greedy, hf_greedy

bnb = pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"no kernel: {kernels.unavailable_reason()}")

PROMPTS = ["to be or not to be", "a horse", "now is the winter of our discontent made glorious", "we"]


def _q4(w: torch.Tensor, quant_type: str) -> tuple[kernels.Q4Weight, torch.Tensor]:
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(w, blocksize=64, quant_type=quant_type, compress_statistics=False)
    q = kernels.Q4Weight(packed.reshape(-1).contiguous(), state.absmax.float().contiguous(),
                         state.code.float().contiguous(), tuple(w.shape), 64)
    return q, F.dequantize_4bit(packed, state).float()


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("n,k", [(8, 128), (97, 192), (3, 64), (1536, 512)])
def test_4bit_product_equals_float32_on_the_dequantised_weight(quant_type, n, k):
    torch.manual_seed(n + k)
    q, dequantised = _q4(torch.randn(n, k), quant_type)
    assert kernels.supports(q)
    assert torch.equal(q.dequantised(), dequantised)  # the layout as bitsandbytes reads it
    for m in (1, 3, 4, 5, 8, 33, 600):
        x = torch.randn(m, k)
        ref = x.double() @ dequantised.double().t()
        y = kernels.linear(x, q)
        assert y.shape == (m, n)
        torch.testing.assert_close(y.double(), ref, atol=2e-4 * k ** 0.5, rtol=1e-5)


@pytest.mark.parametrize("n,k", [(97, 192), (3, 64), (1536, 512)])
def test_8bit_product_equals_float32_on_the_dequantised_weight(n, k):
    torch.manual_seed(n * k)
    w = kernels.I8Weight(torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) / 127, (n, k))
    assert kernels.supports(w)
    for m in (1, 3, 5, 8, 13, 600):
        x = torch.randn(m, k)
        ref = x.double() @ w.dequantised().double().t()
        torch.testing.assert_close(kernels.linear(x, w).double(), ref, atol=1e-4 * k ** 0.5, rtol=1e-5)


def test_4bit_refusals():
    q, _ = _q4(torch.randn(8, 128), "nf4")
    odd = kernels.Q4Weight(q.packed, q.absmax, q.code, (8, 128), 48)  # blocks not a multiple of 32
    assert not kernels.supports(odd)
    short = kernels.Q4Weight(q.packed[:10], q.absmax, q.code, (8, 128), 64)
    assert not kernels.supports(short)


def _dequantised_twin(model_dir, quantised):
    """The float32 model whose linear layers hold exactly what the quantised layers stand for
    (read through bitsandbytes: dequantize_4bit, or the int8 rows times SCB / 127)."""
    import bitsandbytes.functional as F

    from engine.config import DType
    from engine.fastpath.quantised import _scb

    twin = load_model(ModelSpec(str(model_dir), dtype=DType.FLOAT32))
    modules = dict(twin.model.named_modules())
    with torch.no_grad():
        for name, mod in quantised.model.named_modules():
            if type(mod).__name__ == "Linear4bit":
                w = F.dequantize_4bit(mod.weight.data.reshape(-1, 1), mod.weight.quant_state).float()
                modules[name].weight.copy_(w)
            elif type(mod).__name__ == "Linear8bitLt":
                modules[name].weight.copy_(mod.weight.data.float() * (_scb(mod).float()[:, None] / 127))
    return twin


@pytest.mark.parametrize("level", [Quantisation.NF4, Quantisation.FP4, Quantisation.INT8])
def test_a_quantised_model_takes_the_fast_path_with_one_copy_of_its_data(arch_dir, level):
    loaded = load_model(ModelSpec(str(arch_dir)), level)
    assert unsupported_reason(loaded.model) is None
    fast = ModelRunner(loaded.model, loaded.device, 0).fast
    assert fast is not None and fast.native and (fast.q8 if level is Quantisation.INT8 else fast.q4)
    attn = loaded.model.model.layers[0].self_attn
    w = fast.layers[0].w_qkv
    fused = w.data if level is Quantisation.INT8 else w.packed
    start, end = fused.data_ptr(), fused.data_ptr() + fused.numel()
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):  # the modules read the fused buffer
        assert start <= proj.weight.data.data_ptr() < end


@pytest.mark.parametrize("config", [
    EngineConfig(quantisation=Quantisation.NF4),
    EngineConfig(quantisation=Quantisation.NF4, batching=BatchingConfig(max_batch_size=4, token_budget=7)),
    EngineConfig(quantisation=Quantisation.NF4, kv_cache=KVCacheMode.OFF),
    EngineConfig(quantisation=Quantisation.FP4,
                 speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=3)),
    EngineConfig(quantisation=Quantisation.INT8),
    EngineConfig(quantisation=Quantisation.INT8, batching=BatchingConfig(max_batch_size=4, token_budget=7)),
], ids=["nf4-batched", "nf4-chunked", "nf4-kv-off", "fp4-ngram", "int8-batched", "int8-chunked"])
def test_quantised_greedy_equals_generate_on_the_dequantised_twin(arch_dir, config):
    quantised = load_model(ModelSpec(str(arch_dir)), config.quantisation)
    twin = _dequantised_twin(arch_dir, quantised)
    tok = twin.tokenizer
    expected = {p: hf_greedy(twin.model, tok.encode(p), 16, tok.pad_token_id) for p in PROMPTS}
    assert engine_greedy(ModelSpec(str(arch_dir)), config, {p: tok.encode(p) for p in PROMPTS}, 16) == expected


def test_after_bitsandbytes_ran_its_own_forward_the_fast_path_reads_the_same_weights(tiny_llama_dir):
    """On a CPU with bfloat16 instructions bitsandbytes repacks 4-bit weights for its own kernel
    on the first forward (its block scales become bfloat16); the fast path takes them back to
    the layout it reads: the same weights up to those rounded scales, not garbage (a misread
    layout is off by ~0.3 here)."""
    quantised = load_model(ModelSpec(str(tiny_llama_dir)), Quantisation.NF4)
    tok = quantised.tokenizer
    ids = tok.encode(PROMPTS[2])
    twin = _dequantised_twin(tiny_llama_dir, quantised)
    with torch.inference_mode():
        quantised.model(torch.tensor([ids]))  # bitsandbytes' forward first
    runner = ModelRunner(quantised.model, quantised.device, tok.pad_token_id)
    assert runner.fast is not None and runner.fast.q4
    from engine.kv import BatchKV
    from engine.runner import RowInput

    kv = BatchKV()
    kv.add_rows(["a"], [None])
    logits = runner.step_cached([RowInput("a", ids, 1)], kv=kv)["a"][-1]
    with torch.inference_mode():
        ref = twin.model(torch.tensor([ids])).logits[0, -1].float()
    torch.testing.assert_close(logits, ref, atol=5e-3, rtol=1e-2)
    assert int(logits.argmax()) == int(ref.argmax())


def test_4bit_beside_full_precision_layers_keeps_transformers_forward(tmp_path):
    from tests.helpers.tiny_models import build_llama

    partial = build_llama(tmp_path / "partial", hidden=96)  # some layers cannot be 4-bit on a CPU
    loaded = load_model(ModelSpec(str(partial)), Quantisation.NF4)
    assert unsupported_reason(loaded.model) == "4-bit layers beside full-precision ones"
    assert ModelRunner(loaded.model, loaded.device, 0).fast is None


def test_without_our_kernel_quantised_layers_keep_bitsandbytes_forward(tiny_llama_dir, monkeypatch):
    """A CPU without AVX-512 or a compiler: 4- and 8-bit layers say why, and run bitsandbytes'."""
    loaded = load_model(ModelSpec(str(tiny_llama_dir)), Quantisation.NF4)
    monkeypatch.setattr(kernels, "available", lambda: False)
    monkeypatch.setattr(kernels, "unavailable_reason", lambda: "this CPU has no AVX-512")
    assert unsupported_reason(loaded.model) == "4-bit layers need our CPU kernel (this CPU has no AVX-512)"
    assert ModelRunner(loaded.model, loaded.device, 0).fast is None
    int8 = load_model(ModelSpec(str(tiny_llama_dir)), Quantisation.INT8)
    assert unsupported_reason(int8.model) == "8-bit layers need our CPU kernel (this CPU has no AVX-512)"


@pytest.mark.parametrize("level", [Quantisation.NF4, Quantisation.INT8])
def test_a_float16_checkpoint_keeps_float16_beside_its_quantised_layers(tiny_llama_dir, level):
    """On our kernel what is not quantised (embeddings, norms, the output head) stays in the
    checkpoint's float16 and the cache is float16: greedy output equals the twin's (the
    dequantised layers, the float16 values of the rest, float32 arithmetic), cached or not."""
    from engine.config import DType

    spec = ModelSpec(str(tiny_llama_dir), dtype=DType.FLOAT16)
    quantised = load_model(spec, level)
    assert quantised.model.lm_head.weight.dtype is torch.float16
    assert quantised.model.model.embed_tokens.weight.dtype is torch.float16
    fast = ModelRunner(quantised.model, quantised.device, 0).fast
    assert fast is not None and fast.native and fast.cache_dtype is torch.float16
    twin = _dequantised_twin(tiny_llama_dir, quantised)
    with torch.no_grad():  # the rest as the quantised load holds it: float16 values
        for name, p in quantised.model.named_parameters():
            if p.dtype is torch.float16:
                dict(twin.model.named_parameters())[name].copy_(p.float())
    tok = twin.tokenizer
    expected = {p: hf_greedy(twin.model, tok.encode(p), 16, tok.pad_token_id) for p in PROMPTS}
    for config in (EngineConfig(quantisation=level), EngineConfig(quantisation=level, kv_cache=KVCacheMode.OFF)):
        assert engine_greedy(spec, config, {p: tok.encode(p) for p in PROMPTS}, 16) == expected, config.kv_cache
