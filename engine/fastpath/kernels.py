"""Our native CPU kernels (gemv.c): small-batch products of float32 rows with [out, in] weights,
attention of a few queries per row over the float32 cache, and a whole decode forward.

On a CPU a decode step is a read of every weight; torch's kernels read a Linear's weight at
~10-27 GB/s at batch 1 here, below what the machine can stream (~45 GB/s). gemv.c reads it at
close to that, for float32, float16 and bfloat16 weights, and keeps the speed for a few rows
(batched decode, verification). It is compiled on first use with the system C compiler for
this CPU (-march=native) into a per-user cache; without a compiler or AVX-512 the fast forward
keeps torch's products (`unavailable_reason()` says why). WORKBENCH_KERNELS=0 turns it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("gemv.c")
# up to a 512-token prefill chunk; measured here against torch's products on the bundled target's
# 8 layers: 1 row 2.4 vs 4.6 ms, 32 rows 8.4 vs 13.2, 128 rows 23 vs 42, 512 rows 91 vs 138 (float32)
MAX_ROWS = 512
_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_LOCK = threading.Lock()
_state: dict = {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inference-workbench" / "kernels"


def _library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes() + platform.machine().encode() +
                            _cpu_flags().encode()).hexdigest()[:16]
    return cache_dir() / f"gemv-{digest}.so"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler (cc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o", str(out)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            first = (run.stderr.strip().splitlines() or ["failed"])[0]
            raise RuntimeError(f"could not compile the kernel: {first[:200]}")
        os.replace(out, target)  # atomic: a second process never loads a half-written library


def _load():
    if os.environ.get("WORKBENCH_KERNELS", "1") == "0":
        raise RuntimeError("turned off (WORKBENCH_KERNELS=0)")
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"no kernel for {platform.machine()}")
    if "avx512f" not in _cpu_flags():
        raise RuntimeError("this CPU has no AVX-512")
    path = _library_path()
    if not path.exists():
        _build(path)
    # torch is imported (it loaded its libgomp.so.1): the library's libgomp.so.1 resolves to
    # that copy, so both run on one OpenMP team
    lib = ctypes.CDLL(str(path))
    i, i64, f, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    signatures = {
        "wb_linear": ([i, i, i, i, ptr, ptr, ptr, i], i),
        "wb_linear_q4": ([i, i, i, ptr, ptr, ptr, ptr, i, ptr, ptr, i], i),
        "wb_linear_i8": ([i, i, i, ptr, ptr, ptr, ptr, i], i),
        "wb_attention": ([i] * 6 + [f] + [ptr, i64, i64, i64] * 3 + [ptr, ptr, ptr, i, i], i),
        "wb_decode_work": ([i] * 8, i64),
        "wb_decode": ([i, i, ptr] + [i] * 8 + [f, f, ptr, ptr, ptr, ptr, ptr, i, i], i),
        "wb_greedy_steps": ([i, i, ptr] + [i] * 7 + [f, f, ptr, ptr, ptr, i, ptr, i, ptr, f, ptr, i, i, ptr, i, i], i),
        "wb_read_sum": ([ptr, i64, i], ctypes.c_double),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


def _get():
    """The loaded library, or None (the reason in _state["error"]); built and loaded once."""
    lib = _state.get("lib")
    if lib is not None or "error" in _state:
        return lib
    with _LOCK:
        if "lib" not in _state and "error" not in _state:
            try:
                _state["lib"] = _load()
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _state["error"] = str(e)
        return _state.get("lib")


def _require():
    lib = _get()
    if lib is None:
        raise RuntimeError(f"the kernel is unavailable: {_state.get('error')}")
    return lib


def available() -> bool:
    return _get() is not None


def unavailable_reason() -> str | None:
    return None if _get() is not None else _state.get("error")


Q4_KIND = 3  # wb_decode's kind for 4-bit weights


@dataclass(frozen=True, eq=False)
class Q4Weight:
    """A 4-bit weight in bitsandbytes' layout (nf4 or fp4), as gemv.c's wb_linear_q4 reads it:
    W[n, k] = code[q] * absmax[(n * K + k) // blocksize], q the 4-bit index of element n * K + k,
    two per byte in row-major order, the even element in the high nibble."""

    packed: torch.Tensor  # uint8 [N * K / 2], contiguous
    absmax: torch.Tensor  # float32 [N * K / blocksize], contiguous
    code: torch.Tensor  # float32 [16]: the value of each 4-bit index
    shape: tuple[int, int]  # (N, K) = (out, in)
    blocksize: int

    def data_ptr(self) -> int:
        return self.packed.data_ptr()

    def dequantised(self) -> torch.Tensor:
        """The float32 [N, K] matrix this weight stands for (tests, reference arithmetic)."""
        idx = torch.stack([self.packed >> 4, self.packed & 15], dim=1).reshape(-1).long()
        values = self.code[idx].view(-1, self.blocksize) * self.absmax.view(-1, 1)
        return values.view(self.shape)


I8_KIND = 4  # wb_decode's kind for 8-bit weights


@dataclass(frozen=True, eq=False)
class I8Weight:
    """An 8-bit weight in bitsandbytes' layout: W[n, k] = data[n, k] * scale[n] (int8 rows,
    scale = SCB / 127), as gemv.c's wb_linear_i8 reads it."""

    data: torch.Tensor  # int8 [N, K], contiguous
    scale: torch.Tensor  # float32 [N]
    shape: tuple[int, int]

    def data_ptr(self) -> int:
        return self.data.data_ptr()

    def dequantised(self) -> torch.Tensor:
        return self.data.float() * self.scale[:, None]


def kind_of(weight) -> int:
    if isinstance(weight, Q4Weight):
        return Q4_KIND
    if isinstance(weight, I8Weight):
        return I8_KIND
    return _KINDS[weight.dtype]


def supports(weight) -> bool:
    """Whether linear() takes this weight: a contiguous [out, in] CPU matrix with in % 16 == 0,
    or a 4-bit one whose rows are whole blocks of a multiple of 32 values."""
    if isinstance(weight, I8Weight):
        n, k = weight.shape
        return (weight.data.device.type == "cpu" and weight.data.dtype is torch.int8 and weight.data.is_contiguous()
                and tuple(weight.data.shape) == (n, k) and k % 16 == 0 and weight.scale.numel() == n
                and weight.scale.dtype is torch.float32 and weight.scale.is_contiguous())
    if isinstance(weight, Q4Weight):
        n, k = weight.shape
        return (weight.packed.device.type == "cpu" and weight.code.numel() == 16 and weight.blocksize % 32 == 0
                and k % weight.blocksize == 0 and weight.packed.numel() * 2 == n * k
                and weight.absmax.numel() * weight.blocksize == n * k)
    return (weight.device.type == "cpu" and weight.dtype in _KINDS and weight.dim() == 2
            and weight.is_contiguous() and weight.shape[1] % 16 == 0)


def read_sum(buf: torch.Tensor) -> float:
    """The sum of a contiguous float32 CPU tensor, read as the products stream weights (gemv.c
    wb_read_sum): the read-bandwidth probe of the decode roofline."""
    if buf.dtype is not torch.float32 or not buf.is_contiguous() or buf.device.type != "cpu":
        raise ValueError("read_sum takes a contiguous float32 CPU tensor")
    return float(_require().wb_read_sum(buf.data_ptr(), buf.numel(), torch.get_num_threads()))


def linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] (any float dtype) -> float32 [..., out] = x . weight^T + bias; weight a
    tensor, a Q4Weight or an I8Weight."""
    lib = _require()
    n, k = weight.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.dtype is not torch.float32 or not x2.is_contiguous():
        x2 = x2.to(torch.float32).contiguous()
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=torch.float32)
    threads = torch.get_num_threads()
    if isinstance(weight, Q4Weight):
        scratch = torch.empty(m * k, dtype=torch.float32)
        rc = lib.wb_linear_q4(m, k, n, x2.data_ptr(), weight.packed.data_ptr(), weight.absmax.data_ptr(),
                              weight.code.data_ptr(), weight.blocksize, y.data_ptr(), scratch.data_ptr(), threads)
    elif isinstance(weight, I8Weight):
        rc = lib.wb_linear_i8(m, k, n, x2.data_ptr(), weight.data.data_ptr(), weight.scale.data_ptr(), y.data_ptr(),
                              threads)
    else:
        rc = lib.wb_linear(_KINDS[weight.dtype], m, k, n, x2.data_ptr(), weight.data_ptr(), y.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"the kernel refused a [{m}, {k}] x [{n}, {k}] product")
    if bias is not None:
        y += bias
    return y.view(*lead, n)


KV_KINDS = {torch.float32: 0, torch.float16: 1}  # caches the native attention reads
ATTENTION_MAX_QUERIES = 128  # tokens per row of the native forward (decode, verification, a short
# prompt); longer prefill chunks keep torch's flash attention. A prompt of 20 tokens on the bundled
# target: 6.2 ms native vs 8.4 in the layer loop; 64 tokens 16.3 vs 18.8; 128 tokens 27.7 vs 31.7


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None,
              scale: float) -> torch.Tensor:
    """q [B, H, T, D] float32, keys/values [B, KVH, L, D] (float32 or float16, innermost
    contiguous), valid [B, L] uint8 or None -> [B, T, H, D] float32: causal attention of the last
    T positions over all L, holes masked; a query that sees no key gets zeros."""
    fn = _require().wb_attention
    b, h, t, d = q.shape
    kvh, length = keys.shape[1], keys.shape[2]
    for x in (q, keys, values):
        if x.stride(-1) != 1:
            raise ValueError("attention needs the innermost dimension contiguous")
    if keys.dtype != values.dtype or keys.dtype not in KV_KINDS or q.dtype is not torch.float32:
        raise ValueError("attention takes float32 queries over a float32 or float16 cache")
    if valid is not None:
        valid = valid.to(torch.uint8).contiguous()
    out = torch.empty((b, t, h, d), dtype=torch.float32)
    scratch = torch.empty(b * h * t * length, dtype=torch.float32)
    rc = fn(b, h, kvh, t, length, d, scale, q.data_ptr(), *q.stride()[:3], keys.data_ptr(), *keys.stride()[:3],
            values.data_ptr(), *values.stride()[:3], 0 if valid is None else valid.data_ptr(), out.data_ptr(),
            scratch.data_ptr(), KV_KINDS[keys.dtype], torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"the kernel refused attention of {tuple(q.shape)} over {tuple(keys.shape)}")
    return out


DECODE_TABLE_COLUMNS = 24  # gemv.c TABLE_COLS


def decode_layers(kind: int, table: torch.Tensor, x: torch.Tensor, *, batch: int, tokens: int, past: int,
                  hidden: int, heads: int, kv_heads: int, head_dim: int, inter: int, eps: float, scale: float,
                  cos: torch.Tensor, sin: torch.Tensor, valid: torch.Tensor | None,
                  kv_dtype: torch.dtype = torch.float32) -> None:
    """Every layer of a Llama-family decode forward in one call (gemv.c wb_decode), x [B*T,
    hidden] float32 updated in place; table [layers, DECODE_TABLE_COLUMNS] int64 as wb_decode
    documents (the caller keeps every tensor it points to alive); kind: kind_of(the weights)."""
    lib = _require()
    fn, work_size = lib.wb_decode, lib.wb_decode_work
    work = torch.empty(work_size(batch, tokens, past, hidden, heads, kv_heads, head_dim, inter), dtype=torch.float32)
    if table.shape[1] != DECODE_TABLE_COLUMNS:
        raise ValueError(f"the decode table needs {DECODE_TABLE_COLUMNS} columns")
    rc = fn(kind, table.shape[0], table.data_ptr(), batch, tokens, past, hidden, heads, kv_heads, head_dim,
            inter, eps, scale, cos.data_ptr(), sin.data_ptr(), 0 if valid is None else valid.data_ptr(),
            x.data_ptr(), work.data_ptr(), KV_KINDS[kv_dtype], torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"the decode kernel refused its arguments ({rc})")


def greedy_steps(kind: int, table: torch.Tensor, tokens: torch.Tensor, *, past: int, hidden: int, heads: int,
                 kv_heads: int, head_dim: int, inter: int, eps: float, scale: float, cos: torch.Tensor,
                 sin: torch.Tensor, valid: torch.Tensor | None, embed: torch.Tensor, final_norm: torch.Tensor,
                 final_eps: float, head: torch.Tensor, kv_dtype: torch.dtype = torch.float32) -> None:
    """Greedy decode steps in one call (gemv.c wb_greedy_steps): tokens [steps + 1, B] int64,
    row 0 given, rows 1.. filled in; cos/sin [steps, B, D]; valid [B, past + steps] uint8 or
    None; the cache (in `table`, room for `steps` more columns) gets every fed token's keys."""
    fn = _require().wb_greedy_steps
    steps, batch = tokens.shape[0] - 1, tokens.shape[1]
    if table.shape[1] != DECODE_TABLE_COLUMNS:
        raise ValueError(f"the decode table needs {DECODE_TABLE_COLUMNS} columns")
    for t, dt in ((tokens, torch.int64), (cos, torch.float32), (sin, torch.float32), (final_norm, torch.float32)):
        if t.dtype is not dt or not t.is_contiguous():
            raise ValueError("greedy_steps: a contiguous argument of the wrong dtype")
    rc = fn(kind, table.shape[0], table.data_ptr(), batch, past, hidden, heads, kv_heads, head_dim, inter, eps, scale,
            cos.data_ptr(), sin.data_ptr(), 0 if valid is None else valid.data_ptr(), steps, embed.data_ptr(),
            _KINDS[embed.dtype], final_norm.data_ptr(), final_eps, head.data_ptr(), _KINDS[head.dtype], head.shape[0],
            tokens.data_ptr(), KV_KINDS[kv_dtype], torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"the greedy kernel refused its arguments ({rc})")
