"""Screenshot the workbench window: load a model, optionally chat, grab the window to PNG.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot.py \
        --model assets/models/target --prompt "Who's there?" --out docs/chat.png

--panel-out also saves the engine panel alone. Conversations and settings go to a
temporary data dir unless --data-dir is given, so your own history is never touched.
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
    return p.parse_args(argv)


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
        else:
            from tests.helpers.tiny_models import build_llama

            model = str(build_llama(data_dir / "tiny-llama"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = WorkbenchSettings(default_settings(data_dir))
    settings.set_theme_mode(ThemeMode(args.theme))
    engine = Engine(model, collect_garbage=False)
    bridge = EngineBridge(engine)
    store = ConversationStore()
    draft = paths.bundled_draft_dir()
    window = MainWindow(bridge, store, settings=settings, bundled_target=paths.bundled_target_dir(),
                        bundled_draft=draft if draft.is_dir() else None)
    from app.gui import add_views

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
