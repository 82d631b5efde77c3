"""Install torch into the current interpreter before the project, picking the right build.

- torch already importable: nothing to do.
- $TORCH_SPEC set: pip install exactly that (e.g. "torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124").
- an NVIDIA GPU (nvidia-smi on PATH): PyPI's default torch, which is a CUDA build on Linux.
- otherwise the CPU build: from PyTorch's CPU index when it can be reached, else torch==2.13.0
  from the configured index (never pulling a multi-GB CUDA wheel onto a CPU-only machine
  when the CPU index is reachable).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys

CPU_VERSION = "2.13.0"
CPU_INDEX_HOST = "download.pytorch.org"


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def reachable(host: str, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def main() -> int:
    spec = os.environ.get("TORCH_SPEC", "").strip()
    if spec:
        pip(*shlex.split(spec))
        return 0
    if importlib.util.find_spec("torch") is not None:
        print("torch is already installed; set TORCH_SPEC to choose another build", flush=True)
        return 0
    if shutil.which("nvidia-smi"):
        pip("torch")
    elif reachable(CPU_INDEX_HOST):
        pip(f"torch=={CPU_VERSION}", "--index-url", f"https://{CPU_INDEX_HOST}/whl/cpu",
            "--extra-index-url", "https://pypi.org/simple")
    else:
        pip(f"torch=={CPU_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
