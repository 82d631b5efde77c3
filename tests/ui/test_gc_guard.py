"""ui/gc_guard.py: automatic collection off, collections happen on the GUI thread's timer."""

from __future__ import annotations

import gc

from ui.gc_guard import GuiThreadGarbageCollector


def test_gc_guard_collects_on_the_gui_thread(qtbot):
    enabled_before = gc.isenabled()
    guard = GuiThreadGarbageCollector(interval_ms=10)
    guard.start()
    try:
        assert not gc.isenabled()
        cycles = []
        for _ in range(5000):  # enough allocations to pass the first generation's threshold
            a: list = []
            a.append(a)
            cycles.append(a)
        cycles.clear()
        qtbot.waitUntil(lambda: guard.collections > 0, timeout=5000)
    finally:
        guard.stop()
    assert gc.isenabled() == enabled_before
