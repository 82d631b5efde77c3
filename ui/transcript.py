"""The scrolling column of messages: keeps to the bottom while an answer streams, unless the
user scrolled up to read; shows a hint when empty."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

from ui.message_widget import MessageView
from ui.widgets import label, named

BOTTOM_SLACK_PX = 8


class TranscriptView(QScrollArea):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        named(self, "transcript_scroll", "Message history")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.column = named(QWidget(), "transcript", "Messages")
        self._layout = QVBoxLayout(self.column)
        self._layout.setContentsMargins(20, 16, 20, 16)
        self._layout.setSpacing(12)
        self.empty_label = label("", "chat_empty_state", "Chat hint", role="empty_state")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self._layout.addWidget(self.empty_label)
        self._layout.addStretch(1)
        self.setWidget(self.column)
        self.views: list[MessageView] = []
        self._stick_to_bottom = True
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)

    def add(self, view: MessageView) -> None:
        self._layout.insertWidget(self._layout.count() - 1, view)
        self.views.append(view)
        self.empty_label.hide()

    def remove_from(self, index: int) -> None:
        for v in self.views[index:]:
            self._layout.removeWidget(v)
            v.deleteLater()
        del self.views[index:]
        self.empty_label.setVisible(not self.views)

    def set_hint(self, text: str) -> None:
        self.empty_label.setText(text)
        self.empty_label.setVisible(not self.views)

    def follow(self) -> None:
        """Keep the newest message in view from now on."""
        self._stick_to_bottom = True
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())

    def _on_range_changed(self, _lo: int, hi: int) -> None:
        if self._stick_to_bottom:
            self.verticalScrollBar().setValue(hi)

    def _on_scrolled(self, value: int) -> None:
        self._stick_to_bottom = value >= self.verticalScrollBar().maximum() - BOTTOM_SLACK_PX
