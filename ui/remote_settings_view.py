"""The engine panel's view of a remote backend: what the server reports about itself, read-only,
and the local switches disabled with the reason (a server's settings are its launch flags)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QWidget

from engine.remote.server_stats import ServerEngine
from ui.formatting import MISSING
from ui.widgets import label, named

ENGINE_NAMES = {ServerEngine.VLLM: "vLLM", ServerEngine.SGLANG: "SGLang", ServerEngine.TGI: "TGI",
                ServerEngine.LLAMACPP: "llama.cpp", ServerEngine.OLLAMA: "Ollama",
                ServerEngine.OPENAI: "This server"}
LOCAL_SECTIONS = ("kv_section", "batching_section", "quant_section", "spec_section")
FACTS = (("engine", "Engine"), ("url", "URL"), ("model", "Model"), ("max_len", "Max model length"),
         ("metrics", "/metrics"), ("spec", "Speculative"), ("running", "Running"), ("waiting", "Waiting"),
         ("kv", "KV cache used"))


def locked_reason(engine: ServerEngine | None) -> str:
    name = ENGINE_NAMES.get(engine, "This server") if engine is not None else "A remote server"
    return f"{name}: set by launch flags — use a launch profile"


def percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.1f} %"


def count(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f}"


class RemoteSettingsView(QGroupBox):
    """Hidden while the local engine runs. `panel`: the EnginePanel whose switches it locks."""

    def __init__(self, bridge, panel: QWidget, parent=None) -> None:
        super().__init__("Remote server", parent)
        named(self, "remote_section", "Remote server settings")
        self._bridge = bridge
        self._panel = panel
        self._saved_tips: dict[QWidget, str] = {}
        form = QFormLayout(self)
        form.setContentsMargins(12, 8, 12, 10)
        form.setVerticalSpacing(3)
        self.values = {}
        for key, title in FACTS:
            value = label(MISSING, f"remote_{key}_value", title, role="value")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            self.values[key] = value
            form.addRow(label(title, f"remote_{key}_label", role="field"), value)
        self.note = label(locked_reason(None), "remote_locked_note", "Why the switches are locked", role="hint")
        self.note.setWordWrap(True)
        form.addRow(self.note)
        self.hide()
        bridge.backend_changed.connect(self._on_backend_changed)
        bridge.remote_connected.connect(self._on_remote_connected)
        bridge.server_metrics_sampled.connect(self._on_metrics)

    def sections(self) -> list[QWidget]:
        return [w for name in LOCAL_SECTIONS if (w := self._panel.findChild(QGroupBox, name)) is not None]

    def _set(self, key: str, text: str) -> None:
        self.values[key].setText(text)
        self.values[key].setAccessibleDescription(text)

    def _on_backend_changed(self, backend) -> None:
        self.setVisible(backend is not None)
        if backend is None:
            for section in self.sections():
                section.setEnabled(True)
                for w in [section, *section.findChildren(QWidget)]:
                    if w in self._saved_tips:
                        w.setToolTip(self._saved_tips.pop(w))
            return
        for key in self.values:
            self._set(key, MISSING)
        self._set("url", backend.spec.base_url)
        self._set("model", backend.spec.model or MISSING)
        self._lock(None)

    def _lock(self, engine: ServerEngine | None) -> None:
        reason = locked_reason(engine)
        self.note.setText(reason)
        for section in self.sections():
            section.setEnabled(False)
            for w in [section, *section.findChildren(QWidget)]:
                self._saved_tips.setdefault(w, w.toolTip())
                w.setToolTip(reason)

    def _on_remote_connected(self, event) -> None:
        self._set("engine", ENGINE_NAMES.get(event.engine, event.engine.value))
        self._set("url", event.base_url)
        self._set("model", event.model or MISSING)
        self._set("max_len", f"{event.max_model_len:,} tokens" if event.max_model_len is not None else MISSING)
        self._set("metrics", "scraped" if event.has_metrics else "not exposed")
        if not event.has_metrics:
            self._set("spec", MISSING)
        self._lock(event.engine)

    def _on_metrics(self, event) -> None:
        s = event.snapshot
        self._set("running", count(s.num_requests_running))
        self._set("waiting", count(s.num_requests_waiting))
        self._set("kv", percent(s.kv_cache_usage))
        if s.num_drafts is not None or s.spec_accept_length is not None:
            self._set("spec", "on (the server counts drafts)")
        else:
            self._set("spec", "off or not reported")
