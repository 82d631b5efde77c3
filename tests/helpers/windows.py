"""Building, driving and closing main windows in tests (no sleeps: signals and waitUntil only)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from app.storage import ConversationStore
from engine import events as ev
from engine.engine import Engine
from ui.bridge import EngineBridge
from ui.main_window import MainWindow
from ui.settings_store import WorkbenchSettings, default_settings

DEFAULT_MODEL = "<default tiny model>"
LOAD_TIMEOUT_MS = 60_000
ANSWER_TIMEOUT_MS = 60_000

# The offscreen platform warns that it cannot propagate size hints whenever a window is shown.
QT_LOG_IGNORE = ("This plugin does not support propagateSizeHints",)


class WindowFactory:
    def __init__(self, qtbot, data_dir: Path, default_model: str) -> None:
        self.qtbot = qtbot
        self.data_dir = data_dir
        self.default_model = default_model
        self._made: list[tuple[MainWindow, ConversationStore]] = []

    def __call__(self, model: str | None = DEFAULT_MODEL, *, wait_loaded: bool = True,
                 **window_kwargs) -> MainWindow:
        """model: a path, None for no model at all, or the factory's default tiny model."""
        engine = Engine(self.default_model if model == DEFAULT_MODEL else model)
        bridge = EngineBridge(engine)
        store = ConversationStore()
        settings = WorkbenchSettings(default_settings(self.data_dir))
        window = MainWindow(bridge, store, settings=settings, **window_kwargs)
        self.qtbot.addWidget(window)
        self._made.append((window, store))
        window.show()
        if wait_loaded:
            with self.qtbot.waitSignal(bridge.model_loaded, timeout=LOAD_TIMEOUT_MS):
                bridge.start()
        else:
            bridge.start()
        return window

    def close(self, window: MainWindow) -> None:
        for i, (w, store) in enumerate(self._made):
            if w is window:
                w.close()
                assert not w.bridge._engine.is_alive, "engine thread still running after close"
                store.close()
                del self._made[i]
                return

    def close_all(self) -> None:
        for window, _store in list(self._made):
            self.close(window)


def send_prompt(qtbot, window: MainWindow, text: str, *, max_tokens: int = 24) -> str:
    """Type into the input and press Enter, as a user would; returns the request id."""
    chat = window.chat
    chat.settings.max_tokens.setValue(max_tokens)
    with qtbot.waitSignal(chat.generation_started, timeout=5000) as started:
        qtbot.keyClicks(chat.composer.input, text)
        qtbot.keyClick(chat.composer.input, Qt.Key.Key_Return)
    return started.args[0]


def wait_answer(qtbot, window: MainWindow, timeout: int = ANSWER_TIMEOUT_MS) -> ev.RequestFinished:
    with qtbot.waitSignal(window.chat.generation_finished, timeout=timeout) as finished:
        pass
    return finished.args[0]


def ask(qtbot, window: MainWindow, text: str, *, max_tokens: int = 24) -> ev.RequestFinished:
    chat = window.chat
    chat.settings.max_tokens.setValue(max_tokens)
    with qtbot.waitSignal(chat.generation_finished, timeout=ANSWER_TIMEOUT_MS) as finished:
        qtbot.keyClicks(chat.composer.input, text)
        qtbot.keyClick(chat.composer.input, Qt.Key.Key_Return)
    return finished.args[0]


def first_tokens(qtbot, window: MainWindow) -> None:
    """Wait until some of the answer has been shown."""
    qtbot.waitUntil(lambda: bool(window.chat.message_views and window.chat.message_views[-1].text),
                    timeout=ANSWER_TIMEOUT_MS)
