"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def arch_dir(request, tmp_path_factory, tiny_llama_dir):
    """One tiny model per shape of the Llama family the fast forward takes: Llama, Qwen2 (q/k/v
    biases), Mistral (one KV head)."""
    from tests.helpers.tiny_models import build_mistral, build_qwen2

    if request.param == "llama":
        return tiny_llama_dir
    build = {"qwen2": build_qwen2, "mistral": build_mistral}[request.param]
    return build(tmp_path_factory.mktemp(request.param))
