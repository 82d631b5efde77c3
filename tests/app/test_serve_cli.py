"""`workbench serve` as a user runs it: a child process on a free port, stopped with Ctrl+C."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


def _spawn(*args: str) -> tuple[subprocess.Popen, queue.Queue]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("WORKBENCH_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()

    def read(stream, tag):
        for line in stream:
            lines.put((tag, line))
        lines.put((tag, None))

    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=read, args=(stream, tag), daemon=True).start()
    return proc, lines


def _wait_for(lines: queue.Queue, needle: str) -> str:
    seen = []
    while True:
        tag, line = lines.get(timeout=TIMEOUT_S)
        if line is None:
            if tag == "out":
                raise AssertionError(f"server exited before printing {needle!r}: {''.join(seen)}")
            continue
        seen.append(line)
        if needle in line:
            return line


def test_serve_command_answers_the_sdk_and_stops_on_ctrl_c(tiny_llama_dir):
    proc, lines = _spawn("--model", str(tiny_llama_dir), "--port", "0", "--api-key", "k1",
                         "--served-model-name", "demo")
    try:
        line = _wait_for(lines, "serving demo on ")
        base_url = line.split(" on ", 1)[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key="k1", max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}],
                                                max_tokens=5, temperature=0, stream=True)
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert httpx.get(base_url.removesuffix("/v1") + "/v1/models").status_code == 401  # key required
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_busy_port_with_one_line(tiny_llama_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc, lines = _spawn("--model", str(tiny_llama_dir), "--port", str(port))
        try:
            assert proc.wait(timeout=TIMEOUT_S) == 2
        finally:
            if proc.poll() is None:
                proc.kill()
    err, open_streams = [], 2
    while open_streams:
        tag, line = lines.get(timeout=TIMEOUT_S)
        if line is None:
            open_streams -= 1
        elif tag == "err":
            err.append(line)
    assert any(f"cannot listen on 127.0.0.1:{port}" in line for line in err), err
