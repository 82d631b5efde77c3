"""app/gui.py: a clear refusal without a display; a clean start and exit with one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app import gui
from ui.qt_compat import apply_workarounds

apply_workarounds()


def test_display_detection(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert not gui.display_available({})
    assert gui.display_available({"DISPLAY": ":0"})
    assert gui.display_available({"WAYLAND_DISPLAY": "wayland-0"})
    assert gui.display_available({"QT_QPA_PLATFORM": "offscreen"})
    monkeypatch.setattr(sys, "platform", "darwin")
    assert gui.display_available({})


def test_no_display_prints_one_line_and_returns_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert gui.run_gui() == 2
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert len(lines) == 1
    assert "No display found" in lines[0] and "xvfb-run" in lines[0] and "QT_QPA_PLATFORM=offscreen" in lines[0]


def test_choose_model(tmp_path, monkeypatch):
    from app import paths

    monkeypatch.setattr(paths, "bundled_models_present", lambda: False)
    assert gui.choose_model("gpt2", "/elsewhere") == "gpt2"
    assert gui.choose_model(None, str(tmp_path)) == str(tmp_path)
    assert gui.choose_model(None, "org/model") == "org/model"  # a hub id
    assert gui.choose_model(None, str(tmp_path / "gone")) is None  # a vanished folder is skipped
    monkeypatch.setattr(paths, "bundled_models_present", lambda: True)
    assert gui.choose_model(None, None) == str(paths.bundled_target_dir())


RUN_GUI_SCRIPT = """
import json, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from app import gui
from ui.main_window import MainWindow

seen = {}

def close_when_loaded():
    app = QApplication.instance()
    windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if windows and windows[0].bridge.model_info is not None:
        seen["model"] = windows[0].bridge.model_info.name_or_path
        seen["engine"] = windows[0].bridge._engine
        seen["tabs"] = [windows[0].tabs.tabText(i) for i in range(windows[0].tabs.count())]
        windows[0].close()
        app.quit()
    else:
        QTimer.singleShot(20, close_when_loaded)

QTimer.singleShot(0, close_when_loaded)
rc = gui.run_gui(sys.argv[1])
print(json.dumps({"rc": rc, "model": seen.get("model"), "tabs": seen.get("tabs"),
                  "engine_alive": seen["engine"].is_alive if "engine" in seen else None}))
"""


def test_run_gui_opens_the_window_and_exits_cleanly(tmp_path, tiny_llama_dir):
    """In a child process: app.exec() and quit() would leave this test process's QApplication
    unable to run the event loops later tests need."""
    import json
    import os
    import subprocess

    env = dict(os.environ, WORKBENCH_DATA_DIR=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", RUN_GUI_SCRIPT, str(tiny_llama_dir)], env=env,
                         capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    assert result["model"] == str(tiny_llama_dir)
    assert result["tabs"] == ["Chat", "Compare", "Dashboard", "Tune", "Timeline", "Memory"]
    assert result["engine_alive"] is False
    assert (tmp_path / "conversations.sqlite3").is_file() and (tmp_path / "settings.ini").is_file()


# ---------------------------------------------------------------- an unreadable conversations database

def _answer_dialog(button_name: str, seen: dict) -> None:
    """Click `button_name` in the unreadable-database dialog once it is up (a real modal dialog)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

    box = QApplication.activeModalWidget()
    if isinstance(box, QMessageBox) and box.objectName() == gui.CORRUPT_DIALOG_NAME:
        seen["text"] = box.informativeText()
        box.findChild(QPushButton, button_name).click()
    else:
        QTimer.singleShot(10, lambda: _answer_dialog(button_name, seen))


@pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")
def test_an_unreadable_database_is_moved_aside_after_asking(qtbot, tmp_path):
    from PySide6.QtCore import QTimer

    db = tmp_path / "conversations.sqlite3"
    garbage = b"this is not a database " * 200
    db.write_bytes(garbage)
    seen: dict = {}
    QTimer.singleShot(0, lambda: _answer_dialog("move_database_aside_button", seen))
    store = gui.open_store(db)
    try:
        assert str(db) in seen["text"], "the dialog names the file"
        conv = store.create_conversation("fresh")
        assert [c.title for c in store.conversations()] == ["fresh"] and conv.id == 1
        [moved] = [p for p in tmp_path.iterdir() if p.name.startswith("conversations.sqlite3.unreadable-")]
        assert moved.read_bytes() == garbage, "nothing was deleted"
    finally:
        store.close()


@pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")
def test_quitting_at_the_unreadable_database_dialog_leaves_the_file_alone(qtbot, tmp_path):
    from PySide6.QtCore import QTimer

    db = tmp_path / "conversations.sqlite3"
    db.write_bytes(b"\x00" * 5000)
    seen: dict = {}
    QTimer.singleShot(0, lambda: _answer_dialog("quit_button", seen))
    assert gui.open_store(db) is None
    assert seen["text"] and db.read_bytes() == b"\x00" * 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conversations.sqlite3"]


def test_a_damaged_database_is_reported_not_crashed_on(tmp_path):
    from app.storage import ConversationStore, DatabaseUnreadable

    db = tmp_path / "conversations.sqlite3"
    store = ConversationStore(db)
    conv = store.create_conversation("x")
    for i in range(300):
        store.add_message(conv.id, "user", f"message {i} " + "y" * 400)
    store.close()
    data = bytearray(db.read_bytes())
    data[4096 * 3: 4096 * 6] = b"\xff" * (4096 * 3)  # wreck some pages in the middle
    db.write_bytes(bytes(data))
    with pytest.raises(DatabaseUnreadable) as info:
        ConversationStore(db).close()
    assert info.value.path == db


RUN_GUI_CORRUPT_SCRIPT = RUN_GUI_SCRIPT.replace(
    "QTimer.singleShot(0, close_when_loaded)",
    """def click_move():
    from PySide6.QtWidgets import QMessageBox, QPushButton
    box = QApplication.activeModalWidget()
    if isinstance(box, QMessageBox) and box.objectName() == gui.CORRUPT_DIALOG_NAME:
        box.findChild(QPushButton, "move_database_aside_button").click()
    else:
        QTimer.singleShot(20, click_move)

QTimer.singleShot(0, click_move)
QTimer.singleShot(0, close_when_loaded)""")


def test_run_gui_starts_when_the_database_is_corrupt(tmp_path, tiny_llama_dir):
    import json
    import os
    import subprocess

    (tmp_path / "conversations.sqlite3").write_bytes(b"garbage" * 1000)
    env = dict(os.environ, WORKBENCH_DATA_DIR=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", RUN_GUI_CORRUPT_SCRIPT, str(tiny_llama_dir)], env=env,
                         capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0 and result["model"] == str(tiny_llama_dir)
    assert "moved the unreadable conversations database to" in out.stderr
    assert any(p.name.startswith("conversations.sqlite3.unreadable-") for p in tmp_path.iterdir())
