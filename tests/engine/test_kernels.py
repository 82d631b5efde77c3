"""The native small-batch product (engine/fastpath/gemv.c): equal to torch's product for every
stored dtype, row count and awkward output size; one OpenMP runtime in the process; used by the
fast forward; refused cleanly when turned off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.fastpath import kernels

needs_kernel = pytest.mark.skipif(not kernels.available(), reason=f"kernel unavailable: {kernels.unavailable_reason()}")
ROOT = Path(__file__).resolve().parents[2]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 13, 32])
@pytest.mark.parametrize("out_features", [1, 3, 4, 6, 64, 97, 1408])
def test_kernel_equals_torch(dtype, rows, out_features):
    g = torch.Generator().manual_seed(rows * 1000 + out_features)
    k = 160
    weight = torch.randn(out_features, k, generator=g).to(dtype)
    x = torch.randn(rows, k, generator=g)
    expected = x @ weight.float().t()
    got = kernels.linear(x, weight)
    assert got.dtype is torch.float32 and got.shape == (rows, out_features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@needs_kernel
def test_kernel_keeps_leading_dims_takes_half_rows_and_adds_bias():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(48, 64, generator=g)
    bias = torch.randn(48, generator=g)
    x = torch.randn(2, 3, 64, generator=g).half()  # a half activation is widened, not refused
    got = kernels.linear(x, weight, bias)
    assert got.shape == (2, 3, 48)
    torch.testing.assert_close(got, x.float() @ weight.t() + bias, rtol=1e-5, atol=1e-4)
    # a non-contiguous input (a slice of a wider one) gives the same answer
    wide = torch.randn(5, 128, generator=g)
    torch.testing.assert_close(kernels.linear(wide[:, :64], weight), wide[:, :64] @ weight.t(), rtol=1e-5, atol=1e-4)


def test_supports_refuses_what_the_kernel_cannot_read():
    assert kernels.supports(torch.zeros(8, 32))
    assert not kernels.supports(torch.zeros(8, 24))  # in_features not a multiple of 16
    assert not kernels.supports(torch.zeros(32, 8).t())  # not contiguous
    assert not kernels.supports(torch.zeros(8, 32, dtype=torch.float64))
    assert not kernels.supports(torch.zeros(2, 8, 32))


@needs_kernel
def test_kernel_shares_torchs_openmp_runtime():
    """One libgomp in the process: the kernel's threads are torch's, not a second team."""
    code = ("import torch; from engine.fastpath import kernels; "
            "kernels.linear(torch.randn(1, 32), torch.randn(8, 32)); "
            "maps = open('/proc/self/maps').read().splitlines(); "
            "print(len({l.split()[-1] for l in maps if 'libgomp' in l}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


@needs_kernel
def test_the_fast_forward_multiplies_in_the_kernel(tiny_llama_dir):
    from engine.config import ModelSpec
    from engine.models import load_model
    from engine.runner import ModelRunner

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    runner = ModelRunner(loaded.model, loaded.device, 0)
    assert runner.fast.kernel
    attn = loaded.model.model.layers[0].self_attn
    # the fused weight is [out, in] contiguous, the modules' weights are views into it
    assert kernels.supports(runner.fast.layers[0].w_qkv)
    assert attn.q_proj.weight.untyped_storage().data_ptr() == runner.fast.layers[0].w_qkv.untyped_storage().data_ptr()


def test_turned_off_the_fast_forward_keeps_torchs_products(tiny_llama_dir):
    code = ("from engine.fastpath import kernels; from engine.config import ModelSpec; "
            "from engine.models import load_model; from engine.runner import ModelRunner; import sys; "
            f"m = load_model(ModelSpec({str(tiny_llama_dir)!r})); r = ModelRunner(m.model, m.device, 0); "
            "print(r.fast.kernel, kernels.unavailable_reason())")
    env = dict(os.environ, WORKBENCH_KERNELS="0", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False turned off (WORKBENCH_KERNELS=0)"


def _reference_attention(q, keys, values, valid):
    b, h, t, d = q.shape
    length, groups = keys.shape[2], h // keys.shape[1]
    mask = torch.arange(length)[None, :] <= (torch.arange(t) + length - t)[:, None]  # [T, L]
    mask = mask[None, None].expand(b, 1, t, length)
    if valid is not None:
        mask = mask & valid[:, None, None, :]
    k, v = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=d ** -0.5)
    return out.transpose(1, 2)  # [B, T, H, D]


@needs_kernel
@pytest.mark.parametrize("b,h,kvh,t,length,d", [(1, 8, 8, 1, 1, 64), (1, 8, 8, 1, 100, 64), (3, 4, 2, 5, 37, 16),
                                                 (8, 4, 1, 16, 300, 32), (2, 2, 2, 3, 3, 128)])
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float16])
def test_attention_equals_sdpa_with_causal_rows_holes_and_grouped_heads(b, h, kvh, t, length, d, holes, kv_dtype):
    g = torch.Generator().manual_seed(b * 100 + length)
    q = torch.randn(b, h + kvh, t, d, generator=g)[:, :h]  # a slice, as the fast forward passes it
    cap = length + 7  # keys and values are views of a longer buffer
    keys = torch.randn(b, kvh, cap, d, generator=g).to(kv_dtype)[:, :, :length]
    values = torch.randn(b, kvh, cap, d, generator=g).to(kv_dtype)[:, :, :length]
    valid = None
    if holes:
        valid = torch.rand(b, length, generator=g) > 0.3
        valid[:, -t:] = True  # every query sees at least itself
    got = kernels.attention(q, keys, values, valid, d ** -0.5)
    # a float16 cache is read exactly: the reference attends over the same values in float32
    ref = _reference_attention(q, keys.float(), values.float(), valid)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=2e-6)


@needs_kernel
def test_attention_of_a_query_that_sees_nothing_is_zero_not_nan():
    q, keys = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 4, 16)
    valid = torch.zeros(1, 4, dtype=torch.bool)
    out = kernels.attention(q, keys, keys, valid, 0.25)
    assert torch.equal(out, torch.zeros(1, 1, 2, 16))


@needs_kernel
def test_decode_steps_run_every_layer_in_one_native_call_and_match_the_layer_loop(tiny_llama_dir, monkeypatch):
    """The one-call decode forward (wb_decode) gives the logits of the layer-by-layer forward,
    on a batch with holes, and is what a decode step runs."""
    from engine.config import ModelSpec
    from engine.kv import BatchKV
    from engine.models import load_model
    from engine.runner import ModelRunner, RowInput

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    native = ModelRunner(loaded.model, loaded.device, 0)
    loop = ModelRunner(loaded.model, loaded.device, 0)
    loop.fast = type(native.fast)(loaded.model)
    loop.fast.native = False
    assert native.fast.native
    calls = []
    real = kernels.decode_layers
    monkeypatch.setattr(kernels, "decode_layers", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    prompts = {"a": [5, 9, 11, 3, 7, 8, 2], "b": [4, 6], "c": [10, 12, 13]}
    kvs = {}
    for name, runner in (("native", native), ("loop", loop)):
        kv = kvs[name] = BatchKV()
        kv.add_rows(list(prompts), [None] * len(prompts))
        runner.step_cached([RowInput(r, ids, 1) for r, ids in prompts.items()], kv)
    before = len(calls)
    for step in range(3):  # decode steps, one row sitting one out (a hole), then two tokens at once
        rows = [RowInput(r, [20 + step] * (2 if step == 2 else 1), 1) for r in prompts if not (step == 1 and r == "b")]
        a = native.step_cached(rows, kvs["native"])
        b = loop.step_cached(rows, kvs["loop"])
        for r in a:
            torch.testing.assert_close(a[r], b[r], rtol=1e-4, atol=1e-4)
    assert len(calls) - before == 3


@needs_kernel
def test_a_float16_model_keeps_a_float16_cache_written_as_torch_rounds_it(tiny_llama_dir):
    """float16 weights: keys and values are stored in float16 (half the bytes a step reads); the
    native forward's cache (converted in C, to nearest even) and the layer loop's (torch's
    conversion) agree to a float16 rounding step, and so do their logits."""
    from engine.config import DType, ModelSpec
    from engine.kv import BatchKV
    from engine.models import load_model
    from engine.runner import ModelRunner, RowInput

    loaded = load_model(ModelSpec(str(tiny_llama_dir), dtype=DType.FLOAT16))
    native = ModelRunner(loaded.model, loaded.device, 0)
    loop = ModelRunner(loaded.model, loaded.device, 0)
    loop.fast = type(native.fast)(loaded.model)
    loop.fast.native = False
    assert native.fast.native and native.fast.cache_dtype is torch.float16 and loop.fast.cache_dtype is torch.float16
    prompts = {"a": [5, 9, 11, 3, 7, 8, 2], "b": [4, 6]}
    kvs = {}
    for name, runner in (("native", native), ("loop", loop)):
        kv = kvs[name] = BatchKV()
        kv.add_rows(list(prompts), [None] * len(prompts))
        with torch.inference_mode():
            runner.step_cached([RowInput(r, ids, 1) for r, ids in prompts.items()], kv)
            out = runner.step_cached([RowInput(r, [20], 1) for r in prompts], kv)
        kvs[name] = (kv, out)
    (kv_n, out_n), (kv_l, out_l) = kvs["native"], kvs["loop"]
    for (kn, vn), (kl, vl) in zip(kv_n.buffers(), kv_l.buffers()):
        assert kn.dtype is torch.float16
        w = kv_n.width
        torch.testing.assert_close(kn[:, :, :w], kl[:, :, :w], rtol=0, atol=1e-3)  # float16 rounding of a ~1e-7 difference
        torch.testing.assert_close(vn[:, :, :w], vl[:, :, :w], rtol=0, atol=1e-3)
    for r in prompts:
        torch.testing.assert_close(out_n[r], out_l[r], rtol=1e-4, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_greedy_steps_in_one_call_equal_stepping_one_at_a_time(tiny_llama_dir, dtype):
    """The draft's k - 1 greedy steps in one native call (wb_greedy_steps) give the tokens and
    the cache of k - 1 engine steps with an argmax each, on a batch with holes."""
    from engine.config import DType, ModelSpec
    from engine.kv import BatchKV
    from engine.models import load_model
    from engine.runner import ModelRunner, RowInput

    loaded = load_model(ModelSpec(str(tiny_llama_dir), dtype=DType(dtype)))
    runner = ModelRunner(loaded.model, loaded.device, 0)
    assert runner.fast.can_greedy_steps
    prompts = {"a": [5, 9, 11, 3, 7, 8, 2], "b": [4, 6], "c": [10, 12, 13]}
    kvs = []
    for _ in range(2):
        kv = BatchKV()
        kv.add_rows(list(prompts), [None] * len(prompts))
        logits = runner.step_cached([RowInput(r, ids, 1) for r, ids in prompts.items()], kv)
        kvs.append(kv)
    first = {r: int(logits[r][-1].argmax()) for r in prompts}
    got = runner.greedy_steps(kvs[0], first, 4)
    want = {r: [] for r in prompts}
    last = dict(first)
    for _ in range(4):
        out = runner.step_cached([RowInput(r, [last[r]], 1) for r in prompts], kvs[1])
        last = {r: int(out[r][-1].argmax()) for r in prompts}
        for r in prompts:
            want[r].append(last[r])
    assert got == want
    assert kvs[0].width == kvs[1].width and torch.equal(kvs[0].valid, kvs[1].valid)
    step = [RowInput(r, [3], 1) for r in prompts]  # the caches hold the same keys: the same next logits
    a, b = runner.step_cached(step, kvs[0]), runner.step_cached(step, kvs[1])
    for r in prompts:
        torch.testing.assert_close(a[r], b[r], rtol=1e-4, atol=1e-4)
    kvs[0].remove_rows(["b"])  # a cache row without a first token: the caller steps one at a time
    assert runner.greedy_steps(kvs[0], {"a": 1}, 2) is None


@needs_kernel
def test_a_greedy_model_draft_proposes_in_one_native_call(tiny_llama_dir, monkeypatch):
    from engine.config import ModelSpec, SamplingParams
    from engine.models import load_model
    from engine.runner import ModelRunner
    from engine.spec.drafters import DraftRequest, ModelDrafter

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    drafter = ModelDrafter(loaded.model, loaded.device, 0, 0)
    calls = []
    real = ModelRunner.greedy_steps
    monkeypatch.setattr(ModelRunner, "greedy_steps", lambda self, *a, **k: (calls.append(a[-1]), real(self, *a, **k))[1])
    greedy = SamplingParams(max_new_tokens=8)
    drafts = drafter.propose([DraftRequest("a", [5, 9, 11, 3], 4, greedy, None),
                              DraftRequest("b", [4, 6], 4, greedy, None)], True)
    assert calls == [3] and all(len(d.tokens) == 4 for d in drafts.values())


@needs_kernel
def test_a_draft_after_a_rejection_is_one_call_and_the_same_tokens(tiny_llama_dir, monkeypatch):
    """With one unseen token per row (the target's bonus token after a rejection), the drafter
    drafts all k tokens in one native call; they equal a catch-up pass plus k - 1 steps."""
    from engine.config import ModelSpec, SamplingParams
    from engine.models import load_model
    from engine.runner import ModelRunner
    from engine.spec.drafters import DraftRequest, ModelDrafter

    loaded = load_model(ModelSpec(str(tiny_llama_dir)))
    greedy = SamplingParams(max_new_tokens=8)
    seqs = {"a": [5, 9, 11, 3, 7], "b": [4, 6, 2]}

    def second_round(one_call: bool):
        drafter = ModelDrafter(loaded.model, loaded.device, 0, 0)
        first = drafter.propose([DraftRequest(r, s, 4, greedy, None) for r, s in seqs.items()], True)
        for r, d in first.items():  # the target kept one draft and added its own token
            drafter.observe(r, 4, 1)
        if not one_call:
            monkeypatch.setattr(ModelDrafter, "_greedy_from_one_token", lambda self, reqs: None)
        calls = []
        real = ModelRunner.greedy_steps
        monkeypatch.setattr(ModelRunner, "greedy_steps",
                            lambda self, *a, **k: (calls.append(a[-1]), real(self, *a, **k))[1])
        nxt = {r: s + [first[r].tokens[0], 1] for r, s in seqs.items()}
        drafts = drafter.propose([DraftRequest(r, s, 4, greedy, None) for r, s in nxt.items()], True)
        monkeypatch.undo()
        return {r: d.tokens for r, d in drafts.items()}, calls

    fused, calls = second_round(True)
    stepped, calls_stepped = second_round(False)
    assert calls == [4] and calls_stepped == [3]
    assert fused == stepped and all(len(t) == 4 for t in fused.values())


@needs_kernel
@pytest.mark.parametrize("n", [0, 5, 16, 63, 64 * 4 + 17, 1_000_003])
def test_read_probe_sums_every_element_once(n):
    """The bandwidth probe's read loop (four streams per thread, a tail) must touch each value
    exactly once, or the roofline's denominator measures a different amount of memory."""
    g = torch.Generator().manual_seed(n)
    buf = torch.randint(0, 8, (n,), generator=g).float()  # small integers: the float sum is exact
    assert kernels.read_sum(buf) == float(buf.double().sum())


def test_bandwidth_probe_gives_a_plausible_rate():
    from engine.machine import _read_bandwidth_here

    bw = _read_bandwidth_here(32 << 20, 2)
    assert 1e8 < bw < 1e13
