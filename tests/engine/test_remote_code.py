"""--trust-remote-code: a custom architecture loads when trusted; without the opt-in, or when the
repository names no causal-LM class, nothing of its code runs."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.config import ModelSpec
from engine.models import ModelLoadError, load_model

CODE = '''
import os
from transformers import LlamaConfig, LlamaForCausalLM

MARKER = os.environ.get("WORKBENCH_TEST_MARKER")
if MARKER:
    open(MARKER, "a").write("ran\\n")


class ToyConfig(LlamaConfig):
    model_type = "toy-llama"


class ToyForCausalLM(LlamaForCausalLM):
    config_class = ToyConfig
'''


def _custom_dir(src, dst, *, auto_map: bool):
    shutil.copytree(src, dst)
    (dst / "toy_model.py").write_text(CODE)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model_type"] = "toy-llama"
    cfg["architectures"] = ["ToyForCausalLM"]
    cfg["auto_map"] = {"AutoConfig": "toy_model.ToyConfig"}
    if auto_map:
        cfg["auto_map"]["AutoModelForCausalLM"] = "toy_model.ToyForCausalLM"
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_trusted_custom_architecture_loads(tiny_llama_dir, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("WORKBENCH_TEST_MARKER", str(marker))
    d = _custom_dir(tiny_llama_dir, tmp_path / "toy", auto_map=True)
    loaded = load_model(ModelSpec(str(d), trust_remote_code=True))
    assert type(loaded.model).__name__ == "ToyForCausalLM"
    assert marker.exists()


def test_custom_code_is_refused_without_the_opt_in(tiny_llama_dir, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("WORKBENCH_TEST_MARKER", str(marker))
    d = _custom_dir(tiny_llama_dir, tmp_path / "toy", auto_map=True)
    with pytest.raises(ModelLoadError, match="trust"):
        load_model(ModelSpec(str(d)))
    assert not marker.exists()


def test_no_causal_class_is_refused_before_any_code_runs(tiny_llama_dir, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("WORKBENCH_TEST_MARKER", str(marker))
    d = _custom_dir(tiny_llama_dir, tmp_path / "toy", auto_map=False)
    with pytest.raises(ModelLoadError, match="causal-LM class"):
        load_model(ModelSpec(str(d), trust_remote_code=True))
    assert not marker.exists()
