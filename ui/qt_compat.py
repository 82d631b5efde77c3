"""Work-arounds for known faults of the Qt binding, applied once at start-up by the composition root.

PySide6-Essentials 6.12.0 on Python 3.11 (where None is not yet immortal) drops a reference to
None on every call of a void method; a GUI makes thousands of such calls a second, so the process
aborts with "Fatal Python error: none_dealloc" (or crashes in a later garbage collection) within
seconds to minutes. PySide6 6.11.x and Python >= 3.12 are fine; pinning the binding is the real fix.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject

_SPARE_NONE_REFS = 1 << 40
_applied = {"none_refcount": False}


def pyside_leaks_none(probe_calls: int = 64) -> bool:
    """True when this binding drops a reference to None on each void call."""
    if sys.version_info >= (3, 12):
        return False
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(probe_calls):
        probe.setObjectName("none_refcount_probe")
    return sys.getrefcount(None) - before <= -probe_calls // 2


def apply_workarounds() -> list[str]:
    """Apply what this binding needs (idempotent); returns the names of what was applied."""
    applied = []
    if not _applied["none_refcount"] and pyside_leaks_none():
        # None is never deallocated on a healthy interpreter: spare references change nothing else
        ctypes.c_ssize_t.from_address(id(None)).value += _SPARE_NONE_REFS
        _applied["none_refcount"] = True
        applied.append("none_refcount")
    return applied
