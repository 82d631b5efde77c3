"""Screenshots of the Tune, Timeline and Memory tabs on the bundled pair, on real content:
Tune shows a saved sweep (`workbench tune --grid quick --json F`), Timeline and Memory are taken
while the load generator runs (continuous batching on, n-gram speculation switched on half-way).

    workbench tune --grid quick --json tune-quick.json
    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/inside_screenshot.py --tune-json tune-quick.json

Conversations and settings go to a temporary data dir, so your own history is never touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SETTLE_MS = 900


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tune-json", required=True, help="results of `workbench tune --json F`")
    p.add_argument("--out-dir", default="docs")
    p.add_argument("--size", default="1440x900")
    p.add_argument("--theme", choices=["light", "dark"], default="light")
    p.add_argument("--load-s", type=float, default=12.0, help="seconds of load before the timeline shot")
    p.add_argument("--timeout-s", type=float, default=300.0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="workbench-shot-"))
    os.environ["WORKBENCH_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QWidget

    from app import paths
    from app.gui import add_views, bundled_model_names
    from app.storage import ConversationStore
    from engine.config import SpeculativeConfig, SpeculativeMode
    from engine.engine import Engine
    from engine.loadgen import LoadSpec
    from ui.bridge import EngineBridge
    from ui.main_window import MainWindow
    from ui.qt_compat import apply_workarounds
    from ui.settings_store import WorkbenchSettings, default_settings
    from ui.theme import ThemeMode

    apply_workarounds()
    target, draft = Path(os.path.relpath(paths.bundled_target_dir())), Path(os.path.relpath(paths.bundled_draft_dir()))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = WorkbenchSettings(default_settings(data_dir))
    settings.set_theme_mode(ThemeMode(args.theme))
    bridge = EngineBridge(Engine(str(target), collect_garbage=False))
    store = ConversationStore()
    window = MainWindow(bridge, store, settings=settings, bundled_target=target, bundled_draft=draft,
                        model_names=bundled_model_names())
    add_views(window, bridge, str(target), str(draft))
    w, h = (int(x) for x in args.size.lower().split("x"))
    window.resize(w, h)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tune = window.findChild(QWidget, "tune_view")
    timeline = window.findChild(QWidget, "timeline_view")
    memory = window.findChild(QWidget, "memory_view")
    dash = window.findChild(QWidget, "dashboard_view")
    result = {"code": 0}

    def tab(title: str) -> None:
        tabs = window.tabs
        tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == title))

    def grab(name: str) -> None:
        path = out / name
        if window.grab().save(str(path)):
            print(f"saved {path}")
        else:
            print(f"could not write {path}", file=sys.stderr)
            result["code"] = 1

    def finish() -> None:
        dash.loadgen.stop()
        print(window.probe.summary().describe())
        window.close()
        app.quit()

    def shot_tune() -> None:
        tab("Tune")
        tune.load_results(args.tune_json)
        QTimer.singleShot(SETTLE_MS, lambda: (grab("tune.png"), start_load()))

    def start_load() -> None:
        dash.loadgen.start(LoadSpec(users=4, rate_per_s=3.0, min_new_tokens=16, max_new_tokens=96))
        tab("Timeline")
        spec = bridge.config.with_(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=4))
        QTimer.singleShot(int(args.load_s * 600), lambda: window.engine_panel.apply_config(spec))
        QTimer.singleShot(int(args.load_s * 1000), shot_timeline)

    def shot_timeline() -> None:
        timeline.window_combo.setCurrentIndex(timeline.window_combo.findText("last 10 s"))
        timeline.set_paused(True)
        canvas = timeline.canvas
        steps = timeline.recorder.visible(canvas.x0, canvas.x1)
        if steps:
            busiest = max(steps[len(steps) // 3:], key=lambda s: (s.batch_size, s.wall_s))
            canvas.selected_step = busiest
            timeline._on_step_clicked(busiest)
        QTimer.singleShot(SETTLE_MS, lambda: (grab("timeline.png"), shot_memory()))

    def shot_memory() -> None:
        tab("Memory")
        memory.range_combo.setCurrentIndex(memory.range_combo.findData("held"))
        memory.batch_spin.setValue(4)
        QTimer.singleShot(SETTLE_MS * 3, lambda: (grab("memory.png"), finish()))

    def on_loaded(_info) -> None:
        bridge.model_loaded.disconnect(on_loaded)
        QTimer.singleShot(300, shot_tune)

    def on_timeout() -> None:
        print("timed out", file=sys.stderr)
        result["code"] = 1
        finish()

    bridge.model_loaded.connect(on_loaded)
    QTimer.singleShot(int(args.timeout_s * 1000), on_timeout)
    window.show()
    bridge.start()
    app.exec()
    store.close()
    return result["code"]


if __name__ == "__main__":
    raise SystemExit(main())
