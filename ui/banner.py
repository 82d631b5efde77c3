"""An inline, dismissable message bar: errors are messages, not crashes or modal dialogs.

It shows the newest message; "+N more" lists all of them, and "Dismiss all" clears them.
Messages carry a kind: a successful model load clears the 'load' ones (they are no longer
true), and the same message twice is kept once.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout

from ui.model_names import ModelNames
from ui.widgets import named, set_style_state

MAX_KEPT = 20
KIND_LOAD = "load"
KIND_ENGINE = "engine"


@dataclass(frozen=True)
class BannerMessage:
    level: str  # 'error' | 'warning' | 'info'
    text: str
    kind: str = ""


class BannerView(QFrame):
    """Shows the newest message; dismissing it reveals the previous one still unread."""

    dismissed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        named(self, "message_banner", "Message banner")
        self.setProperty("role", "banner")
        self._messages: list[BannerMessage] = []
        self._expanded = False
        self._icon = named(QLabel(), "banner_icon", "Message level")
        self._icon.setProperty("role", "banner_icon")
        self._text = named(QLabel(), "banner_text", "Message")
        self._text.setWordWrap(True)
        self._text.setTextFormat(Qt.TextFormat.PlainText)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._more = named(QToolButton(), "banner_more", "Show all messages")
        self._more.setProperty("role", "link")
        self._more.setCursor(Qt.CursorShape.PointingHandCursor)
        self._more.clicked.connect(self.toggle_expanded)
        self._clear = named(QToolButton(), "banner_dismiss_all_button", "Dismiss all messages")
        self._clear.setText("Dismiss all")
        self._clear.clicked.connect(self.clear)
        self._close = named(QToolButton(), "banner_dismiss_button", "Dismiss message")
        self._close.setText("✕")
        self._close.setToolTip("Dismiss")
        self._close.setCursor(Qt.CursorShape.PointingHandCursor)
        self._close.clicked.connect(self.dismiss)
        side = QVBoxLayout()
        side.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(4)
        top.addWidget(self._more)
        top.addWidget(self._clear)
        top.addWidget(self._close)
        side.addLayout(top)
        side.addStretch(1)
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 8, 8, 8)
        row.setSpacing(10)
        row.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self._text, 1)
        row.addLayout(side)
        self.hide()

    @property
    def text(self) -> str:
        return self._messages[-1].text if self._messages else ""

    @property
    def count(self) -> int:
        return len(self._messages)

    @property
    def messages(self) -> list[str]:
        return [m.text for m in self._messages]

    def show_message(self, text: str, level: str = "error", kind: str = "") -> None:
        """level: 'error' | 'warning' | 'info'; kind groups messages one event can clear."""
        msg = BannerMessage(level, text, kind)
        self._messages = [m for m in self._messages if m != msg] + [msg]
        del self._messages[:-MAX_KEPT]
        self._refresh()

    def dismiss(self) -> None:
        if self._messages:
            msg = self._messages.pop()
            self.dismissed.emit(msg.text)
        self._refresh()

    def clear_kind(self, kind: str) -> None:
        self._messages = [m for m in self._messages if m.kind != kind]
        self._refresh()

    def toggle_expanded(self) -> None:
        self._expanded = not self._expanded
        self._refresh()

    def watch(self, bridge, names: ModelNames | None = None) -> None:
        """Show the engine's load and engine errors (config errors belong to the engine panel);
        a model that loads clears the load errors before it."""
        names = names or ModelNames()

        def on_error(event) -> None:
            if event.where == "load":
                info = bridge.model_info
                keep = (f" Still using {names(info.name_or_path)}." if info is not None
                        else " No model is loaded; pick another one in the engine panel.")
                self.show_message(f"Could not load the model: {event.message}{keep}", "error", KIND_LOAD)
            elif event.where == "engine":
                self.show_message(f"Engine error: {event.message}. Requests in flight were ended; "
                                  "the engine keeps running.", "error", KIND_ENGINE)

        bridge.error_occurred.connect(on_error)
        bridge.model_loaded.connect(lambda _info: self.clear_kind(KIND_LOAD))

    def clear(self) -> None:
        self._messages.clear()
        self._refresh()

    def _refresh(self) -> None:
        if not self._messages:
            self._expanded = False
            self.hide()
            return
        newest = self._messages[-1]
        self._icon.setText({"error": "⚠", "warning": "⚠", "info": "ℹ"}.get(newest.level, "•"))
        others = len(self._messages) - 1
        if self._expanded and others:
            text = "\n".join(f"• {m.text}" for m in reversed(self._messages))
        else:
            text = newest.text
        self._text.setText(text)
        self._text.setAccessibleDescription(text)
        self._more.setText("Show fewer" if self._expanded else f"+{others} more")
        self._more.setVisible(others > 0)
        self._clear.setVisible(others > 0)
        set_style_state(self, "level", newest.level)
        self.show()
