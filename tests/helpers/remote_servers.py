"""Real servers for the remote-backend tests: vLLM (its own venv, built by `make test`) and
`transformers serve` (in the main venv), started from launch profiles over a tiny local model."""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import urllib.request
from pathlib import Path

import pytest

from engine import events as ev
from engine.remote.launch import LaunchedServer, transformers_serve_profile, vllm_cpu_profile

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
SERVED = "tiny"
MAX_MODEL_LEN = 512  # the tiny model's max_position_embeddings
NGRAM = json.dumps({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3,
                    "prompt_lookup_min": 1})


def vllm_venv() -> Path | None:
    root = Path(os.environ.get("WORKBENCH_VLLM_VENV", REPO / ".venv-vllm"))
    py = root / "bin" / "python"
    has_vllm = any((root / "lib").glob("python3*/site-packages/vllm/__init__.py"))
    return root if py.is_file() and has_vllm else None


def require_vllm() -> Path:
    """The vLLM venv, or a skip that says how to get it; under `make test` (which builds the
    venv first and sets WORKBENCH_REQUIRE_VLLM=1) a missing venv fails instead."""
    root = vllm_venv()
    if root is None:
        msg = "no vLLM venv at .venv-vllm (make test builds it: vllm-cpu in its own venv)"
        if os.environ.get("WORKBENCH_REQUIRE_VLLM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def server_model_dir(root: Path, *, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny random Llama whose head size (64) vLLM's CPU kernels take; untied embeddings so
    greedy text varies instead of echoing the last token."""
    from tests.helpers.tiny_models import build_llama

    return build_llama(root, seed=0, head_dim=64, tie=False, hidden=hidden, layers=layers)


def vllm_model_dir(root: Path) -> Path:
    """Larger (20M parameters): a 460-token answer takes vLLM on one core about 2 s, so an abort
    lands mid-answer even when its API server delivers chunks late on a busy machine."""
    return server_model_dir(root, hidden=512, layers=8)


def start_vllm(model_dir: Path, log_dir: Path, *, name: str = "vllm-test", extra: tuple[str, ...] = ()) -> LaunchedServer:
    venv = require_vllm()
    # a long context so an aborted request is still far from its end when the abort lands
    profile = vllm_cpu_profile(name, str(model_dir), served_name=SERVED, api_key=API_KEY,
                               max_model_len=MAX_MODEL_LEN, extra_args=("--speculative-config", NGRAM) + extra)
    server = LaunchedServer(profile, variables={"vllm_python": str(venv / "bin" / "python"),
                                                "vllm_venv": str(venv)},
                            log_path=log_dir / f"{name}.log")
    return server.__enter__()


def start_transformers_serve(model_dir: Path, log_dir: Path, name: str = "transformers-serve") -> LaunchedServer:
    exe = Path(sys.executable).parent / "transformers"
    profile = transformers_serve_profile(name, str(model_dir), executable=str(exe))
    return LaunchedServer(profile, log_path=log_dir / f"{name}.log").__enter__()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def independent_counter(root_url: str, name: str) -> float:
    """A counter summed over its label sets, read with a regex (independent of prometheus_client
    and of the backend's own parser)."""
    with urllib.request.urlopen(root_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for n, _, v in _SAMPLE.findall(text) if n == name)


def wait_for(events: "queue.Queue", pred, timeout: float = 60.0, seen: list | None = None):
    """Events until one satisfies pred (returned); the others go to `seen`."""
    while True:
        e = events.get(timeout=timeout)
        if pred(e):
            return e
        if seen is not None:
            seen.append(e)


def finished(rid: str):
    return lambda e: isinstance(e, ev.RequestFinished) and e.request_id == rid
