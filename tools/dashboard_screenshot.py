"""Screenshot the live dashboard under load, with a batching change and speculation turned on.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/dashboard_screenshot.py

Uses assets/models/target (+ assets/models/draft for draft-model speculation) when bundled,
else a tiny random Llama built in a temporary directory (n-gram speculation). Timeline:
load starts at 0 s, batching goes off at --phase s, speculation goes on at 2 x --phase s,
the window is grabbed at 3 x --phase s. No sleeps: everything runs on Qt timers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir (default: the bundled target, else a tiny random model)")
    p.add_argument("--draft", help="draft model dir for draft-model speculation (default: the bundled draft)")
    p.add_argument("--out", default="docs/dashboard.png")
    p.add_argument("--theme", choices=["light", "dark"], default="light")
    p.add_argument("--size", default="1600x1000", help="window size WxH")
    p.add_argument("--phase", type=float, default=10.0, help="seconds per phase")
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--rate", type=float, default=6.0)
    p.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="intra-op threads for the engine: leave a core to the GUI thread (default: cores - 1); "
                        "on a small machine torch's default of all cores stalls against the GUI")
    p.add_argument("--window", default="All", help="time window to show: 30 s | 2 min | 10 min | All")
    p.add_argument("--hover", type=float, default=0.55,
                   help="put the mouse over the throughput chart at this fraction of its width (<0: no hover)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import paths
    from engine.config import BatchingConfig, SpeculativeConfig, SpeculativeMode
    from engine.engine import Engine
    from engine.loadgen import LoadSpec
    from ui.bridge import EngineBridge
    from ui.dashboard_view import DashboardView
    from ui.gc_guard import GuiThreadGarbageCollector
    from ui.loadgen_panel import PROMPT_SETS
    from ui.qt_compat import apply_workarounds
    from ui.theme import DARK, LIGHT, ThemeManager, ThemeMode

    model, draft = args.model, args.draft
    if model is None and paths.bundled_models_present():
        model = str(paths.bundled_target_dir())
        if draft is None and (paths.bundled_draft_dir() / "config.json").is_file():
            draft = str(paths.bundled_draft_dir())
    if model is None:
        from tests.helpers.tiny_models import build_llama

        model = str(build_llama(Path(tempfile.mkdtemp(prefix="dashboard-shot-")) / "tiny-llama", layers=4,
                                hidden=128))

    apply_workarounds()  # see ui/qt_compat.py
    import torch

    torch.set_num_threads(args.torch_threads)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    collector = GuiThreadGarbageCollector(app)  # as the app does: Python's GC on the GUI thread only
    collector.start()
    themes = ThemeManager(ThemeMode.DARK if args.theme == "dark" else ThemeMode.LIGHT)
    theme = themes.apply()
    bridge = EngineBridge(Engine(model, collect_garbage=False))
    view = DashboardView(bridge, theme=theme)
    view.setWindowTitle("Inference Workbench — Dashboard")
    w, h = (int(x) for x in args.size.lower().split("x"))
    view.resize(w, h)
    index = view.window_combo.findText(args.window)
    view.window_combo.setCurrentIndex(index if index >= 0 else view.window_combo.count() - 1)
    view.loadgen.users_spin.setValue(args.users)
    view.loadgen.rate_spin.setValue(args.rate)
    # n-gram lookup needs repetition to find; a draft model speaks the target's language
    prompt_set = "short" if draft else "repetitive"
    view.loadgen.prompts_combo.setCurrentIndex(view.loadgen.prompts_combo.findData(prompt_set))
    view.show()
    bridge.start()
    if args.theme == "dark":
        view.set_theme(DARK)
    else:
        view.set_theme(LIGHT)
    result = {"rc": 1}

    def on_loaded(_info) -> None:
        view.loadgen.start(LoadSpec(users=args.users, rate_per_s=args.rate, min_new_tokens=24, max_new_tokens=96,
                                    prompts=PROMPT_SETS[prompt_set][1]))
        QTimer.singleShot(int(args.phase * 1000), batching_off)

    def batching_off() -> None:
        config = bridge.config
        bridge.reconfigure(config.with_(batching=BatchingConfig(enabled=False,
                                                                max_batch_size=config.batching.max_batch_size)))
        QTimer.singleShot(int(args.phase * 1000), speculation_on)

    def speculation_on() -> None:
        config = bridge.config
        if draft:
            spec = SpeculativeConfig(mode=SpeculativeMode.DRAFT, draft_model=draft, num_draft_tokens=4)
        else:
            spec = SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=4)
        bridge.reconfigure(config.with_(speculative=spec))
        QTimer.singleShot(int(args.phase * 1000), grab)

    def grab() -> None:
        view.redraw(force=True)
        if args.hover >= 0:
            from PySide6.QtCore import QPoint
            from PySide6.QtTest import QTest

            viewport = view.time_charts[0].plot_widget.viewport()
            QTest.mouseMove(viewport, QPoint(int(viewport.width() * args.hover), viewport.height() // 2))
            app.processEvents()
        out = Path(args.out)
        if not out.is_absolute():
            out = REPO_ROOT / out
        out.parent.mkdir(parents=True, exist_ok=True)
        ok = view.grab().save(str(out), "PNG")
        shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
        m = view.model
        print(f"{'saved' if ok else 'FAILED to save'} {shown}  ({len(m.steps)} steps, {m.num_finished} requests, "
              f"{len(m.markers)} markers)")
        result["rc"] = 0 if ok else 1
        view.shutdown()
        bridge.shutdown()
        app.quit()

    def on_error(event) -> None:
        print(f"engine error ({event.where}): {event.message}", file=sys.stderr)

    bridge.model_loaded.connect(on_loaded)
    bridge.error_occurred.connect(on_error)
    QTimer.singleShot(int((args.phase * 3 + 120) * 1000), app.quit)  # a hard stop if the model never loads
    app.exec()
    return result["rc"]


if __name__ == "__main__":
    raise SystemExit(main())
