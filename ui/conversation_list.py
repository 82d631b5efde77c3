"""Conversation list: search filter, new, rename (inline), delete (after a confirmation dialog)."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from ui.widgets import label, named

ID_ROLE = Qt.ItemDataRole.UserRole


def _when(ts: float) -> str:
    age = time.time() - ts
    if age < 60:
        return "just now"
    if age < 3600:
        return f"{int(age // 60)} min ago"
    if age < 86400:
        return time.strftime("%H:%M", time.localtime(ts))
    return time.strftime("%d %b", time.localtime(ts))


class ConversationListView(QFrame):
    conversation_selected = Signal(int)
    new_requested = Signal()
    rename_requested = Signal(int, str)
    delete_requested = Signal(int)
    search_changed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        named(self, "conversation_list_panel", "Conversations")
        self.setProperty("role", "sidebar")
        self._updating = False
        title = label("Conversations", "conversations_title", role="section")
        self.new_button = named(QPushButton("+ New"), "new_chat_button", "New chat")
        self.new_button.setToolTip("New chat (Ctrl+N)")
        self.new_button.setProperty("role", "primary")
        self.new_button.clicked.connect(self.new_requested.emit)
        self.search = named(QLineEdit(), "conversation_search", "Search conversations")
        self.search.setPlaceholderText("Search…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.search_changed.emit)
        self.list = named(QListWidget(), "conversation_list", "Conversation list")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed
                                  | QAbstractItemView.EditTrigger.DoubleClicked)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.list.itemChanged.connect(self._on_item_changed)
        # one line per conversation, cut with '…' (the tooltip has it whole): never a sideways scroll
        self.list.setWordWrap(False)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.rename_button = named(QPushButton("Rename"), "rename_chat_button", "Rename conversation")
        self.rename_button.setToolTip("Rename (F2 or double-click)")
        self.rename_button.clicked.connect(self.begin_rename)
        self.delete_button = named(QPushButton("Delete"), "delete_chat_button", "Delete conversation")
        self.delete_button.setToolTip("Delete this conversation (asks first)")
        self.delete_button.setProperty("role", "danger")
        self.delete_button.clicked.connect(self._on_delete_clicked)
        self.delete_dialog: QMessageBox | None = None
        self.empty_label = label("No conversations yet.\nType a message to start one.", "conversations_empty",
                                 "No conversations", role="muted")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        top = QHBoxLayout()
        top.addWidget(title, 1)
        top.addWidget(self.new_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.rename_button)
        buttons.addWidget(self.delete_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(12, 12, 12, 12)
        box.setSpacing(8)
        box.addLayout(top)
        box.addWidget(self.search)
        box.addWidget(self.list, 1)
        box.addWidget(self.empty_label)
        box.addLayout(buttons)

    # ---- data in
    def set_conversations(self, conversations, current_id: int | None) -> None:
        self._updating = True
        try:
            self.list.clear()
            for conv in conversations:
                item = QListWidgetItem(conv.title)
                item.setData(ID_ROLE, conv.id)
                item.setToolTip(f"{conv.title}\nupdated {_when(conv.updated)}")
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
                if conv.id == current_id:
                    self.list.setCurrentItem(item)
        finally:
            self._updating = False
        has_any = self.list.count() > 0
        self.empty_label.setVisible(not has_any)
        self.empty_label.setText("No matches." if self.search.text() else
                                 "No conversations yet.\nType a message to start one.")
        self._update_buttons()

    @property
    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item is not None else None

    def titles(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    # ---- actions
    def begin_rename(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.list.editItem(item)

    def _on_delete_clicked(self) -> None:
        item = self.list.currentItem()
        if item is None:
            return
        conv_id, title = item.data(ID_ROLE), item.text()
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete conversation?",
                          "Delete this conversation and all its messages?", parent=self)
        named(box, "delete_conversation_dialog", "Delete conversation?")
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setInformativeText(f"“{title}” — this cannot be undone.")
        delete = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
        delete.setObjectName("confirm_delete_button")
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        cancel.setObjectName("cancel_delete_button")
        box.setDefaultButton(cancel)
        box.finished.connect(lambda _r: self._on_delete_answered(box, delete, conv_id))
        self.delete_dialog = box
        box.open()

    def _on_delete_answered(self, box: QMessageBox, delete, conv_id: int) -> None:
        self.delete_dialog = None
        box.deleteLater()
        if box.clickedButton() is delete:
            self.delete_requested.emit(conv_id)

    def _on_current_changed(self, current, _previous) -> None:
        self._update_buttons()
        if not self._updating and current is not None:
            self.conversation_selected.emit(current.data(ID_ROLE))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        title = item.text().strip()
        if title:
            self.rename_requested.emit(item.data(ID_ROLE), title)

    def _update_buttons(self) -> None:
        has = self.list.currentItem() is not None
        self.rename_button.setEnabled(has)
        self.delete_button.setEnabled(has)
