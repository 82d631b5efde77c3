"""The GUI's "Serve on port …" toggle: a real window serves its own engine to real clients."""

from __future__ import annotations

import gc
import socket

import httpx
import openai
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, Qt

from app.serve.gui_control import install_serve_toggle
from app.storage import ConversationStore
from engine.engine import Engine
from engine.event_hub import EventHub
from tests.helpers.windows import LOAD_TIMEOUT_MS, QT_LOG_IGNORE
from ui.bridge import EngineBridge
from ui.main_window import MainWindow
from ui.qt_compat import apply_workarounds
from ui.settings_store import WorkbenchSettings, default_settings

apply_workarounds()
pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)
WAIT_MS = 30_000


def _collect() -> None:
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture
def served_window(qtbot, tmp_path, monkeypatch, tiny_llama_dir):
    """A main window composed as app/gui.py does: one event hub feeds the bridge and the server."""
    _collect()
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    engine = Engine(str(tiny_llama_dir), collect_garbage=False)
    hub = EventHub(engine.events).start()
    bridge = EngineBridge(engine, events=hub.open_queue())
    store = ConversationStore()
    window = MainWindow(bridge, store, settings=WorkbenchSettings(default_settings(tmp_path)))
    qtbot.addWidget(window)
    controller = install_serve_toggle(window, engine, hub, bridge)
    window.show()
    with qtbot.waitSignal(bridge.model_loaded, timeout=LOAD_TIMEOUT_MS):
        bridge.start()
    yield window, controller, bridge
    window.close()
    assert controller.server is None, "closing the window did not stop the server"
    assert not engine.is_alive
    assert hub.stop()
    store.close()
    _collect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_toggle_serves_the_windows_engine_and_counts_clients(qtbot, served_window):
    window, controller, bridge = served_window
    toggle = window.findChild(type(controller.panel.toggle), "serve_toggle")
    port_spin = window.findChild(type(controller.panel.port_spin), "serve_port_spin")
    status = window.findChild(type(controller.panel.status_label), "serve_status_label")
    assert not toggle.isChecked() and port_spin.value() == 8000 and status.text() == "not serving"

    port = _free_port()
    port_spin.setValue(port)
    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)
    url = f"http://127.0.0.1:{port}"
    assert status.text() == f"{url}/v1 · 0 clients" and not port_spin.isEnabled()

    # one streaming client: the status bar counts it while it streams
    body = {"prompt": "the quick", "max_tokens": 480, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        qtbot.waitUntil(lambda: status.text() == f"{url}/v1 · 1 client", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: status.text() == f"{url}/v1 · 0 clients", timeout=WAIT_MS)

    # served requests reach the window's own bridge (so the dashboard shows them)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
    with qtbot.waitSignal(bridge.request_finished, timeout=WAIT_MS,
                          check_params_cb=lambda e: e.tag == "serve" and e.reason.value == "length"):
        resp = client.chat.completions.create(model=client.models.list().data[0].id,
                                              messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                              temperature=0, extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 4

    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)
    assert status.text() == "not serving" and port_spin.isEnabled() and controller.server is None
    qtbot.waitUntil(lambda: _refused(f"{url}/health"), timeout=WAIT_MS)


def test_a_busy_port_is_reported_and_the_toggle_springs_back(qtbot, served_window):
    window, controller, _bridge = served_window
    panel = controller.panel
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        panel.port_spin.setValue(port)
        qtbot.mouseClick(panel.toggle, Qt.MouseButton.LeftButton)
        assert not panel.toggle.isChecked() and controller.server is None
        assert panel.status_label.text().startswith(f"not serving: port {port}")
