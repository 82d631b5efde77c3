"""The GUI's "Serve on port …" toggle wired to a real server over the window's own engine.

The server shares the engine the window drives (one event hub feeds both the bridge and the
server), so the dashboard shows served traffic and the engine panel reconfigures it live.
Nothing here blocks the GUI thread: the socket binds at once, the server thread starts
without being waited for, and stopping joins on a helper thread.
"""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QEvent, QObject, Signal

from app.serve.runner import DEFAULT_HOST, ServerThread
from app.serve.session import ServeSession
from engine.engine import Engine
from engine.event_hub import EventHub
from ui.serve_panel import ServePanel

log = logging.getLogger(__name__)


class ServeController(QObject):
    clients_changed = Signal(int)  # emitted on the server thread, delivered queued to the panel

    def __init__(self, panel: ServePanel, engine: Engine, hub: EventHub, bridge, *, host: str = DEFAULT_HOST,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self._engine = engine
        self._hub = hub
        self._bridge = bridge
        self._host = host
        self.server: ServerThread | None = None
        panel.serve_requested.connect(self.start)
        panel.stop_requested.connect(self.stop)
        self.clients_changed.connect(panel.set_clients)

    def start(self, port: int) -> None:
        if self.server is not None:
            return
        session = ServeSession(self._engine, self._hub, model_info=self._bridge.model_info,
                               config=self._bridge.config)
        session.on_clients_changed = self.clients_changed.emit
        try:
            server = ServerThread(session, self._host, port)
        except OSError as exc:
            session.close()
            self.panel.show_stopped(f"port {port}: {exc.strerror or exc}")
            return
        self.server = server.start(wait=False)
        self.panel.show_serving(server.url)

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            threading.Thread(target=server.stop, name="workbench-serve-stop", daemon=True).start()
        self.panel.show_stopped()

    def shutdown(self) -> None:
        """The window is closing: stop the server before the engine goes."""
        server, self.server = self.server, None
        if server is not None and not server.stop():
            log.warning("the server thread did not stop in time")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Close:
            self.shutdown()
        return False


def install_serve_toggle(window, engine: Engine, hub: EventHub, bridge) -> ServeController:
    """Put the toggle in the window's status bar and serve `engine` when it is switched on."""
    panel = ServePanel()
    window.statusBar().addPermanentWidget(panel)
    controller = ServeController(panel, engine, hub, bridge, parent=window)
    window.installEventFilter(controller)
    return controller
