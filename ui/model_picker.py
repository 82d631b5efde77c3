"""Model picker: bundled demo, recent models, a folder, or a hub id; a remote server ("Connect to
server…") or a launch profile ("Launch profile…"); load progress and model facts."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine import events as ev
from ui.fit_guard import FitGuardView
from ui.formatting import MISSING, format_bytes, format_count
from ui.model_names import ModelNames
from ui.widgets import StatusPill, label, named

PATH_ROLE = Qt.ItemDataRole.UserRole
MAX_RECENT = 8


class ModelPickerView(QWidget):
    model_requested = Signal(str)  # a path or hub id the user asked to load

    def __init__(self, bridge, bundled_target: Path | None = None, recent: list[str] | None = None,
                 model_names: ModelNames | None = None, parent=None) -> None:
        super().__init__(parent)
        named(self, "model_picker", "Model picker")
        self._bridge = bridge
        self._bundled = Path(bundled_target) if bundled_target else None
        self.display_name = model_names or ModelNames()
        self._recent = list(recent or [])
        self._requested: str | None = None

        self.combo = named(QComboBox(), "model_combo", "Model")
        self.combo.setToolTip("Load a model: the bundled demo or a recent one")
        self.combo.activated.connect(self._on_combo_activated)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.open_button = named(QPushButton("Open folder…"), "open_model_folder_button",
                                 "Open a model folder")
        self.open_button.setToolTip("Load a Hugging Face model directory (with config.json)")
        self.open_button.clicked.connect(self.open_folder)
        self.hub_input = named(QLineEdit(), "hub_id_input", "Hub id or path")
        self.hub_input.setPlaceholderText("hub id or path, e.g. gpt2")
        self.hub_input.returnPressed.connect(self._on_hub_load)
        self.hub_button = named(QPushButton("Load"), "load_hub_button", "Load hub model")
        self.hub_button.clicked.connect(self._on_hub_load)
        self.connect_button = named(QPushButton("Connect to server…"), "connect_server_button",
                                    "Connect to a server", "Use an OpenAI-compatible server (vLLM, llama.cpp, …)")
        self.connect_button.clicked.connect(self.open_connect_dialog)
        self.profile_button = named(QPushButton("Launch profile…"), "launch_profile_button",
                                    "Launch profile", "Start a server from a saved command line and use it")
        self.profile_button.clicked.connect(self.open_profile_dialog)
        self.local_button = named(QPushButton("Back to local engine"), "use_local_engine_button",
                                  "Back to the local engine")
        self.local_button.clicked.connect(bridge.use_local)
        self.local_button.hide()
        self.connect_dialog = None  # ui.remote_dialog.ConnectDialog, once opened
        self.profile_dialog = None  # ui.remote_dialog.LaunchProfileDialog, once opened
        self.progress = named(QProgressBar(), "model_load_progress", "Model load progress")
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.status = StatusPill("model_status", "Model status")
        self.hint = label("", "model_hint", "Model hint", role="hint")
        self.hint.setWordWrap(True)

        self.facts = named(QWidget(), "model_facts", "Loaded model facts")
        form = QFormLayout(self.facts)
        form.setContentsMargins(0, 4, 0, 0)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(3)
        self._fact_labels = {}
        for key, title in [("architecture", "Architecture"), ("params", "Parameters"), ("size", "Weights"),
                           ("dtype", "Dtype"), ("device", "Device"), ("quant", "Quantisation"),
                           ("vocab", "Vocabulary")]:
            value = label("–", f"model_{key}_value", title, role="value")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self._fact_labels[key] = value
            form.addRow(label(title, f"model_{key}_label", role="field"), value)

        hub_row = QHBoxLayout()
        hub_row.setSpacing(6)
        hub_row.addWidget(self.hub_input, 1)
        hub_row.addWidget(self.hub_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(6)
        box.addWidget(self.combo)
        box.addWidget(self.open_button)
        box.addLayout(hub_row)
        box.addWidget(self.connect_button)  # one above the other: the narrow panel keeps its width
        box.addWidget(self.profile_button)
        box.addWidget(self.local_button)
        self.fit_guard = FitGuardView(bridge)
        self.fit_guard.load_refused.connect(self._on_load_refused)
        box.addWidget(self.fit_guard)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        box.addWidget(self.hint)
        box.addWidget(self.facts)

        bridge.load_progressed.connect(self._on_load_progress)
        bridge.model_loaded.connect(self._on_model_loaded)
        bridge.error_occurred.connect(self._on_error)
        bridge.state_changed.connect(self._on_state_changed)
        bridge.backend_changed.connect(self._on_backend_changed)
        self._rebuild_combo()
        if bridge.model_info is not None:
            self._on_model_loaded(bridge.model_info)
        else:
            self._show_facts(None)

    # ---- requests
    def request(self, name_or_path: str) -> None:
        name_or_path = name_or_path.strip()
        if not name_or_path:
            return
        self._requested = name_or_path
        self.status.show_state("applying")
        self.status.setText(f"loading {self.display_name(name_or_path)}…")
        self.progress.setValue(0)
        self.progress.show()
        self.model_requested.emit(name_or_path)
        self.fit_guard.load(name_or_path)  # a folder whose estimate will not fit asks first

    def open_folder(self) -> None:
        start = str(self._bundled.parent) if self._bundled else ""
        path = QFileDialog.getExistingDirectory(self, "Open model folder", start)
        if path:
            self.request(path)

    def open_connect_dialog(self) -> None:
        """Non-modal: the app keeps working while the user types and tests."""
        from ui.remote_dialog import ConnectDialog

        if self.connect_dialog is None:
            self.connect_dialog = ConnectDialog(self.window())
            self.connect_dialog.accepted.connect(self._on_connect_accepted)
        self.connect_dialog.show()
        self.connect_dialog.raise_()

    def _on_connect_accepted(self) -> None:
        from engine.remote import RemoteBackend

        spec = self.connect_dialog.spec()
        self.status.show_state("applying")
        self.status.setText(f"connecting to {spec.base_url}…")
        self._bridge.use_remote(RemoteBackend(spec))

    def open_profile_dialog(self) -> None:
        from ui.remote_dialog import LaunchProfileDialog

        if self.profile_dialog is None:
            self.profile_dialog = LaunchProfileDialog(self._bridge, self.window())
        self.profile_dialog.show()
        self.profile_dialog.raise_()

    def _on_backend_changed(self, backend) -> None:
        self.local_button.setVisible(backend is not None)
        if backend is not None:
            self._show_facts(None)
            self.status.show_state("applying")
            self.status.setText(f"connecting to {backend.spec.base_url}…")
        self._rebuild_combo()

    def set_recent(self, recent: list[str]) -> None:
        self._recent = list(recent)[:MAX_RECENT]
        self._rebuild_combo()

    def _on_hub_load(self) -> None:
        self.request(self.hub_input.text())

    def _on_combo_activated(self, index: int) -> None:
        path = self.combo.itemData(index, PATH_ROLE)
        current = self._bridge.model_info.name_or_path if self._bridge.model_info else None
        if path and path != current:
            self.request(path)

    # ---- combo contents
    def _rebuild_combo(self) -> None:
        current = self._bridge.model_info.name_or_path if self._bridge.model_info else None
        self.combo.blockSignals(True)
        self.combo.clear()
        model: QStandardItemModel = self.combo.model()
        remote = self._bridge.remote
        if remote is not None:  # the server's model first; any local entry switches back
            self.combo.addItem(f"{current or remote.spec.model or 'server'} — {remote.spec.base_url}", None)
            model.item(0).setToolTip(remote.config_label)
            current = None
        elif current is None:
            self.combo.addItem("Choose a model…", None)
            model.item(0).setEnabled(False)
        bundled_ok = bool(self._bundled and (self._bundled / "config.json").is_file())
        if self._bundled is not None:
            name = self.display_name(str(self._bundled))
            self.combo.addItem(f"{name} — bundled" if self.display_name.known(str(self._bundled))
                               else "Demo model (bundled)", str(self._bundled))
            item = model.item(self.combo.count() - 1)
            item.setToolTip(str(self._bundled) if bundled_ok else
                            "The bundled demo model has not been built yet (see the README)")
            item.setEnabled(bundled_ok)
        entries = list(self._recent)
        if current and current not in entries and not self._same_as_bundled(current):
            entries.insert(0, current)
        for path in entries:
            if self._same_as_bundled(path):
                continue
            self.combo.addItem(self.display_name(path), path)
            model.item(self.combo.count() - 1).setToolTip(path)
        index = 0
        for i in range(self.combo.count()):
            data = self.combo.itemData(i, PATH_ROLE)
            if data and current and (data == current or self._same_path(data, current)):
                index = i
        self.combo.setCurrentIndex(index)
        self.combo.blockSignals(False)

    def _same_as_bundled(self, path: str) -> bool:
        return self._bundled is not None and self._same_path(path, str(self._bundled))

    @staticmethod
    def _same_path(a: str, b: str) -> bool:
        try:
            return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
        except OSError:
            return a == b

    # ---- engine events
    def _on_state_changed(self, event: ev.StateChanged) -> None:
        if event.state is ev.EngineState.LOADING:
            self.progress.show()
            if not self.status.isVisible():
                self.status.show_state("applying")
                self.status.setText(event.detail or "loading…")

    def _on_load_progress(self, event: ev.LoadProgress) -> None:
        self.progress.show()
        self.progress.setValue(int(event.fraction * 100))
        self.progress.setFormat(f"{event.message}  %p%" if event.message else "%p%")
        if event.fraction >= 1.0:
            self.progress.hide()

    def _on_model_loaded(self, info: ev.ModelInfo) -> None:
        self._requested = None
        self.progress.hide()
        self.status.show_state("applied")
        remote = self._bridge.remote
        self.status.setText(f"connected: {info.name_or_path} at {remote.spec.base_url}" if remote is not None
                            else f"loaded {self.display_name(info.name_or_path)}")
        self.status.setToolTip(info.name_or_path)
        if remote is None:  # the path box shows what is loaded (a server's model name is no path)
            self.hub_input.setText(info.name_or_path)
            self.hub_input.setCursorPosition(0)
        self._show_facts(info)
        self._rebuild_combo()

    def _on_load_refused(self, path: str) -> None:
        self._requested = None
        self.progress.hide()
        self.status.show_state("")
        self._rebuild_combo()  # back to the model still loaded

    def _on_error(self, event: ev.EngineErrorEvent) -> None:
        if event.where != "load":
            return
        self._requested = None
        self.progress.hide()
        self.status.show_state("failed", event.message)
        self._rebuild_combo()  # back to the model still loaded

    def _show_facts(self, info: ev.ModelInfo | None) -> None:
        self.facts.setVisible(info is not None)
        if info is None:
            self.hint.setText("No model loaded. Pick the bundled demo or a recent model above, "
                              "open a model folder, or type a hub id.")
            self.hint.show()
            return
        self.hint.hide()
        values = {  # a remote server leaves most of these unknown (None): shown as MISSING
            "architecture": info.architecture,
            "params": format_count(info.num_params),
            "size": format_bytes(info.weights_bytes),
            "dtype": info.dtype,
            "device": info.device,
            "quant": info.quantisation,
            "vocab": f"{info.vocab_size:,}" if info.vocab_size is not None else None,
        }
        note = getattr(info, "dtype_note", "")  # how dtype auto decided (measured at load)
        if note.startswith("auto") and info.dtype:
            values["dtype"] = f"{info.dtype} (auto)"
        for key, value in values.items():
            value = MISSING if value is None else str(value)
            self._fact_labels[key].setText(value)
            self._fact_labels[key].setAccessibleDescription(value)
        self._fact_labels["dtype"].setToolTip(note)
        self.facts.setToolTip(info.name_or_path)
