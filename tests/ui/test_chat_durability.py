"""kill -9 while an answer streams loses (almost) nothing: the chat writes the answer as it grows,
the next start marks it interrupted, and Regenerate replaces it."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.windows import QT_LOG_IGNORE

pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from pathlib import Path
from ui.qt_compat import apply_workarounds
apply_workarounds()
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
from app.gui import open_store
from engine.engine import Engine
from ui.bridge import EngineBridge
from ui.main_window import MainWindow
from ui.settings_store import WorkbenchSettings, default_settings

store = open_store()
bridge = EngineBridge(Engine(sys.argv[1]))
window = MainWindow(bridge, store, settings=WorkbenchSettings(default_settings(Path(sys.argv[2]))))
window.show()

def go(_info):
    window.chat.settings.max_tokens.setValue(32000)  # streams for seconds, decode bursts and all
    window.chat.settings.stops.setText("")
    window.chat.send("friends romans countrymen lend me your ears")

bridge.model_loaded.connect(go)
window.chat.answer_saved.connect(lambda mid, text: print(json.dumps({"id": mid, "text": text}), flush=True))
bridge.start()
app.exec()
"""


def _long_context_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["max_position_embeddings"] = 32768  # rotary: room for an answer that outlives the kill
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _first_saved(proc: subprocess.Popen, timeout_s: float = 120.0) -> dict:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while True:
        if not sel.select(timeout=timeout_s):
            raise AssertionError("the child never reported a saved partial answer")
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"the child exited early: {proc.stderr.read()[-2000:]!r}")
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            if line.startswith("{"):
                saved = json.loads(line)
                if saved["text"]:
                    return saved


def test_kill_9_while_streaming_keeps_the_partial_answer(qtbot, make_window, data_dir, tiny_llama_dir, tmp_path):
    from app import gui
    from app.storage import DB_FILENAME

    model = _long_context_copy(tiny_llama_dir, tmp_path / "long-ctx")
    env = dict(os.environ, WORKBENCH_DATA_DIR=str(data_dir), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(model), str(data_dir)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        saved = _first_saved(proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = gui.open_store(data_dir / DB_FILENAME)  # the next start
    [conv] = store.conversations()
    user, answer = store.messages(conv.id)
    store.close()
    assert user.content == "friends romans countrymen lend me your ears"
    assert answer.id == saved["id"] and answer.content.startswith(saved["text"])
    assert answer.state == "interrupted"

    window = make_window(str(model))
    chat = window.chat
    chat.select_conversation(conv.id)
    shown = chat.message_views[-1]
    assert shown.text == answer.content
    assert "interrupted" in shown.footer.text()
    qtbot.waitUntil(shown._regen.isVisible, timeout=5000)
    chat.settings.max_tokens.setValue(6)
    assert window.regenerate_action.shortcut().toString() == "Ctrl+R"
    with qtbot.waitSignal(chat.generation_finished, timeout=60_000) as done:
        window.regenerate_action.trigger()
    assert done.args[0].stats.completion_tokens > 0
    stored = chat._store.messages(conv.id)
    assert [m.role for m in stored] == ["user", "assistant"] and stored[-1].state == "done"
    assert stored[-1].content == done.args[0].text


def test_the_streaming_answer_is_written_once_a_second_in_place(qtbot, make_window, tiny_llama_dir, tmp_path):
    from tests.helpers.windows import first_tokens, send_prompt

    window = make_window(str(_long_context_copy(tiny_llama_dir, tmp_path / "long-ctx")))
    chat = window.chat
    chat.settings.stops.setText("")
    send_prompt(qtbot, window, "now is the winter of our discontent", max_tokens=32000)
    first_tokens(qtbot, window)
    with qtbot.waitSignal(chat.answer_saved, timeout=10_000) as first:
        pass
    with qtbot.waitSignal(chat.answer_saved, timeout=10_000) as second:
        pass
    assert first.args[0] == second.args[0], "the same row is updated, not a new one each time"
    assert second.args[1].startswith(first.args[1]) and len(second.args[1]) > len(first.args[1])
    rows = chat._store.messages(chat.conversation_id)
    assert [(m.role, m.state) for m in rows] == [("user", "done"), ("assistant", "streaming")]
    with qtbot.waitSignal(chat.generation_finished, timeout=30_000) as done:
        chat.stop()
    rows = chat._store.messages(chat.conversation_id)
    assert [(m.role, m.state) for m in rows] == [("user", "done"), ("assistant", "done")]
    assert rows[-1].id == first.args[0] and rows[-1].content == done.args[0].text
    assert len(chat.message_views) == 2
