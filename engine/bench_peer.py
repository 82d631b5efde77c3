"""The peers of `workbench bench` (transformers generate(), assisted generation) in a process of
their own: two torch threads in one process slow each other (each keeps its own OpenMP team),
so a peer measured beside the engine thread would be measured unfairly.

Protocol: one JSON object per line on stdin, one answer per line on stdout.
  {"op": "load", "model": M, "device": D, "dtype": T, "threads": N, "draft": M2 | null}
  {"op": "generate", "prompts": [[ids]], "lengths": [n], "assisted": bool, "k": 4}
  {"op": "quit"}
Answers: {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

SETTLE_S = 0.3


def _serve() -> None:
    import torch

    from engine.bench import hf_generate
    from engine.config import DeviceKind, DType, ModelSpec
    from engine.metrics import process_rss_bytes
    from engine.models import load_model

    target = draft = None
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            if cmd["op"] == "load":
                torch.set_num_threads(int(cmd["threads"]))
                spec = ModelSpec(cmd["model"], device=DeviceKind(cmd["device"]), dtype=DType(cmd["dtype"]))
                target = load_model(spec)
                draft = None
                if cmd.get("draft"):
                    draft = load_model(ModelSpec(cmd["draft"], device=spec.device, dtype=spec.dtype))
                answer = {"ok": True, "weights_bytes": target.info.weights_bytes,
                          "draft_weights_bytes": draft.info.weights_bytes if draft else 0}
            elif cmd["op"] == "generate":
                assistant = draft.model if cmd.get("assisted") else None
                outs, wall = hf_generate(target.model, cmd["prompts"], cmd["lengths"], target.tokenizer.pad_token_id,
                                         assistant_model=assistant, num_assistant_tokens=cmd.get("k"))
                answer = {"ok": True, "outputs": outs, "wall_s": wall, "rss_bytes": process_rss_bytes()}
            else:
                answer = {"ok": False, "error": f"unknown op {cmd['op']!r}"}
        except Exception as exc:  # noqa: BLE001 - report to the parent, keep serving
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class PeerProcess:
    """Handle on a peer worker process (see the module docstring)."""

    def __init__(self) -> None:
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        self._proc = subprocess.Popen([sys.executable, "-m", "engine.bench_peer"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.loaded: dict = {}  # the answer to the last "load"

    def call(self, **cmd) -> dict:
        """Run one command. Between commands the peer is stopped (SIGSTOP): an idle torch
        process's OpenMP threads keep spinning and took ~18 % of the engine's speed here."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        if cmd.get("op") == "generate":
            time.sleep(SETTLE_S)  # and let this process's own OpenMP threads go idle first
        self._signal(signal.SIGCONT)
        self._proc.stdin.write(json.dumps(cmd) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if cmd.get("op") != "quit":
            self._signal(signal.SIGSTOP)
        if not line:
            raise RuntimeError("the peer process ended unexpectedly")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"peer: {answer.get('error')}")
        if cmd.get("op") == "load":
            self.loaded = answer
        return answer

    def _signal(self, sig) -> None:
        if self._proc.poll() is None and hasattr(signal, "SIGSTOP"):
            os.kill(self._proc.pid, sig)

    def close(self) -> None:
        self._signal(signal.SIGCONT)
        if self._proc.poll() is None:
            try:
                self.call(op="quit")
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def __enter__(self) -> "PeerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
