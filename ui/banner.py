"""An inline, dismissable message bar: errors are messages, not crashes or modal dialogs."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton

from ui.formatting import model_display_name
from ui.widgets import named, set_style_state

MAX_KEPT = 20


class BannerView(QFrame):
    """Shows the newest message; dismissing it reveals the previous one still unread."""

    dismissed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        named(self, "message_banner", "Message banner")
        self.setProperty("role", "banner")
        self._messages: list[tuple[str, str]] = []  # (level, text)
        self._icon = named(QLabel(), "banner_icon", "Message level")
        self._icon.setProperty("role", "banner_icon")
        self._text = named(QLabel(), "banner_text", "Message")
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._more = named(QLabel(), "banner_more", "More messages")
        self._more.setProperty("role", "muted")
        self._close = named(QToolButton(), "banner_dismiss_button", "Dismiss message")
        self._close.setText("✕")
        self._close.setToolTip("Dismiss")
        self._close.setCursor(Qt.CursorShape.PointingHandCursor)
        self._close.clicked.connect(self.dismiss)
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 8, 8, 8)
        row.setSpacing(10)
        row.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self._text, 1)
        row.addWidget(self._more, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self._close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    @property
    def text(self) -> str:
        return self._messages[-1][1] if self._messages else ""

    @property
    def count(self) -> int:
        return len(self._messages)

    def show_message(self, text: str, level: str = "error") -> None:
        """level: 'error' | 'warning' | 'info'"""
        self._messages.append((level, text))
        del self._messages[:-MAX_KEPT]
        self._refresh()

    def dismiss(self) -> None:
        if self._messages:
            _, text = self._messages.pop()
            self.dismissed.emit(text)
        self._refresh()

    def watch(self, bridge) -> None:
        """Show the engine's load and engine errors (config errors belong to the engine panel)."""

        def on_error(event) -> None:
            if event.where == "load":
                info = bridge.model_info
                keep = (f" Still using {model_display_name(info.name_or_path)}." if info is not None
                        else " No model is loaded; pick another one in the engine panel.")
                self.show_message(f"Could not load the model: {event.message}{keep}", "error")
            elif event.where == "engine":
                self.show_message(f"Engine error: {event.message}. Requests in flight were ended; "
                                  "the engine keeps running.", "error")

        bridge.error_occurred.connect(on_error)

    def clear(self) -> None:
        self._messages.clear()
        self._refresh()

    def _refresh(self) -> None:
        if not self._messages:
            self.hide()
            return
        level, text = self._messages[-1]
        self._icon.setText({"error": "⚠", "warning": "⚠", "info": "ℹ"}.get(level, "•"))
        self._text.setText(text)
        self._text.setAccessibleDescription(text)
        self._more.setText(f"+{len(self._messages) - 1} more" if len(self._messages) > 1 else "")
        set_style_state(self, "level", level)
        self.show()
