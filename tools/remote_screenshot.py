"""Screenshots of remote engines in the workbench, on real content:

  docs/remote-compare.png   Compare racing the local engine against a vLLM launch profile (n-gram
                            speculation) on one prompt, the bundled model in both;
  docs/remote-dashboard.png the Dashboard connected to that vLLM server under the load generator:
                            its batch size (running), queue (waiting), KV usage and speculative
                            acceptance live from /metrics.

Needs vLLM in .venv-vllm (`make setup-vllm`) and a display:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/remote_screenshot.py --out-dir docs

Run it from the repository root: the profile's command line shown in the Compare column names
the repo's relative paths, not this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PROMPT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate:"
NGRAM = json.dumps({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1})
SETTLE_MS = 900


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="docs")
    p.add_argument("--vllm-venv", default=".venv-vllm")
    p.add_argument("--size", default="1600x1000")
    p.add_argument("--load-s", type=float, default=20.0, help="seconds of load before the dashboard shot")
    p.add_argument("--timeout-s", type=float, default=420.0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(REPO_ROOT)
    data_dir = Path(tempfile.mkdtemp(prefix="workbench-remote-shot-"))
    os.environ["WORKBENCH_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.gui import add_views, bundled_model_names
    from app.storage import ConversationStore
    from engine.engine import Engine
    from engine.remote import RemoteBackend, RemoteSpec
    from engine.remote.launch import vllm_cpu_profile
    from ui.bridge import EngineBridge
    from ui.main_window import MainWindow
    from ui.qt_compat import apply_workarounds
    from ui.settings_store import WorkbenchSettings, default_settings
    from ui.theme import ThemeMode

    apply_workarounds()
    target = Path("assets/models/target")
    venv = Path(args.vllm_venv)
    if not (target / "config.json").is_file() or not (venv / "bin" / "python").is_file():
        print("needs the bundled model (assets/models/target) and vLLM in .venv-vllm", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = WorkbenchSettings(default_settings(data_dir))
    settings.set_theme_mode(ThemeMode.LIGHT)
    bridge = EngineBridge(Engine(str(target), collect_garbage=False))
    store = ConversationStore()
    window = MainWindow(bridge, store, settings=settings, bundled_target=target, model_names=bundled_model_names())
    add_views(window, bridge, str(target), None)
    w, h = (int(x) for x in args.size.lower().split("x"))
    window.resize(w, h)
    from PySide6.QtWidgets import QWidget

    compare = window.findChild(QWidget, "compare_view")
    dashboard = window.findChild(QWidget, "dashboard_view")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"code": 0}
    profile = vllm_cpu_profile("vllm-ngram", str(target), python=str(venv / "bin" / "python"), served_name="shakespeare",
                               max_model_len=1024, max_num_seqs=4, libiomp=str(venv / "lib" / "libiomp5.so"),
                               extra_args=("--speculative-config", NGRAM))

    def tab(title: str) -> None:
        tabs = window.tabs
        tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == title))

    def grab(name: str) -> None:
        path = out_dir / name
        if window.grab().save(str(path)):
            print(f"saved {path}")
        else:
            print(f"could not write {path}", file=sys.stderr)
            result["code"] = 1

    def start_compare(_info=None) -> None:
        bridge.model_loaded.disconnect(start_compare)
        tab("Compare")
        while len(compare.panels) > 2:
            compare.remove_column(compare.panels[-1])
        compare.panels[0].preset_combo.setCurrentText("KV cache")
        compare.panels[0].name_edit.setText("local engine")
        compare.panels[1].set_remote(profile)
        compare.prompt_edit.setPlainText(PROMPT)
        compare.max_tokens_spin.setValue(64)
        compare.warmup_check.setChecked(False)
        compare.chat_check.setChecked(False)
        compare.mode_combo.setCurrentIndex(compare.mode_combo.findData("race"))
        compare.bridge.comparison_finished.connect(on_compared)
        compare.run_button.click()

    def on_compared(comp) -> None:
        compare.bridge.comparison_finished.disconnect(on_compared)
        print("compare:", "; ".join(f"{r['column']} {r['tokens_per_s']}" for r in comp.summary_rows()))
        for i, c in enumerate(comp.columns):
            if c.errors:
                print(f"column {i} errors: {c.errors}", file=sys.stderr)
        QTimer.singleShot(SETTLE_MS, lambda: (grab("remote-compare.png"), connect_dashboard()))

    def connect_dashboard() -> None:
        server = compare.bridge._engines[1]  # the profile column's running vLLM
        bridge.use_remote(RemoteBackend(RemoteSpec(server.spec.base_url, model="shakespeare",
                                                   metrics_interval_s=0.5)))
        tab("Dashboard")
        dashboard.window_combo.setCurrentIndex(dashboard.window_combo.findText("30 s"))
        bridge.remote_connected.connect(start_load)

    def start_load(_event) -> None:
        bridge.remote_connected.disconnect(start_load)
        dashboard.reset()
        gen = dashboard.loadgen  # set in its own fields, so the panel shows the load it runs
        gen.users_spin.setValue(12)
        gen.rate_spin.setValue(20.0)
        gen.min_tokens_spin.setValue(64)
        gen.max_tokens_spin.setValue(160)
        gen.start()
        QTimer.singleShot(int(args.load_s * 1000), shot_dashboard)

    def shot_dashboard() -> None:
        """At the first scrape after the warm-up with the server busy (a batch and a queue),
        so the figures show load; after 40 s more, whatever it shows."""
        done = {"shot": False}

        def take(_event=None) -> None:
            if done["shot"]:
                return
            done["shot"] = True
            bridge.server_metrics_sampled.disconnect(on_sample)
            grab("remote-dashboard.png")  # now: the strip has shown this very scrape (connected first)
            finish()

        def on_sample(event) -> None:
            snap = event.snapshot
            if (snap.num_requests_running or 0) >= 3 and (snap.num_requests_waiting or 0) >= 1:
                take()

        bridge.server_metrics_sampled.connect(on_sample)
        QTimer.singleShot(40_000, take)

    def finish() -> None:
        dashboard.loadgen.stop()
        window.close()  # shuts the compare column's vLLM down with the Compare view
        app.quit()

    def on_timeout() -> None:
        print("timed out", file=sys.stderr)
        result["code"] = 1
        finish()

    bridge.model_loaded.connect(start_compare)
    QTimer.singleShot(int(args.timeout_s * 1000), on_timeout)
    window.show()
    bridge.start()
    app.exec()
    store.close()
    return result["code"]


if __name__ == "__main__":
    raise SystemExit(main())
