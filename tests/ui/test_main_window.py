"""ui/main_window.py: errors as messages, persistence across restarts, accessibility, shutdown."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QMenu,
    QScrollBar,
    QWidget,
)

from engine import events as ev
from engine.config import KVCacheMode
from tests.helpers.windows import QT_LOG_IGNORE, ask
from ui.theme import DARK, ThemeMode

pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)


def test_a_bad_model_path_is_a_message_and_the_next_chat_still_works(qtbot, window, tmp_path):
    picker, bridge = window.engine_panel.picker, window.bridge
    before = bridge.model_info
    qtbot.keyClicks(picker.hub_input, str(tmp_path / "no" / "such" / "model"))
    with qtbot.waitSignal(bridge.error_occurred, timeout=30_000, check_params_cb=lambda e: e.where == "load"):
        qtbot.mouseClick(picker.hub_button, Qt.MouseButton.LeftButton)
    assert window.banner.isVisible()
    assert "Could not load the model" in window.banner.text and "Still using" in window.banner.text
    assert picker.status.state == "failed"
    assert picker.combo.currentData() == before.name_or_path
    assert bridge.model_info == before

    finished = ask(qtbot, window, "is the engine still there", max_tokens=6)
    assert finished.reason is not ev.FinishReason.ERROR and finished.stats.completion_tokens > 0

    qtbot.mouseClick(window.banner._close, Qt.MouseButton.LeftButton)
    assert not window.banner.isVisible()


def test_conversations_survive_a_restart_of_the_window(qtbot, make_window):
    first = make_window()
    finished = ask(qtbot, first, "to be or not to be", max_tokens=10)
    conv_id = first.chat.conversation_id
    first.chat.rename_conversation(conv_id, "Hamlet")
    figures = first.chat.message_views[-1].footer.text()
    make_window.close(first)

    second = make_window()
    chat = second.chat
    assert chat.conversations.titles() == ["Hamlet"]
    chat.select_conversation(conv_id)
    user, answer = chat.message_views
    assert (user.role, user.text) == ("user", "to be or not to be")
    assert (answer.role, answer.text) == ("assistant", finished.text)
    assert answer.footer.text() == figures
    assert finished.config_label in answer.config_footer.text()

    # and the restored conversation carries on with its history
    again = ask(qtbot, second, "what else", max_tokens=4)
    assert again.stats.prompt_tokens > finished.stats.prompt_tokens
    assert len(chat._store.messages(conv_id)) == 4


def test_settings_persist_theme_model_engine_config_and_geometry(qtbot, make_window):
    first = make_window()
    first.set_theme_mode(ThemeMode.DARK)
    assert first.themes.theme is DARK
    with qtbot.waitSignal(first.bridge.config_applied, timeout=30_000):
        first.engine_panel.kv_combo.setCurrentIndex(first.engine_panel.kv_combo.findData(KVCacheMode.OFF))
    first.resize(1000, 700)
    geometry = first.saveGeometry()
    model = first.bridge.model_info.name_or_path
    make_window.close(first)

    second = make_window()
    s = second.settings
    assert s.theme_mode() is ThemeMode.DARK and second.themes.theme is DARK
    assert second.theme_actions[ThemeMode.DARK].isChecked()
    assert s.last_model() == model and s.recent_models()[0] == model
    assert s.engine_config().kv_cache is KVCacheMode.OFF
    assert s.geometry() == geometry
    # restored, not the 1440x900 default (the offscreen screen is 800x800, so Qt clamps the width)
    assert second.height() == 700


def test_add_tab_takes_another_view(window):
    extra = QLabel("dashboard goes here")
    index = window.add_tab(extra, "Dashboard")
    assert window.tabs.tabText(index) == "Dashboard"
    assert extra.objectName() == "dashboard_view" and extra.accessibleName() == "Dashboard"


def test_shortcuts(window):
    assert window.new_chat_action.shortcut().toString() == "Ctrl+N"
    assert window.focus_action.shortcut().toString() == "Ctrl+L"
    window.focus_action.trigger()
    assert window.focusWidget() is window.chat.composer.input


# Qt containers whose contents are ours: look through them, not at them
PASS_THROUGH = {"qt_scrollarea_viewport", "qt_tabwidget_stackedwidget"}


def _qt_internal(widget: QWidget, root: QWidget) -> bool:
    """Parts Qt builds inside its own composite widgets (spin box editors, scroll bars, popups)."""
    if widget.objectName().startswith("qt_") or isinstance(widget, QScrollBar):
        return True
    if isinstance(widget, QMenu) and not widget.title():
        return True  # the menu bar's overflow ('»') popup
    parent = widget.parentWidget()
    while parent is not None and parent is not root:
        if isinstance(parent, (QAbstractSpinBox, QComboBox, QLineEdit)):
            return True
        if parent.objectName().startswith("qt_") and parent.objectName() not in PASS_THROUGH:
            return True
        parent = parent.parentWidget()
    return False


def test_every_widget_has_an_object_name_and_an_accessible_name(qtbot, window):
    ask(qtbot, window, "name everything", max_tokens=4)
    window.chat.settings.set_expanded(True)
    window.banner.show_message("a message")
    missing = []
    for w in window.findChildren(QWidget):
        if _qt_internal(w, window):
            continue
        if not w.objectName() or not w.accessibleName():
            missing.append(f"{type(w).__name__} name={w.objectName()!r} accessible={w.accessibleName()!r} in {type(w.parentWidget()).__name__} {w.parentWidget().objectName()!r}")
    assert not missing, "\n".join(missing)
    checked = [w for w in window.findChildren(QWidget) if not _qt_internal(w, window)]
    assert len(checked) > 80  # the walk really covered the window


def test_close_shuts_the_engine_down(qtbot, make_window):
    window = make_window()
    engine = window.bridge._engine
    assert engine.is_alive
    window.close()
    assert not engine.is_alive
