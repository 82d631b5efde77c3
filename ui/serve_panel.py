"""'Serve on port …' toggle for the status bar: asks for the server, shows its URL and clients.

The panel only says what the user wants (serve_requested / stop_requested) and shows what it
is told; the app layer starts and stops the actual server (ui never imports app).
"""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QSpinBox, QWidget

from ui.widgets import label, named, set_style_state

DEFAULT_PORT = 8000
NOT_SERVING = "not serving"


class ServePanel(QWidget):
    serve_requested = Signal(int)  # port
    stop_requested = Signal()

    def __init__(self, port: int = DEFAULT_PORT, parent=None) -> None:
        super().__init__(parent)
        named(self, "serve_panel", "OpenAI-compatible server")
        self.toggle = named(QCheckBox("Serve on port"), "serve_toggle", "Serve on port",
                            "Serve the engine this window drives over an OpenAI-compatible HTTP API on "
                            "127.0.0.1")
        self.toggle.setToolTip("Serve this engine at http://127.0.0.1:PORT/v1 (OpenAI-compatible; "
                               "/metrics for Prometheus). Served traffic shows on the dashboard.")
        self.port_spin = named(QSpinBox(), "serve_port_spin", "Server port")
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(port)
        self.status_label = label(NOT_SERVING, "serve_status_label", "Server status", role="status")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        row.addWidget(self.toggle)
        row.addWidget(self.port_spin)
        row.addWidget(self.status_label)
        self.url: str | None = None
        self.clients = 0
        self.toggle.toggled.connect(self._on_toggled)

    # ---- user intent
    def _on_toggled(self, on: bool) -> None:
        self.port_spin.setEnabled(not on)
        if on:
            self.status_label.setText("starting…")
            self.serve_requested.emit(self.port_spin.value())
        else:
            self.stop_requested.emit()

    # ---- what the app tells us
    def show_serving(self, url: str) -> None:
        self.url = url
        self.clients = 0
        self._set_checked(True)
        self._render("serving")

    def show_stopped(self, error: str | None = None) -> None:
        self.url = None
        self.clients = 0
        self._set_checked(False)
        if error:
            self.status_label.setText(f"not serving: {error}")
            self.status_label.setToolTip(error)
            self.status_label.setAccessibleDescription(f"not serving: {error}")
            set_style_state(self.status_label, "state", "error")
        else:
            self._render("idle")

    @Slot(int)
    def set_clients(self, n: int) -> None:
        self.clients = max(0, n)
        if self.url is not None:
            self._render("serving")

    def _set_checked(self, on: bool) -> None:
        self.toggle.blockSignals(True)
        self.toggle.setChecked(on)
        self.toggle.blockSignals(False)
        self.port_spin.setEnabled(not on)

    def _render(self, state: str) -> None:
        if self.url is None:
            text = NOT_SERVING
        else:
            text = f"{self.url}/v1 · {self.clients} client{'s' if self.clients != 1 else ''}"
        self.status_label.setText(text)
        self.status_label.setToolTip(text)
        self.status_label.setAccessibleDescription(text)
        set_style_state(self.status_label, "state", state)
