"""Before a local model folder is loaded, estimate whether it fits (engine.memory_plan.check_fits,
from its config alone, on a worker thread) and ask before loading one that will not, instead of
letting the process be killed.

The worker only computes a string; it reaches the GUI thread through a queue that a QTimer
drains, so no widget is touched off the GUI thread.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from engine.config import Quantisation
from ui.widgets import label, named

DRAIN_MS = 50


def fit_warning(path: str, level: Quantisation, device: str = "cpu") -> str | None:
    """The will-not-fit warning for a model folder, or None (also runs in tests, off any thread)."""
    from transformers import AutoConfig

    from engine.memory_plan import check_fits

    config = AutoConfig.from_pretrained(path)
    return check_fits(Path(path).name or path, config, level, device=device)


class FitGuardView(QWidget):
    """load(path): checks a local folder first; loads at once when it fits (or cannot be checked)."""

    load_confirmed = Signal(str)  # the path is being loaded
    load_refused = Signal(str)  # the user kept the model they had
    checked = Signal(str, object)  # path, warning text or None

    def __init__(self, bridge, parent=None) -> None:
        super().__init__(parent)
        named(self, "model_fit_guard", "Memory check before loading")
        self._bridge = bridge
        self._queue: queue.Queue = queue.Queue()
        self._pending: str | None = None
        self.warning = label("", "model_fit_warning", "Model will not fit", role="pill")
        self.warning.setProperty("state", "failed")
        self.warning.setWordWrap(True)
        self.load_anyway = named(QPushButton("Load anyway"), "model_fit_load_anyway", "Load the model anyway")
        self.keep = named(QPushButton("Keep current"), "model_fit_cancel", "Do not load the model")
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.load_anyway)
        row.addWidget(self.keep)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(4)
        box.addWidget(self.warning)
        box.addLayout(row)
        self.load_anyway.clicked.connect(self._on_load_anyway)
        self.keep.clicked.connect(self._on_keep)
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_MS)
        self._timer.timeout.connect(self._drain)
        self.hide()

    @staticmethod
    def needs_check(path: str) -> bool:
        try:
            return (Path(path).expanduser() / "config.json").is_file()
        except OSError:
            return False

    def load(self, path: str) -> None:
        self.hide()
        if not self.needs_check(path):
            self._load(path)  # a hub id: the engine resolves it (offline: it refuses)
            return
        self._pending = path
        level = self._bridge.config.quantisation
        device = "cuda" if (self._bridge.model_info and self._bridge.model_info.device.startswith("cuda")) else "cpu"
        q = self._queue

        def work() -> None:
            try:
                q.put((path, fit_warning(path, level, device)))
            except Exception:  # noqa: BLE001 - no estimate (an odd config): the engine's own load decides
                q.put((path, None))

        threading.Thread(target=work, name="fit-check", daemon=True).start()
        self._timer.start()

    def _drain(self) -> None:
        try:
            path, warning = self._queue.get_nowait()
        except queue.Empty:
            return
        if path != self._pending:
            return  # an older request, superseded
        self._timer.stop()
        self.checked.emit(path, warning)
        if warning is None:
            self._load(path)
            return
        self.warning.setText(f"Will not fit: {warning}. Loading it may get the process killed.")
        self.warning.setToolTip(warning)
        self.show()

    def _load(self, path: str) -> None:
        self._pending = None
        self.hide()
        self.load_confirmed.emit(path)
        self._bridge.load_model(path)

    def _on_load_anyway(self) -> None:
        if self._pending:
            self._load(self._pending)

    def _on_keep(self) -> None:
        path, self._pending = self._pending, None
        self.hide()
        if path:
            self.load_refused.emit(path)
