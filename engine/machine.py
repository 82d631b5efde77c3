"""What machine a figure was measured on: one probe for the bench, the demo recipe and the views."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread inside the block (its thread count is global; restored after). For
    work on a thread other than the engine's: a parallel region run there leaves an OpenMP team
    behind that slowed the engine thread's later steps by up to half (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_read_bandwidth(num_bytes: int = 256 << 20, repeats: int = 5) -> float:
    """Bytes per second this machine reads from memory with torch's threads: the best of a few
    sums over a buffer far larger than any cache (the decode roofline's denominator). Measured
    in a child process: a parallel region run on this process's main thread leaves an OpenMP
    team behind that slowed the engine thread's steps by a third afterwards (230 -> 155 tok/s
    measured on the bundled target)."""
    import subprocess
    import sys

    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
            "from engine.machine import _read_bandwidth_here; "
            "print(_read_bandwidth_here(int(sys.argv[2]), int(sys.argv[3])))")
    root = str(Path(__file__).resolve().parent.parent)
    run = subprocess.run([sys.executable, "-c", code, str(torch.get_num_threads()), str(num_bytes), str(repeats)],
                         capture_output=True, text=True, timeout=120, cwd=root)
    if run.returncode != 0:
        raise RuntimeError(f"bandwidth probe failed: {run.stderr.strip()[-300:]}")
    return float(run.stdout.strip().splitlines()[-1])


def _read_bandwidth_here(num_bytes: int, repeats: int) -> float:
    """The faster of two reads of a buffer far past the caches, best of `repeats` each: torch's
    sum and, where our kernel builds, its read loop, which reads as the products do (so they
    cannot beat the probe by reading differently; here both read ~50 GB/s). Interleaved, so a
    slow moment of a shared machine hits both."""
    from engine.fastpath import kernels

    buf = torch.ones(num_bytes // 4, dtype=torch.float32)
    reads = [lambda: buf.sum()]
    if kernels.available():
        reads.append(lambda: kernels.read_sum(buf))
    for read in reads:
        read()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        for read in reads:
            t0 = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - t0)
    return num_bytes / best


def machine_info(device: str | torch.device = "cpu", *, bandwidth: bool = False) -> dict:
    """Plain values that make a figure reproducible: CPU, cores, threads used, versions, GPU."""
    import transformers

    from engine.quant import bitsandbytes_version

    mem = None
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes_version(),
        "device": str(device),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if bandwidth:
        info["read_bandwidth_bytes_per_s"] = measure_read_bandwidth()
    return info
