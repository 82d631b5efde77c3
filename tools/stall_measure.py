"""Event-loop stall of the GUI thread while an answer streams and while quantisation switches.

Opens the main window on the bundled model (offscreen is fine), streams a long answer, then
switches to nf4 mid-answer and back; prints the stall probe's figures for each phase.
Usage: QT_QPA_PLATFORM=offscreen python tools/stall_measure.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="workbench-stall-"))
    os.environ["WORKBENCH_DATA_DIR"] = str(data_dir)
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app import paths
    from app.gui import limit_torch_threads
    from app.storage import ConversationStore
    from engine.config import EngineConfig, GenerateRequest, Quantisation, SamplingParams
    from engine.engine import Engine
    from ui.bridge import EngineBridge
    from ui.main_window import MainWindow
    from ui.qt_compat import apply_workarounds
    from ui.settings_store import WorkbenchSettings, default_settings
    from ui.stall_probe import StallProbe

    apply_workarounds()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    limit_torch_threads()
    bridge = EngineBridge(Engine(str(paths.bundled_target_dir()), collect_garbage=False))
    window = MainWindow(bridge, ConversationStore(), settings=WorkbenchSettings(default_settings(data_dir)))
    window.show()

    def wait_for(signal, timeout_ms: int = 300_000) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()
        signal.disconnect(loop.quit)

    bridge.start()
    wait_for(bridge.model_loaded)
    probe = StallProbe(interval_ms=20, window=100_000)
    sampling = SamplingParams(max_new_tokens=300, ignore_eos=True)

    probe.start()
    bridge.submit(GenerateRequest(prompt="HAMLET:\n", sampling=sampling))
    wait_for(bridge.request_finished)
    print("streaming:", probe.summary().describe())
    probe.stop()
    probe.reset()

    probe.start()
    bridge.submit(GenerateRequest(prompt="HAMLET:\n", sampling=sampling))
    QTimer.singleShot(500, lambda: bridge.reconfigure(EngineConfig(quantisation=Quantisation.NF4)))
    wait_for(bridge.request_finished)
    print("streaming + switch to nf4:", probe.summary().describe(),
          f"(weights now {bridge.model_info.quantisation}, {bridge.model_info.weights_bytes / 1e6:.1f} MB)")
    probe.stop()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
