"""Screenshot the workbench window: load a model, optionally chat, grab the window to PNG.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot.py \
        --model assets/models/target --prompt "Who's there?" --out docs/chat.png

--panel-out also saves the engine panel alone. Conversations and settings go to a
temporary data dir unless --data-dir is given, so your own history is never touched.

--tour DIR takes the README's set in one run, on real content: a streamed chat answer, a
Compare run, the Dashboard under the load generator (with a setting changed mid-way), each tab
at 1280x720 and 1920x1080 in light and dark, and the engine panel alone (see TOUR_SHOTS):

    xvfb-run -a -s "-screen 0 1920x1080x24" python tools/screenshot.py --tour docs
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
    p.add_argument("--model", help="model dir or hub id (default: the bundled demo, else a tiny random model)")
    p.add_argument("--prompt", action="append", default=[], help="send this prompt (repeat for several turns)")
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--out", default="docs/chat.png")
    p.add_argument("--panel-out", default=None, help="also save the engine panel alone here")
    p.add_argument("--theme", choices=["light", "dark", "system"], default="light")
    p.add_argument("--size", default="1440x900", help="window size WxH")
    p.add_argument("--colour-tokens", action="store_true")
    p.add_argument("--expand-settings", action="store_true", help="open the generation settings section")
    p.add_argument("--config", default=None, help="JSON EngineConfig dict to apply before chatting")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--tour", default=None, metavar="DIR", help="take the README's screenshots into DIR")
    p.add_argument("--load-s", type=float, default=20.0, help="tour: seconds of load before the dashboard shots")
    return p.parse_args(argv)


# (file, tab, size, theme): every tab at both sizes, each in both themes across the set
TOUR_SHOTS = (
    ("dashboard-1280x720-light.png", "Dashboard", (1280, 720), "light"),
    ("dashboard-1920x1080-dark.png", "Dashboard", (1920, 1080), "dark"),
    ("chat-1280x720-dark.png", "Chat", (1280, 720), "dark"),
    ("chat-1920x1080-light.png", "Chat", (1920, 1080), "light"),
    ("compare-1280x720-light.png", "Compare", (1280, 720), "light"),
    ("compare-1920x1080-dark.png", "Compare", (1920, 1080), "dark"),
    ("engine-panel-light.png", "panel", (1920, 1080), "light"),
    ("engine-panel-dark.png", "panel", (1920, 1080), "dark"),
)
TOUR_CHAT = ("Good my lord, what news from the court?", "And what says the king?")
TOUR_COMPARE = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate:"
SETTLE_MS = 900  # after a resize, theme or tab change: layouts settle, the dashboard redraws (4 Hz)


class Tour:
    """Chat, then Compare, then load on the Dashboard, then the shots; each step starts on the
    signal that the previous one finished (no sleeps, only timers for the redraws to land)."""

    def __init__(self, app, window, bridge, out_dir: Path, load_s: float) -> None:
        from PySide6.QtWidgets import QWidget

        self.app, self.window, self.bridge, self.out_dir, self.load_s = app, window, bridge, out_dir, load_s
        self.compare = window.findChild(QWidget, "compare_view")
        self.dashboard = window.findChild(QWidget, "dashboard_view")
        self.shots = list(TOUR_SHOTS)
        self.saved: list[Path] = []

    def start(self) -> None:
        from PySide6.QtCore import QTimer

        self.window.resize(1920, 1080)
        self._tab("Chat")
        self.window.chat.settings.max_tokens.setValue(120)
        self.prompts = list(TOUR_CHAT)
        self.window.chat.generation_finished.connect(self._on_chat_done)
        QTimer.singleShot(300, lambda: self.window.chat.send(self.prompts.pop(0)))

    def _tab(self, title: str) -> None:
        tabs = self.window.tabs
        tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == title))

    def _on_chat_done(self, _event) -> None:
        from PySide6.QtCore import QTimer

        if self.prompts:  # the next turn of the conversation
            QTimer.singleShot(150, lambda: self.window.chat.send(self.prompts.pop(0)))
            return
        self.window.chat.generation_finished.disconnect(self._on_chat_done)
        view = self.compare
        self._tab("Compare")
        view.prompt_edit.setPlainText(TOUR_COMPARE)
        view.max_tokens_spin.setValue(48)
        view.warmup_check.setChecked(False)
        view.bridge.comparison_finished.connect(self._on_compare_done)
        view.run_button.click()

    def _on_compare_done(self, comp) -> None:
        from PySide6.QtCore import QTimer

        from engine.config import SpeculativeConfig, SpeculativeMode
        from engine.loadgen import LoadSpec

        self.compare.bridge.comparison_finished.disconnect(self._on_compare_done)
        print(f"compare: {'cancelled' if comp.cancelled else 'done'}; "
              + "; ".join(f"{r['column']} {r['tokens_per_s']}" for r in comp.summary_rows()))
        self._tab("Dashboard")
        dash = self.dashboard
        dash.window_combo.setCurrentIndex(dash.window_combo.findText("30 s"))
        dash.reset()  # the time axis starts with the load
        dash.loadgen.start(LoadSpec(users=4, rate_per_s=3.0, min_new_tokens=24, max_new_tokens=64))
        # half-way, switch speculative decoding on from the engine panel: a marker on every chart
        spec = self.bridge.config.with_(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=4))
        QTimer.singleShot(int(self.load_s * 500), lambda: self.window.engine_panel.apply_config(spec))
        QTimer.singleShot(int(self.load_s * 1000), self._next_shot)

    def _next_shot(self) -> None:
        from PySide6.QtCore import QTimer

        from ui.theme import ThemeMode

        if not self.shots:
            self.finish()
            return
        name, tab, size, theme = self.shots[0]
        self.window.set_theme_mode(ThemeMode(theme))
        self.window.resize(*size)
        if tab != "panel":
            self._tab(tab)
        QTimer.singleShot(SETTLE_MS, self._grab)

    def _grab(self) -> None:
        name, tab, _size, _theme = self.shots.pop(0)
        if tab == "panel":
            dock = self.window.engine_dock
            pixmap = dock.grab()
            # down to the lowest visible group box: the dock below it is empty
            from PySide6.QtWidgets import QGroupBox

            bottom = max((b.mapTo(dock, b.rect().bottomLeft()).y() for b in dock.findChildren(QGroupBox)
                          if b.isVisible()), default=pixmap.height())
            pixmap = pixmap.copy(0, 0, pixmap.width(), min(bottom + 16, pixmap.height()))
        else:
            pixmap = self.window.grab()
        path = self.out_dir / name
        if not pixmap.save(str(path)):
            print(f"could not write {path}", file=sys.stderr)
        else:
            self.saved.append(path)
            print(f"saved {path}")
        self._next_shot()

    def finish(self) -> None:
        self.dashboard.loadgen.stop()
        print(self.window.probe.summary().describe())
        self.window.close()
        self.app.quit()


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="workbench-shot-"))
    os.environ["WORKBENCH_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import json

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import paths
    from app.storage import ConversationStore
    from engine.config import EngineConfig
    from engine.engine import Engine
    from ui.bridge import EngineBridge
    from ui.main_window import MainWindow
    from ui.qt_compat import apply_workarounds
    from ui.settings_store import WorkbenchSettings, default_settings
    from ui.theme import ThemeMode

    apply_workarounds()
    model = args.model
    if model is None:
        if paths.bundled_models_present():
            model = str(paths.bundled_target_dir())
            if args.tour:  # the path box shows it: the repo's path, not this machine's
                model = os.path.relpath(model)
        else:
            from tests.helpers.tiny_models import build_llama

            model = str(build_llama(data_dir / "tiny-llama"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = WorkbenchSettings(default_settings(data_dir))
    settings.set_theme_mode(ThemeMode(args.theme))
    engine = Engine(model, collect_garbage=False)
    bridge = EngineBridge(engine)
    store = ConversationStore()
    draft, target = paths.bundled_draft_dir(), paths.bundled_target_dir()
    if args.tour:
        draft, target = Path(os.path.relpath(draft)), Path(os.path.relpath(target))
    from app.gui import add_views, bundled_model_names

    window = MainWindow(bridge, store, settings=settings, bundled_target=target,
                        bundled_draft=draft if draft.is_dir() else None, model_names=bundled_model_names())

    add_views(window, bridge, model,
              str(draft) if draft.is_dir() else None)
    w, h = (int(x) for x in args.size.lower().split("x"))
    window.resize(w, h)
    window.chat.set_colour_tokens(args.colour_tokens)
    window.chat.settings.set_expanded(args.expand_settings)
    if args.system:
        window.chat.settings.set_system_prompt(args.system)
    prompts = list(args.prompt)
    result = {"code": 0}

    def save_and_quit() -> None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(out))
        print(f"saved {out}")
        if args.panel_out:
            Path(args.panel_out).parent.mkdir(parents=True, exist_ok=True)
            window.engine_dock.grab().save(args.panel_out)
            print(f"saved {args.panel_out}")
        print(window.probe.summary().describe())
        window.close()
        app.quit()

    def next_prompt(_event=None) -> None:
        if prompts:
            if args.max_tokens:
                window.chat.settings.max_tokens.setValue(args.max_tokens)
            window.chat.send(prompts.pop(0))
        else:
            QTimer.singleShot(400, save_and_quit)

    def on_loaded(_info) -> None:
        bridge.model_loaded.disconnect(on_loaded)
        if args.config:
            window.engine_panel.apply_config(EngineConfig.from_dict(json.loads(args.config)))
        QTimer.singleShot(200, next_prompt)

    def on_timeout() -> None:
        print("timed out waiting for the model", file=sys.stderr)
        result["code"] = 1
        save_and_quit()

    if args.tour:
        out_dir = Path(args.tour)
        out_dir.mkdir(parents=True, exist_ok=True)
        tour = Tour(app, window, bridge, out_dir, args.load_s)

        def start_tour(_info) -> None:
            bridge.model_loaded.disconnect(start_tour)
            tour.start()

        def tour_timeout() -> None:
            print("timed out during the tour", file=sys.stderr)
            result["code"] = 1
            tour.finish()

        bridge.model_loaded.connect(start_tour)
        QTimer.singleShot(int(args.timeout_s * 1000), tour_timeout)
        window.show()
        bridge.start()
        app.exec()
        store.close()
        return result["code"]
    bridge.model_loaded.connect(on_loaded)
    window.chat.generation_finished.connect(lambda _e: QTimer.singleShot(150, next_prompt))
    QTimer.singleShot(int(args.timeout_s * 1000), on_timeout)
    window.show()
    bridge.start()
    app.exec()
    store.close()
    return result["code"]


if __name__ == "__main__":
    raise SystemExit(main())
