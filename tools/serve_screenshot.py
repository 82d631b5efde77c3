"""Screenshot the window serving its engine to 8 openai-SDK clients, Dashboard tab showing.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/serve_screenshot.py

The window is composed as `workbench gui` composes it (one event hub feeding the bridge and
the server); the "Serve on port" toggle is clicked like a user would; the clients run in a
child process (streaming chat completions in a loop). Batching goes from 8 slots to 2 at
--phase s (a change marker on the charts), and the window is grabbed at 2 x --phase s.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CLIENTS = r"""
import asyncio, sys, time
from openai import AsyncOpenAI

PROMPTS = ["Good my lord, what news?", "Who's there?", "Speak, what art thou?", "How now, what noise is that?",
           "What say you to the king?", "Where is my lady?", "Is this the way to Mantua?", "Sweet, adieu."]

async def user(client, i, until):
    while time.monotonic() < until:
        stream = await client.chat.completions.create(
            model=sys.argv[2], messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=64, temperature=0.8, stream=True)
        async for _chunk in stream:
            pass

async def main():
    until = time.monotonic() + float(sys.argv[3])
    async with AsyncOpenAI(base_url=sys.argv[1], api_key="none", max_retries=0) as client:
        await asyncio.gather(*(user(client, i, until) for i in range(8)))

asyncio.run(main())
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir (default: the bundled target, else a tiny random model)")
    p.add_argument("--out", default="docs/serve-dashboard.png")
    p.add_argument("--size", default="1600x1000", help="window size WxH")
    p.add_argument("--phase", type=float, default=12.0, help="seconds before the batching change and the grab")
    p.add_argument("--window", default="30 s", help="dashboard time window: 30 s | 2 min | 10 min | All")
    p.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    return p.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["WORKBENCH_DATA_DIR"] = tempfile.mkdtemp(prefix="workbench-serve-shot-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import paths
    from app.gui import add_views
    from app.serve.gui_control import install_serve_toggle
    from app.storage import ConversationStore
    from engine.config import BatchingConfig
    from engine.engine import Engine
    from engine.event_hub import EventHub
    from ui.bridge import EngineBridge
    from ui.gc_guard import GuiThreadGarbageCollector
    from ui.main_window import MainWindow
    from ui.qt_compat import apply_workarounds
    from ui.settings_store import WorkbenchSettings, default_settings

    model = args.model
    if model is None and paths.bundled_models_present():
        model = str(paths.bundled_target_dir())
    if model is None:
        from tests.helpers.tiny_models import build_llama

        model = str(build_llama(Path(tempfile.mkdtemp(prefix="serve-shot-")) / "tiny-llama", layers=4, hidden=128))

    apply_workarounds()
    torch.set_num_threads(args.torch_threads)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    collector = GuiThreadGarbageCollector(app)
    collector.start()
    engine = Engine(model, collect_garbage=False)
    hub = EventHub(engine.events).start()
    bridge = EngineBridge(engine, events=hub.open_queue())
    store = ConversationStore()
    window = MainWindow(bridge, store, settings=WorkbenchSettings(default_settings(Path(os.environ["WORKBENCH_DATA_DIR"]))))
    add_views(window, bridge, model, None)
    serve = install_serve_toggle(window, engine, hub, bridge)
    w, h = (int(x) for x in args.size.lower().split("x"))
    window.resize(w, h)
    window.show()
    for i in range(window.tabs.count()):
        if window.tabs.tabText(i) == "Dashboard":
            window.tabs.setCurrentIndex(i)
    dashboard = next(v for v in window._views if hasattr(v, "window_combo"))
    index = dashboard.window_combo.findText(args.window)
    if index >= 0:
        dashboard.window_combo.setCurrentIndex(index)
    result = {"rc": 1, "clients": None}

    def on_loaded(_info) -> None:
        serve.panel.port_spin.setValue(_free_port())
        serve.panel.toggle.click()  # as a user would
        url = f"{serve.panel.url}/v1"
        result["clients"] = subprocess.Popen([sys.executable, "-c", CLIENTS, url, serve.server.session.model_id,
                                              str(args.phase * 2 + 30)])
        QTimer.singleShot(int(args.phase * 1000), batching_two)

    def batching_two() -> None:
        bridge.reconfigure(bridge.config.with_(batching=BatchingConfig(max_batch_size=2)))
        QTimer.singleShot(int(args.phase * 1000), grab)

    def grab() -> None:
        out = Path(args.out)
        if not out.is_absolute():
            out = REPO_ROOT / out
        out.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(out), "PNG")
        shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
        print(f"{'saved' if ok else 'FAILED to save'} {shown}  (status: {serve.panel.status_label.text()})")
        result["rc"] = 0 if ok else 1
        if result["clients"] is not None:
            result["clients"].terminate()
            result["clients"].wait()
        window.close()
        app.quit()

    bridge.model_loaded.connect(on_loaded)
    bridge.start()
    QTimer.singleShot(int((args.phase * 2 + 120) * 1000), app.quit)  # a hard stop if the model never loads
    app.exec()
    hub.stop()
    store.close()
    collector.stop()
    return result["rc"]


if __name__ == "__main__":
    raise SystemExit(main())
