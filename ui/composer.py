"""Message input: Enter sends, Shift+Enter inserts a newline; Send and Stop buttons."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from ui.widgets import label, named

MIN_LINES, MAX_LINES = 2, 8


class PromptEdit(QPlainTextEdit):
    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class ComposerView(QFrame):
    send_requested = Signal(str)
    stop_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        named(self, "composer", "Message composer")
        self.setProperty("role", "composer")
        self.input = named(PromptEdit(), "chat_input", "Message input",
                           "Enter sends, Shift+Enter adds a new line")
        self.input.setPlaceholderText("Message the model…  Enter sends, Shift+Enter adds a line")
        self.input.setTabChangesFocus(True)
        self.input.submitted.connect(self.submit)
        self.input.textChanged.connect(self._fit)
        self.send_button = named(QPushButton("Send"), "send_button", "Send message")
        self.send_button.setProperty("role", "primary")
        self.send_button.setToolTip("Send (Enter)")
        self.send_button.clicked.connect(self.submit)
        self.stop_button = named(QPushButton("Stop"), "stop_button", "Stop generating")
        self.stop_button.setProperty("role", "danger")
        self.stop_button.setToolTip("Stop (Esc)")
        self.stop_button.clicked.connect(self.stop_requested.emit)
        self.hint = label("", "composer_hint", "Composer status", role="muted")
        buttons = QVBoxLayout()
        buttons.setSpacing(6)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.setSpacing(8)
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        box = QVBoxLayout(self)
        box.setContentsMargins(16, 8, 16, 12)
        box.setSpacing(4)
        box.addLayout(row)
        box.addWidget(self.hint)
        self.set_generating(False)
        self._fit()

    def set_generating(self, generating: bool) -> None:
        self.send_button.setEnabled(not generating)
        self.stop_button.setEnabled(generating)
        self.hint.setText("Generating… Esc stops." if generating else "")
        self.hint.setVisible(generating)

    def submit(self) -> None:
        text = self.input.toPlainText().strip()
        if text and self.send_button.isEnabled():
            self.input.clear()
            self.send_requested.emit(text)

    def _fit(self) -> None:
        lines = max(MIN_LINES, min(MAX_LINES, self.input.document().lineCount()))
        line_h = self.input.fontMetrics().lineSpacing()
        margins = self.input.contentsMargins()
        extra = int(self.input.document().documentMargin() * 2) + margins.top() + margins.bottom() + 8
        self.input.setFixedHeight(lines * line_h + extra)
