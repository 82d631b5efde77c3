"""What does the live dashboard cost the engine? Same load, headless vs dashboard visible.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/dashboard_overhead.py

One process, one model (a tiny random Llama, 4 layers x 128 wide, unless --model), one load:
--requests requests from --users simulated users arriving as fast as a user is free, output
lengths drawn from a fixed seed, so every run generates the same tokens. Modes, alternated
--repeats times after a warm-up run (order rotates so drift hits every mode alike):

- headless:  the engine's event queue read on the main thread, no Qt event loop at all;
- bridge:    EngineBridge draining events on the Qt event loop, no view (the app's floor);
- dashboard: the DashboardView shown, recording every event and redrawing at 4 Hz.

Throughput = completion tokens / (last finish - first submit), all from the engine's own
request timestamps. On a shared machine that figure swings with other processes, so the tool
also reports CPU time per 1,000 tokens (the whole process, and the GUI thread alone) from the
load's start to its last finish: what the dashboard adds there does not depend on neighbours.
Prints each run, per-mode medians, the median of the per-repeat ratios dashboard / headless,
and the CPU cost ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODES = ("headless", "bridge", "dashboard")


@dataclass(frozen=True)
class Run:
    tokens_per_s: float
    tokens: int
    cpu_s: float  # process CPU time from the load's start to its last finish
    gui_cpu_s: float  # the main (GUI) thread's share of it

    @property
    def cpu_ms_per_k_tokens(self) -> float:
        return self.cpu_s / self.tokens * 1e6

    @property
    def gui_ms_per_k_tokens(self) -> float:
        return self.gui_cpu_s / self.tokens * 1e6


class CpuClock:
    def __init__(self) -> None:
        self.start = self.end = (0.0, 0.0)

    @staticmethod
    def now() -> tuple[float, float]:
        return time.process_time(), time.thread_time()  # call on the main thread

    def begin(self) -> None:
        self.start = self.now()

    def stop(self) -> None:
        self.end = self.now()

    def spent(self) -> tuple[float, float]:
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir (default: a tiny random Llama, 4 layers x 128)")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--min-tokens", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads for the engine (1 = steadier figures on a shared machine)")
    p.add_argument("--timeout-s", type=float, default=300.0)
    return p.parse_args(argv)


def summarise(finished, clock: CpuClock) -> Run:
    tokens = sum(f.stats.completion_tokens for f in finished)
    span = max(f.stats.finished_s for f in finished) - min(f.stats.submitted_s for f in finished)
    cpu, gui = clock.spent()
    return Run(tokens / span, tokens, cpu, gui)


def run_headless(model: str, spec, timeout_s: float, clock: CpuClock) -> list:
    from engine import events as ev
    from engine.engine import Engine
    from engine.loadgen import LoadGenerator

    engine = Engine(model).start()
    try:
        while True:
            event = engine.events.get(timeout=timeout_s)
            if isinstance(event, ev.ModelLoaded):
                break
            if isinstance(event, ev.EngineErrorEvent):
                raise RuntimeError(f"the model did not load: {event.message}")
        gen = LoadGenerator(engine.submit, spec)
        finished = []
        clock.begin()
        gen.start()
        while len(finished) < spec.max_requests:
            try:
                event = engine.events.get(timeout=timeout_s)
            except queue.Empty as exc:
                raise TimeoutError("headless run stalled") from exc
            if isinstance(event, ev.RequestFinished):
                gen.notify_finished(event.request_id)
                finished.append(event)
        clock.stop()
        gen.stop()
        return finished
    finally:
        engine.shutdown()


def run_qt(model: str, spec, timeout_s: float, with_view: bool, clock: CpuClock) -> list:
    from PySide6.QtCore import QCoreApplication, QEvent, QEventLoop, QTimer

    from engine.engine import Engine
    from engine.loadgen import LoadGenerator
    from ui.bridge import EngineBridge
    from ui.dashboard_view import DashboardView
    from ui.gc_guard import GuiThreadGarbageCollector

    collector = GuiThreadGarbageCollector()  # as in app/gui.py: Python's GC on the GUI thread only
    collector.start()
    bridge = EngineBridge(Engine(model, collect_garbage=False))
    view = None
    finished = []
    loop = QEventLoop()
    state = {"gen": None, "timed_out": False}

    def on_loaded(_info) -> None:
        clock.begin()
        if view is not None:
            view.loadgen.start(spec)  # the panel's own wiring: bridge.submit + notify_finished
        else:
            state["gen"] = LoadGenerator(bridge.submit, spec)
            state["gen"].start()

    def on_finished(event) -> None:
        if state["gen"] is not None:
            state["gen"].notify_finished(event.request_id)
        finished.append(event)
        if len(finished) >= spec.max_requests:
            clock.stop()
            loop.quit()

    def on_timeout() -> None:
        state["timed_out"] = True
        loop.quit()

    if with_view:
        from PySide6.QtTest import QTest
        from PySide6.QtWidgets import QApplication

        view = DashboardView(bridge)
        view.resize(1600, 1000)
        view.show()
        QTest.qWaitForWindowExposed(view)  # the first layout and paint are not part of the run
        QApplication.processEvents()
    bridge.model_loaded.connect(on_loaded)
    bridge.request_finished.connect(on_finished)
    watchdog = QTimer(singleShot=True, interval=int(timeout_s * 1000))
    watchdog.timeout.connect(on_timeout)
    watchdog.start()
    bridge.start()
    loop.exec()
    watchdog.stop()
    if view is not None:
        assert view.redraw_count > 0, "the dashboard never redrew: is it visible?"
        view.shutdown()
        view.close()
        view.deleteLater()
    if state["gen"] is not None:
        state["gen"].stop()
    bridge.shutdown()
    collector.stop()
    # finalise this run's Qt objects here, on the GUI thread, before a headless run lets the
    # interpreter collect on whatever thread allocates
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
    if state["timed_out"]:
        raise TimeoutError("Qt run stalled")
    return finished


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    from engine.loadgen import DEFAULT_PROMPTS, LoadSpec
    from ui.qt_compat import apply_workarounds
    from ui.theme import ThemeManager, ThemeMode

    apply_workarounds()  # see ui/qt_compat.py
    import torch

    torch.set_num_threads(args.torch_threads)
    model = args.model
    if model is None:
        from tests.helpers.tiny_models import build_llama

        model = str(build_llama(Path(tempfile.mkdtemp(prefix="dashboard-overhead-")) / "tiny-llama", layers=4,
                                hidden=128))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    ThemeManager(ThemeMode.LIGHT).apply()
    spec = LoadSpec(users=args.users, rate_per_s=1000.0, min_new_tokens=args.min_tokens,
                    max_new_tokens=args.max_tokens, prompts=DEFAULT_PROMPTS, seed=1234,
                    max_requests=args.requests)

    def run(mode: str) -> Run:
        clock = CpuClock()
        if mode == "headless":
            done = run_headless(model, spec, args.timeout_s, clock)
        else:
            done = run_qt(model, spec, args.timeout_s, mode == "dashboard", clock)
        app.processEvents()
        return summarise(done, clock)

    modes = tuple(m for m in MODES if m in args.modes.split(","))
    run("headless")  # warm-up: first-time allocations and kernel selection, not measured
    results: dict[str, list[Run]] = {m: [] for m in modes}
    for r in range(args.repeats):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        for mode in order:
            result = run(mode)
            results[mode].append(result)
            print(f"run {r + 1}  {mode:9s}  {result.tokens_per_s:7.1f} tok/s   cpu {result.cpu_ms_per_k_tokens:6.0f} ms"
                  f" per 1k tokens (GUI thread {result.gui_ms_per_k_tokens:5.0f})   {result.tokens} tokens", flush=True)
    print()
    for m in modes:
        runs = results[m]
        print(f"median {m:9s}  {statistics.median(x.tokens_per_s for x in runs):7.1f} tok/s   "
              f"cpu {statistics.median(x.cpu_ms_per_k_tokens for x in runs):6.0f} ms per 1k tokens "
              f"(GUI thread {statistics.median(x.gui_ms_per_k_tokens for x in runs):5.0f})")
    for a, b in (("dashboard", "headless"), ("dashboard", "bridge"), ("bridge", "headless")):
        if a in results and b in results:
            paired = [x.tokens_per_s / y.tokens_per_s for x, y in zip(results[a], results[b])]
            cpu = (statistics.median(x.cpu_ms_per_k_tokens for x in results[a])
                   / statistics.median(y.cpu_ms_per_k_tokens for y in results[b]))
            print(f"ratio {a} / {b}: throughput {statistics.median(paired):.3f} "
                  f"(per-repeat {', '.join(f'{p:.2f}' for p in paired)}), CPU per token {cpu:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
