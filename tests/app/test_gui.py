"""app/gui.py: a clear refusal without a display; a clean start and exit with one."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QTimer

from app import gui
from tests.helpers.windows import QT_LOG_IGNORE
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


@pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)
def test_run_gui_opens_the_window_and_exits_cleanly(qapp, monkeypatch, tmp_path, tiny_llama_dir):
    from ui.main_window import MainWindow

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    seen = {}

    def close_when_loaded() -> None:
        windows = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and windows[0].bridge.model_info is not None:
            seen["model"] = windows[0].bridge.model_info.name_or_path
            seen["engine"] = windows[0].bridge._engine
            windows[0].close()
            qapp.quit()
        else:
            QTimer.singleShot(20, close_when_loaded)

    QTimer.singleShot(0, close_when_loaded)
    assert gui.run_gui(str(tiny_llama_dir)) == 0
    assert seen["model"] == str(tiny_llama_dir)
    assert not seen["engine"].is_alive
    assert (tmp_path / "conversations.sqlite3").is_file() and (tmp_path / "settings.ini").is_file()
