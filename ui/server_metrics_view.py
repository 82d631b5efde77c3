"""The dashboard's strip of a remote server's own figures, live from its /metrics scrapes
(ServerMetricsSampled): batch size (running), queue (waiting), KV-cache usage, speculative
acceptance and generation speed. Hidden while the local engine runs; a figure the server does
not expose reads MISSING, never 0."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QGridLayout, QVBoxLayout

from ui.formatting import MISSING
from ui.remote_settings_view import ENGINE_NAMES
from ui.widgets import label, named

TILES = (("running", "Batch (running)"), ("waiting", "Queue (waiting)"), ("kv", "KV cache used"),
         ("acceptance", "Spec acceptance"), ("speed", "Generation"), ("ttft", "Server TTFT (mean)"))


def acceptance(accepted: float | None, drafted: float | None) -> float | None:
    return accepted / drafted if accepted is not None and drafted else None


class ServerMetricsView(QFrame):
    def __init__(self, bridge, parent=None) -> None:
        super().__init__(parent)
        named(self, "server_metrics_view", "Server metrics")
        self.setProperty("role", "chart")
        self.title = label("Server", "server_metrics_title", "Server", role="section")
        self.values = {}
        self.details = {}
        grid = QGridLayout()
        grid.setHorizontalSpacing(24)
        grid.setVerticalSpacing(0)
        for col, (key, title) in enumerate(TILES):
            grid.addWidget(label(title, f"server_{key}_label", role="muted"), 0, col)
            self.values[key] = label(MISSING, f"server_{key}_value", title, role="value")
            self.values[key].setStyleSheet("font-size: 20px; font-weight: 600;")
            self.details[key] = label("", f"server_{key}_detail", f"{title} detail", role="muted")
            grid.addWidget(self.values[key], 1, col)
            grid.addWidget(self.details[key], 2, col)
        grid.setColumnStretch(len(TILES), 1)
        box = QVBoxLayout(self)
        box.setContentsMargins(12, 6, 12, 8)
        box.setSpacing(4)
        box.addWidget(self.title)
        box.addLayout(grid)
        self.num_samples = 0
        self._first = None  # the first snapshot since connecting: 'since connect' figures start there
        self.hide()
        bridge.backend_changed.connect(self._on_backend_changed)
        bridge.remote_connected.connect(self._on_remote_connected)
        bridge.server_metrics_sampled.connect(self._on_metrics)

    def _set(self, key: str, value: str, detail: str = "") -> None:
        self.values[key].setText(value)
        self.values[key].setAccessibleDescription(value)
        self.details[key].setText(detail)

    def _on_backend_changed(self, backend) -> None:
        self.setVisible(backend is not None)
        self._first = None
        self.num_samples = 0
        for key, _title in TILES:
            self._set(key, MISSING)
        if backend is not None:
            self.title.setText(f"Server · {backend.spec.base_url} · waiting for /metrics")

    def _on_remote_connected(self, event) -> None:
        name = ENGINE_NAMES.get(event.engine, event.engine.value)
        note = "live from /metrics" if event.has_metrics else "no /metrics: server figures unknown"
        self.title.setText(f"Server · {name} · {event.model} · {event.base_url} · {note}")

    def _on_metrics(self, event) -> None:
        s, iv = event.snapshot, event.interval
        if self._first is None:
            self._first = s
        self.num_samples += 1
        self._set("running", MISSING if s.num_requests_running is None else f"{s.num_requests_running:.0f}")
        self._set("waiting", MISSING if s.num_requests_waiting is None else f"{s.num_requests_waiting:.0f}")
        self._set("kv", MISSING if s.kv_cache_usage is None else f"{s.kv_cache_usage * 100:.1f} %")
        first = self._first
        since = None
        if s.num_accepted_tokens is not None and first.num_accepted_tokens is not None:
            since = acceptance(s.num_accepted_tokens - first.num_accepted_tokens,
                               (s.num_draft_tokens or 0) - (first.num_draft_tokens or 0))
        recent = iv.spec.acceptance_rate if iv is not None and iv.spec is not None else None
        if since is None and recent is None and s.spec_accept_length is not None:
            self._set("acceptance", f"{s.spec_accept_length:.2f}", "accepted length (server's gauge)")
        else:
            shown = recent if recent is not None else since
            self._set("acceptance", MISSING if shown is None else f"{shown * 100:.0f} %",
                      "" if since is None else f"{since * 100:.0f} % since connect")
        tps = iv.generation_tokens_per_s if iv is not None else None
        self._set("speed", MISSING if tps is None else f"{tps:.1f} tok/s",
                  "" if s.generation_tokens is None else f"{s.generation_tokens:,.0f} tokens in all")
        ttft = iv.ttft_mean_s if iv is not None else None
        self._set("ttft", MISSING if ttft is None else f"{ttft * 1000:.0f} ms",
                  "" if s.ttft is None else f"{s.ttft.count:,.0f} requests in all")
