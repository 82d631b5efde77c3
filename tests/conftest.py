import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from tests.helpers.tiny_models import build_llama

    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    from tests.helpers.tiny_models import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_pair_dirs(tmp_path_factory):
    """A target and a smaller draft sharing one tokenizer (for speculative decoding)."""
    from tests.helpers.tiny_models import build_llama, perturbed_copy

    root = tmp_path_factory.mktemp("tiny-pair")
    target = build_llama(root / "target", seed=3, layers=3, hidden=64, tie=False)
    draft = perturbed_copy(target, root / "draft", noise=0.1)
    return target, draft


# ---- real servers shared by tests/engine and tests/ui (each started once per session)
@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory):
    """A tiny random Llama that `transformers serve` and vLLM can both serve."""
    from tests.helpers.remote_servers import server_model_dir

    return server_model_dir(tmp_path_factory.mktemp("served-llama"))


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """vLLM (CPU build, n-gram speculation, API key) from .venv-vllm; skipped without it."""
    from tests.helpers.remote_servers import start_vllm, vllm_model_dir

    server = start_vllm(vllm_model_dir(tmp_path_factory.mktemp("vllm-llama")), tmp_path_factory.mktemp("vllm-log"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tserve_server(served_model_dir, tmp_path_factory):
    from tests.helpers.remote_servers import start_transformers_serve

    server = start_transformers_serve(served_model_dir, tmp_path_factory.mktemp("tserve-log"))
    try:
        yield server
    finally:
        server.stop()
