"""Quantisation: load recipes, refusals, true footprints, switching under load."""

from __future__ import annotations

import pytest
import torch

from engine.config import BatchingConfig, EngineConfig, GenerateRequest, ModelSpec, Quantisation
from engine.events import FinishReason
from engine.models import load_model, weights_bytes
from engine.quality import agreement, perplexity
from engine.quant import QuantisationUnavailable, availability, load_plan
from tests.helpers.engine_utils import greedy, pump, started_engine, wait_finished

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def llama128(tmp_path_factory):
    from tests.helpers.tiny_models import build_llama

    return build_llama(tmp_path_factory.mktemp("llama128"), layers=2, hidden=128)


@pytest.mark.parametrize("level", [Quantisation.INT8, Quantisation.NF4, Quantisation.FP4, Quantisation.BF16])
def test_quantised_load_reports_true_footprint(llama128, level):
    full = load_model(ModelSpec(str(llama128)))
    q = load_model(ModelSpec(str(llama128)), level)
    assert q.info.quantisation == level.value
    assert q.info.weights_bytes == weights_bytes(q.model)
    ratio = q.info.weights_bytes / full.info.weights_bytes
    # embeddings and the output head stay in full precision; the linear layers shrink
    assert ratio < {Quantisation.BF16: 0.55, Quantisation.INT8: 0.8, Quantisation.NF4: 0.75,
                    Quantisation.FP4: 0.75}[level]
    linear_types = {type(m).__name__ for m in q.model.modules() if "Linear" in type(m).__name__}
    if level in (Quantisation.NF4, Quantisation.FP4):
        assert "Linear4bit" in linear_types
    if level is Quantisation.INT8:
        assert "Linear8bitLt" in linear_types
    # the quantised model still computes sensible logits
    ids = full.tokenizer.encode("to be or not to be that is the question")
    assert perplexity(q.model, ids) < 2 * perplexity(full.model, ids)


def test_4bit_on_cpu_skips_layers_that_cannot_run(tmp_path):
    from transformers import AutoConfig

    from tests.helpers.tiny_models import build_llama

    cpu = torch.device("cpu")
    partial = build_llama(tmp_path / "partial", hidden=96)  # in_features 96 (attn, gate/up) and 192 (down)
    plan = load_plan(Quantisation.NF4, model_config=AutoConfig.from_pretrained(partial), device=cpu,
                     base_dtype=torch.float32)
    assert plan.skipped_modules and all(not n.endswith("down_proj") for n in plan.skipped_modules)
    assert any(n.endswith("q_proj") for n in plan.skipped_modules)
    loaded = load_model(ModelSpec(str(partial)), Quantisation.NF4)
    assert loaded.skipped_modules == plan.skipped_modules
    assert type(loaded.model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    none = build_llama(tmp_path / "none", hidden=80)  # 80 and 160: no layer qualifies
    with pytest.raises(QuantisationUnavailable, match="multiple of 64"):
        load_plan(Quantisation.FP4, model_config=AutoConfig.from_pretrained(none), device=cpu,
                  base_dtype=torch.float32)
    assert availability(Quantisation.NF4, torch.device("mps")) is not None


def test_level_switch_under_load_loses_no_request(llama128):
    engine, c = started_engine(llama128, EngineConfig(batching=BatchingConfig(max_batch_size=4)))
    try:
        ids = [engine.submit(GenerateRequest(prompt=p, sampling=greedy(30, ignore_eos=True)))
               for p in ("the quick brown fox", "a horse", "to be or not", "we are such stuff", "friends romans")]
        pump(engine, c, lambda c: sum(len(e) for e in c.tokens.values()) >= 6)
        rss_before = c.steps[-1].weights_bytes
        engine.reconfigure(EngineConfig(quantisation=Quantisation.NF4, batching=BatchingConfig(max_batch_size=4)))
        wait_finished(engine, ids, c)
        assert all(c.finished[i].reason is FinishReason.LENGTH for i in ids)
        assert all(len(c.finished[i].token_ids) == 30 for i in ids)
        assert all(c.terminal_counts[i] == 1 for i in ids)
        for i in ids:
            assert [t for e in c.tokens[i] for t in e.token_ids] == list(c.finished[i].token_ids)
        assert any(info.quantisation == "nf4" for info in c.loaded)
        assert c.steps[-1].weights_bytes < rss_before
        assert c.applied and c.applied[-1].config_dict["quantisation"] == "nf4"
    finally:
        engine.shutdown()


def test_agreement():
    a = agreement([1, 2, 3, 4], [1, 2, 9, 4])
    assert a.share == 0.75 and a.first_divergence == 2
    assert agreement([1, 2], [1, 2]).first_divergence is None
