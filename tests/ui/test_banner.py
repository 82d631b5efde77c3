"""ui/banner.py in the real window: load errors clear when a load succeeds, '+N more' lists them,
and the About box names the version."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from tests.helpers.windows import QT_LOG_IGNORE

pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)


def _load(qtbot, window, path: str, *, fails: bool) -> None:
    picker, bridge = window.engine_panel.picker, window.bridge
    picker.hub_input.clear()
    qtbot.keyClicks(picker.hub_input, path)
    signal = bridge.error_occurred if fails else bridge.model_loaded
    check = (lambda e: e.where == "load") if fails else None
    with qtbot.waitSignal(signal, timeout=60_000, check_params_cb=check):
        qtbot.mouseClick(picker.hub_button, Qt.MouseButton.LeftButton)


def test_load_errors_stack_into_one_list_and_a_good_load_clears_them(qtbot, window, tmp_path, tiny_gpt2_dir):
    banner = window.banner
    _load(qtbot, window, str(tmp_path / "missing-one"), fails=True)
    _load(qtbot, window, str(tmp_path / "missing-two"), fails=True)
    assert banner.isVisible() and banner.count == 2
    more = banner._more
    assert more.isVisible() and more.text() == "+1 more"
    qtbot.mouseClick(more, Qt.MouseButton.LeftButton)  # "+1 more" does something: lists them all
    shown = banner._text.text()
    assert "missing-one" in shown and "missing-two" in shown
    assert more.text() == "Show fewer"

    _load(qtbot, window, str(tiny_gpt2_dir), fails=False)
    assert not banner.isVisible() and banner.count == 0, "a successful load clears the stale load errors"
    picker = window.engine_panel.picker
    assert picker.hub_input.text() == str(tiny_gpt2_dir) and picker.status.text().endswith(tiny_gpt2_dir.name)


def test_dismiss_all_clears_every_message(qtbot, window):
    banner = window.banner
    for text in ("one", "two", "three", "two"):  # the same message twice is kept once
        window.show_message(text)
    assert banner.count == 3 and banner._more.text() == "+2 more"
    qtbot.mouseClick(banner._clear, Qt.MouseButton.LeftButton)
    assert not banner.isVisible() and banner.count == 0


def test_about_names_the_installed_version(qtbot, window):
    from importlib import metadata

    version = metadata.version("inference-workbench")
    seen = {}

    def read_and_close():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen["text"] = box.text()
            box.accept()
        else:
            QTimer.singleShot(10, read_and_close)

    QTimer.singleShot(0, read_and_close)
    window.findChild(type(window.new_chat_action), "about_action").trigger()
    assert f"Version {version}" in seen["text"]
