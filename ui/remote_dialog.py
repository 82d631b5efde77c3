"""Dialogs for remote engines: "Connect to server…" (URL, API key, model from /v1/models, test)
and "Launch profile…" (a command line + env the workbench starts, health-checks, logs and stops).

Nothing here blocks the GUI thread: the model list is fetched on a worker thread whose answer
(plain data) comes back through a queue read on a timer; a profile's server starts on its
backend's own thread (engine.remote.profile_backend).
"""

from __future__ import annotations

import queue
import shlex
import threading
from pathlib import Path
from urllib.parse import urlsplit

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from engine import events as ev
from engine.remote.backend import RemoteSpec, list_models
from engine.remote.launch import LaunchProfile, load_profiles, save_profiles
from engine.remote.profile_backend import ProfileBackend
from ui.widgets import StatusPill, label, named

DEFAULT_URL = "http://127.0.0.1:8000/v1"
POLL_MS = 50
LOG_REFRESH_MS = 500
LOG_TAIL_BYTES = 32 << 10  # the log view shows the end of the file, read in one bounded chunk


def _say(pill: StatusPill, state: str, text: str) -> None:
    """A pill in `state` ('applying', 'applied', '' for neutral) with its own words."""
    pill.show_state(state)
    pill.setText(text)
    pill.setAccessibleDescription(text)
    pill.show()


def normalise_url(text: str) -> str:
    """'localhost:8000' -> 'http://localhost:8000/v1'; a URL with a path keeps it."""
    url = text.strip()
    if url and "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.netloc and parts.path in ("", "/"):
        url = url.rstrip("/") + "/v1"
    return url


def read_log_tail(path: Path | None, max_bytes: int = LOG_TAIL_BYTES) -> str:
    if path is None or not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read(max_bytes)
    text = data.decode("utf-8", "replace")
    return text if size <= max_bytes else text.split("\n", 1)[-1]  # drop the cut first line


class ConnectDialog(QDialog):
    """Asks for a server; `spec()` is the RemoteSpec to connect to once accepted."""

    models_listed = Signal(object)  # tuple of model ids (tests wait on it)
    probe_failed = Signal(str)

    def __init__(self, parent=None, *, url: str = DEFAULT_URL) -> None:
        super().__init__(parent)
        named(self, "connect_server_dialog", "Connect to server")
        self.setWindowTitle("Connect to server")
        self.url_input = named(QLineEdit(url), "remote_url_input", "Server URL",
                               "The OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
        self.key_input = named(QLineEdit(), "remote_api_key_input", "API key (optional)")
        self.key_input.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_input.setPlaceholderText("optional")
        self.model_combo = named(QComboBox(), "remote_model_combo", "Model",
                                 "Filled from the server's /v1/models; type a name if it lists none")
        self.model_combo.setEditable(True)
        self.model_combo.lineEdit().setPlaceholderText("first model the server lists")
        self.test_button = named(QPushButton("Test connection"), "remote_test_button", "Test connection")
        self.status = StatusPill("remote_connect_status", "Connection status")
        self.hint = label("vLLM, SGLang, llama.cpp's server, TGI, Ollama (…/v1), LM Studio or "
                          "`transformers serve`.", "remote_connect_hint", role="hint")
        self.hint.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.connect_button = named(self.buttons.addButton("Connect", QDialogButtonBox.ButtonRole.AcceptRole),
                                    "remote_connect_button", "Connect")
        form = QFormLayout()
        form.addRow("URL", self.url_input)
        form.addRow("API key", self.key_input)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.test_button)
        form.addRow("Model", row)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.status)
        box.addWidget(self.hint)
        box.addWidget(self.buttons)
        self.status.hide()
        self._results: queue.Queue = queue.Queue()
        self._probe_id = 0
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._on_poll)
        self.test_button.clicked.connect(self.test_connection)
        self.buttons.accepted.connect(self._on_accept)
        self.buttons.rejected.connect(self.reject)
        self.resize(520, self.sizeHint().height())

    def spec(self) -> RemoteSpec:
        """Raises ValueError with the reason when the fields do not make a server address."""
        model = self.model_combo.currentText().strip() or None
        return RemoteSpec(base_url=normalise_url(self.url_input.text()), model=model,
                          api_key=self.key_input.text().strip() or None)

    def test_connection(self) -> None:
        try:
            spec = self.spec()
        except ValueError as exc:
            self._show_failure(str(exc))
            return
        self._probe_id += 1
        probe = self._probe_id
        _say(self.status, "applying", f"asking {spec.base_url} for its models…")
        self.test_button.setEnabled(False)

        def work() -> None:
            try:
                self._results.put((probe, list_models(spec), None))
            except RuntimeError as exc:
                self._results.put((probe, None, str(exc)))

        threading.Thread(target=work, name="workbench-remote-probe", daemon=True).start()
        self._poll.start()

    def _on_poll(self) -> None:
        try:
            probe, models, error = self._results.get_nowait()
        except queue.Empty:
            return
        if probe != self._probe_id:
            return  # an older test's answer
        self._poll.stop()
        self.test_button.setEnabled(True)
        if error is not None:
            self._show_failure(error)
            return
        typed = self.model_combo.currentText().strip()
        self.model_combo.clear()
        self.model_combo.addItems(list(models))
        if typed:
            self.model_combo.setEditText(typed)
        if typed and typed not in models:
            self.status.show_state("failed", f"the server does not serve {typed!r}; it serves: "
                                             f"{', '.join(models) or 'nothing'}")
        else:
            _say(self.status, "applied", f"✓ connected: {len(models)} model{'s' if len(models) != 1 else ''} "
                                         f"({', '.join(models[:3])}{'…' if len(models) > 3 else ''})")
        self.models_listed.emit(tuple(models))

    def _show_failure(self, message: str) -> None:
        self.status.show_state("failed", message)
        self.probe_failed.emit(message)

    def _on_accept(self) -> None:
        try:
            self.spec()
        except ValueError as exc:
            self._show_failure(str(exc))
            return
        self.accept()

    def done(self, result: int) -> None:  # Qt override
        self._poll.stop()
        super().done(result)


def parse_env(text: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE lines (blank lines and # comments skipped); a line without '=' is an error."""
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"environment line {n}: expected KEY=VALUE, got {line!r}")
        pairs.append((key.strip(), value))
    return tuple(sorted(pairs))


class LaunchProfileDialog(QDialog):
    """Edit a launch profile, start it as the active backend, watch its health and log, stop it.
    With bridge=None it only edits: "Use this profile" hands the profile over (a Compare column
    starts it when the comparison runs)."""

    profile_started = Signal(object)  # the ProfileBackend made the active backend
    profile_chosen = Signal(object)  # LaunchProfile (bridge=None)

    def __init__(self, bridge, parent=None, *, profile: LaunchProfile | None = None,
                 variables: dict[str, str] | None = None) -> None:
        super().__init__(parent)
        named(self, "launch_profile_dialog", "Launch profile")
        self.setWindowTitle("Launch profile")
        self._bridge = bridge
        self._variables = dict(variables or {})
        self.backend: ProfileBackend | None = None
        self.name_input = named(QLineEdit(), "profile_name_input", "Profile name")
        self.command_input = named(QPlainTextEdit(), "profile_command_input", "Command line",
                                   "The server's command line; {host} and {port} are filled in at start")
        self.command_input.setPlaceholderText(
            "python -m vllm.entrypoints.openai.api_server --model MODEL --host {host} --port {port} "
            "--speculative-config '{\"method\":\"ngram\",\"num_speculative_tokens\":3,"
            "\"prompt_lookup_max\":3}'")
        self.command_input.setFixedHeight(72)
        self.env_input = named(QPlainTextEdit(), "profile_env_input", "Environment (KEY=VALUE per line)")
        self.env_input.setPlaceholderText("VLLM_CPU_KVCACHE_SPACE=1")
        self.env_input.setFixedHeight(56)
        self.model_input = named(QLineEdit(), "profile_model_input", "Served model name (optional)")
        self.model_input.setPlaceholderText("first model the server lists")
        self.health_input = named(QLineEdit("/health"), "profile_health_input", "Health URL path")
        self.start_button = named(QPushButton("Start"), "profile_start_button", "Start the server")
        self.stop_button = named(QPushButton("Stop"), "profile_stop_button", "Stop the server")
        self.open_button = named(QPushButton("Open…"), "profile_open_button", "Open saved profiles")
        self.save_button = named(QPushButton("Save…"), "profile_save_button", "Save this profile")
        self.health = StatusPill("profile_health_status", "Server health")
        self.log_view = named(QPlainTextEdit(), "profile_log_view", "Server log")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        form = QFormLayout()
        form.addRow("Name", self.name_input)
        form.addRow("Command", self.command_input)
        form.addRow("Environment", self.env_input)
        form.addRow("Model", self.model_input)
        form.addRow("Health path", self.health_input)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        for b in (self.open_button, self.save_button):
            buttons.addWidget(b)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addLayout(buttons)
        box.addWidget(self.health)
        box.addWidget(label("Server log", "profile_log_label", role="field"))
        box.addWidget(self.log_view, 1)
        _say(self.health, "", "not started")
        self.stop_button.setEnabled(False)
        self._log_timer = QTimer(self)
        self._log_timer.setInterval(LOG_REFRESH_MS)
        self._log_timer.timeout.connect(self._refresh)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.open_button.clicked.connect(self._open)
        self.save_button.clicked.connect(self._save)
        if bridge is not None:
            bridge.remote_connected.connect(self._on_connected)
            bridge.error_occurred.connect(self._on_error)
            bridge.load_progressed.connect(self._on_progress)
        else:
            self.start_button.setText("Use this profile")
            for w in (self.stop_button, self.log_view, self.findChild(QLabel, "profile_log_label")):
                w.hide()
        if profile is not None:
            self.set_profile(profile)
        self.resize(760, 620)

    # ---- profile <-> fields
    def set_profile(self, p: LaunchProfile) -> None:
        self.name_input.setText(p.name)
        self.command_input.setPlainText(shlex.join(p.argv))
        self.env_input.setPlainText("\n".join(f"{k}={v}" for k, v in p.env))
        self.model_input.setText(p.model or "")
        self.health_input.setText(p.health_path)

    def profile(self) -> LaunchProfile:
        """Raises ValueError with the reason for a field that does not parse."""
        argv = tuple(shlex.split(self.command_input.toPlainText()))
        return LaunchProfile(name=self.name_input.text().strip() or "profile", argv=argv,
                             env=parse_env(self.env_input.toPlainText()),
                             model=self.model_input.text().strip() or None,
                             health_path=self.health_input.text().strip() or "/health")

    # ---- start / stop
    def start(self) -> None:
        try:
            profile = self.profile()
        except ValueError as exc:
            self.health.show_state("failed", str(exc))
            return
        if self._bridge is None:
            self.profile_chosen.emit(profile)
            self.accept()
            return
        self.stop()
        self.backend = ProfileBackend(profile, variables=self._variables)
        self._bridge.use_remote(self.backend)
        _say(self.health, "applying", f"starting {profile.name} on port {self.backend.server.port}…")
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.log_view.clear()
        self._log_timer.start()
        self.profile_started.emit(self.backend)

    def stop(self) -> None:
        backend, self.backend = self.backend, None
        if backend is None:
            return
        if self._bridge.remote is backend:
            self._bridge.use_local()  # shuts it down (and its server) off the GUI thread
        else:
            threading.Thread(target=backend.shutdown, name="workbench-profile-stop", daemon=True).start()
        _say(self.health, "", "stopped")
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self._refresh_log(backend)
        self._log_timer.stop()

    # ---- health and log
    def _mine(self) -> bool:
        return self.backend is not None and self._bridge.remote is self.backend

    def _on_progress(self, event: ev.LoadProgress) -> None:
        if self._mine() and event.what == "server":
            _say(self.health, "applying", event.message)

    def _on_connected(self, event) -> None:
        if self._mine():
            _say(self.health, "applied", f"healthy: {event.engine.value} serving {event.model} at {event.base_url}")

    def _on_error(self, event: ev.EngineErrorEvent) -> None:
        if self._mine() and event.where == "load":
            self.health.show_state("failed", event.message.splitlines()[0] if event.message else "failed")
            self.start_button.setEnabled(True)

    def _refresh(self) -> None:
        backend = self.backend
        if backend is None:
            return
        self._refresh_log(backend)
        proc = backend.server.process
        if proc is not None and proc.poll() is not None:
            self.health.show_state("failed", f"the server exited with code {proc.returncode}")
            self.start_button.setEnabled(True)
            self._log_timer.stop()

    def _refresh_log(self, backend: ProfileBackend) -> None:
        text = read_log_tail(backend.server.log_path)
        if text != self.log_view.toPlainText():
            self.log_view.setPlainText(text)
            bar = self.log_view.verticalScrollBar()
            bar.setValue(bar.maximum())

    # ---- files
    def _open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open launch profiles", "", "Launch profiles (*.json)")
        if not path:
            return
        try:
            profiles = load_profiles(Path(path))
        except (OSError, ValueError) as exc:
            self.health.show_state("failed", f"cannot read {Path(path).name}: {exc}")
            return
        if profiles:
            self.set_profile(profiles[0])

    def _save(self) -> None:
        try:
            profile = self.profile()
        except ValueError as exc:
            self.health.show_state("failed", str(exc))
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save launch profile", f"{profile.name}.json",
                                              "Launch profiles (*.json)")
        if path:
            try:
                save_profiles(Path(path), [profile])
            except OSError as exc:
                self.health.show_state("failed", f"cannot save: {exc}")

    def done(self, result: int) -> None:  # Qt override: closing the dialog leaves the server running
        self._log_timer.stop()
        super().done(result)
