"""Argument types and a parser that refuse bad CLI input with one line and exit code 2."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; a bad value needs one clear line."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
    """Refuse input found bad after parsing: one line on stderr, exit code 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def int_range(lo: int | None = None, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if lo is not None and value < lo or hi is not None and value > hi:
            bounds = (f"between {lo} and {hi}" if lo is not None and hi is not None
                      else f"at least {lo}" if lo is not None else f"at most {hi}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            left = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"must be in {left}{lo:g}, {hi:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


def non_empty(text: str) -> str:
    if text == "":
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def check_writable(prog: str, path: str | None) -> None:
    """Refuse an output path that cannot be written before hours of work are lost to it."""
    if not path:
        return
    target = Path(path).expanduser()
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        fail(prog, f"{path} is a directory; give a file name")
    if not parent.is_dir():
        fail(prog, f"cannot write {path}: the folder {parent} does not exist")
    if target.exists() and not os.access(target, os.W_OK) or not target.exists() and not os.access(parent, os.W_OK):
        fail(prog, f"cannot write {path}: permission denied")


def check_device(prog: str, device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            fail(prog, "--device cuda: no CUDA device is available here (use --device cpu or auto)")
    elif device == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            fail(prog, "--device mps: no Apple GPU (MPS) is available here (use --device cpu or auto)")
