"""dtype auto: a half-precision checkpoint stays in half precision on a CPU that computes it
faster (measured at load); a float32 checkpoint is never narrowed; greedy output in the chosen
dtype equals generate() in the same dtype."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from engine.config import DType, GenerateRequest, ModelSpec
from engine.engine import Engine
from engine.models import _fast_kernel, cpu_linear_timings, load_model, resolve_dtype
from tests.helpers.engine_utils import greedy, hf_greedy, wait_finished, wait_loaded


def _half_copy(src, dst):
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_auto_keeps_float32_checkpoints_in_float32(tiny_llama_dir):
    cfg = AutoConfig.from_pretrained(tiny_llama_dir)
    assert resolve_dtype(DType.AUTO, torch.device("cpu"), cfg) is torch.float32


def test_auto_keeps_half_precision_only_where_it_is_fast_for_one_row_and_for_a_batch(tiny_llama_dir, tmp_path):
    d = _half_copy(tiny_llama_dir, tmp_path / "half")
    cfg = AutoConfig.from_pretrained(d)
    # timed as the model will run: in our kernel when the fast forward takes it
    t = cpu_linear_timings((torch.float32, torch.float16), cfg.hidden_size, cfg.intermediate_size,
                           torch.get_num_threads(), _fast_kernel(cfg))
    chosen = resolve_dtype(DType.AUTO, torch.device("cpu"), cfg)
    half_wins = t[torch.float16][0] < t[torch.float32][0] and t[torch.float16][1] <= 1.1 * t[torch.float32][1]
    assert chosen is (torch.float16 if half_wins else torch.float32)
    loaded = load_model(ModelSpec(str(d)))
    assert loaded.info.dtype == str(chosen).replace("torch.", "")
    assert "measured" in loaded.info.dtype_note


def test_greedy_in_float16_equals_generate_in_float16(tiny_llama_dir, tmp_path):
    d = _half_copy(tiny_llama_dir, tmp_path / "half")
    spec = ModelSpec(str(d), dtype=DType.FLOAT16)
    ref = load_model(spec)
    prompt = ref.tokenizer.encode("to be or not to be")
    expected = hf_greedy(ref.model, prompt, 24, ref.tokenizer.pad_token_id)
    eng = Engine(spec).start()
    try:
        wait_loaded(eng)
        rid = eng.submit(GenerateRequest(prompt_token_ids=tuple(prompt), sampling=greedy(24, ignore_eos=True)))
        assert list(wait_finished(eng, [rid]).finished[rid].token_ids) == expected
    finally:
        assert eng.shutdown(10.0)


def test_half_precision_prefill_computed_in_float32_keeps_greedy_output(tiny_llama_dir, tmp_path):
    """Prompts of 8+ tokens take the float32-compute path for half weights on a CPU; the greedy
    tokens are those of transformers' own half-precision generate()."""
    from engine.fastpath import llama

    d = _half_copy(tiny_llama_dir, tmp_path / "half")
    spec = ModelSpec(str(d), dtype=DType.FLOAT16)
    ref = load_model(spec)
    prompts = [ref.tokenizer.encode(p) for p in ("to be or not to be that is the question",
                                                  "all the world's a stage and all the men and women merely players")]
    assert all(len(p) >= llama.UPCAST_ROWS for p in prompts)
    expected = [hf_greedy(ref.model, p, 24, ref.tokenizer.pad_token_id) for p in prompts]
    eng = Engine(spec).start()
    try:
        wait_loaded(eng)
        ids = [eng.submit(GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(24, ignore_eos=True)))
               for p in prompts]
        c = wait_finished(eng, ids)
        assert [list(c.finished[i].token_ids) for i in ids] == expected
    finally:
        assert eng.shutdown(10.0)
