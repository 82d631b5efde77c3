"""One chat message: role header with actions, Markdown body streaming in, metrics footer."""

from __future__ import annotations

import time

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QImage, QTextDocument
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
)

from ui import rich_text
from ui.answer_footer import footer_lines
from ui.theme import LIGHT, Theme
from ui.widgets import label, named


RENDER_BUDGET_S = 0.02  # Markdown conversion per render call; the rest follows on the next turn


class AutoHeightBrowser(QTextBrowser):
    """A read-only rich-text view as tall as its document: the transcript scrolls, not each message.

    It never loads anything by itself: no resource (image, stylesheet) is fetched whatever the
    document names, and a click on a link only emits anchorClicked (the message view decides)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)
        self.refused_resources: list[str] = []  # what the document asked for and did not get
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(0)
        self.viewport().setAutoFillBackground(False)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def _fit(self, *_args) -> None:
        height = int(self.document().size().height() + 0.999) + self.frameWidth() * 2
        if self.height() != max(height, 18):
            self.setFixedHeight(max(height, 18))

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self.height())

    def loadResource(self, kind: int, name: QUrl):  # noqa: N802 - Qt override
        """Model text must never make the app read a file, a device or a network resource.
        An empty (not a null) value: on null, QTextDocument would read a local file itself."""
        self.refused_resources.append(name.toString())
        del self.refused_resources[:-20]
        if kind == int(QTextDocument.ResourceType.ImageResource):
            return QImage()
        return QByteArray()

    def setSource(self, name: QUrl, *args) -> None:  # noqa: N802 - Qt override
        """Never navigate inside a message (a link to file:///etc/passwd would show that file)."""
        return


class MessageView(QFrame):
    """Renders one message. The chat view owns the data flow; this widget only shows it."""

    regenerate_requested = Signal()
    edit_submitted = Signal(str)
    link_blocked = Signal(str)  # a clicked link that is not http(s): nothing was opened

    def __init__(self, role: str, text: str = "", *, message_id: int | None = None,
                 metrics: dict | None = None, config: dict | None = None,
                 runs: list | None = None, theme: Theme = LIGHT, parent=None,
                 render_now: bool = True) -> None:
        """render_now=False: the caller renders it later (the chat view spreads the rendering of
        a whole conversation over several event-loop turns)."""
        super().__init__(parent)
        who = {"user": "You", "assistant": "Assistant", "system": "System"}.get(role, role.title())
        named(self, f"{role}_message", f"{who} message")
        self.setProperty("role", f"{role}_message")
        self.role = role
        self.message_id = message_id
        self.text = text
        self.runs: list[list[str]] = [list(r) for r in runs or []]
        self.metrics = metrics
        self.config = config
        self.streaming = False
        self.error: str | None = None
        self._theme = theme
        self._colour_tokens = False
        self._renderer = rich_text.MarkdownRenderer()
        self._continue_pending = False
        self._continue_timer = QTimer(self)  # a child: it dies with the view, never fires after
        self._continue_timer.setSingleShot(True)
        self._continue_timer.setInterval(0)
        self._continue_timer.timeout.connect(self._continue_render)
        self.last_render_s = 0.0
        self.link_dialog: QMessageBox | None = None

        self._who = label(who, "message_role_label", f"{who} said", role="message_role")
        self._copy = self._tool("Copy", "copy_message_button", "Copy message", self._copy_text)
        self._edit = self._tool("Edit", "edit_message_button", "Edit and resend", self.begin_edit)
        self._regen = self._tool("Regenerate", "regenerate_button", "Regenerate answer",
                                 self.regenerate_requested.emit)
        self._edit.setVisible(role == "user")
        self._regen.setVisible(False)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.setSpacing(4)
        header.addWidget(self._who)
        header.addStretch(1)
        for b in (self._copy, self._edit, self._regen):
            header.addWidget(b)

        self.body = named(AutoHeightBrowser(), "message_body", f"{who} message text")
        self.body.anchorClicked.connect(self._on_link_clicked)
        self._editor = named(QPlainTextEdit(), "message_editor", "Edit message text")
        self._editor.setMinimumHeight(80)
        self._editor.hide()
        self._save = named(QPushButton("Save && send"), "save_edit_button", "Save edit and resend")
        self._save.setProperty("role", "primary")
        self._cancel = named(QPushButton("Cancel"), "cancel_edit_button", "Cancel edit")
        self._save.clicked.connect(self._submit_edit)
        self._cancel.clicked.connect(self.end_edit)
        self._edit_row = QHBoxLayout()
        self._edit_row.addStretch(1)
        self._edit_row.addWidget(self._cancel)
        self._edit_row.addWidget(self._save)
        self._save.hide()
        self._cancel.hide()

        self.error_label = label("", "message_error_label", "Generation error", role="error")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.footer = label("", "message_footer", "Answer metrics", role="footer")
        self.footer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.footer.setWordWrap(True)
        self.config_footer = label("", "message_config_footer", "Answer configuration", role="footer")
        self.config_footer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.config_footer.setWordWrap(True)

        box = QVBoxLayout(self)
        box.setContentsMargins(16, 10, 16, 12)
        box.setSpacing(6)
        box.addLayout(header)
        box.addWidget(self.body)
        box.addWidget(self._editor)
        box.addLayout(self._edit_row)
        box.addWidget(self.error_label)
        box.addWidget(self.footer)
        box.addWidget(self.config_footer)
        self._refresh_footer()
        if render_now:
            self.render()

    def _tool(self, text: str, name: str, accessible: str, slot) -> QToolButton:
        b = named(QToolButton(), name, accessible)
        b.setText(text)
        b.setToolTip(accessible)
        b.setProperty("role", "message_action")
        b.setCursor(Qt.CursorShape.PointingHandCursor)
        b.clicked.connect(slot)
        return b

    # ---- data in
    def append(self, delta: str, token_texts: tuple[str, ...] = (), origins: tuple = ()) -> None:
        self.text += delta
        for piece, origin in zip(token_texts, origins):
            if piece:
                value = getattr(origin, "value", origin)
                if self.runs and self.runs[-1][1] == value:
                    self.runs[-1][0] += piece
                else:
                    self.runs.append([piece, value])

    def set_streaming(self, streaming: bool) -> None:
        self.streaming = streaming
        self._copy.setEnabled(not streaming)
        self.render()

    def finish(self, text: str, metrics: dict, config: dict, error: str | None = None) -> None:
        self.text = text
        self.metrics = metrics
        self.config = config
        self.error = error
        self.streaming = False
        self._copy.setEnabled(True)
        self.error_label.setText(f"⚠ {error}" if error else "")
        self.error_label.setVisible(bool(error))
        self._refresh_footer()
        self.render()

    def set_can_regenerate(self, can: bool) -> None:
        """On the last answer: ask again; on a last question left unanswered: answer it."""
        self._regen.setText("Answer" if self.role == "user" else "Regenerate")
        self._regen.setVisible(can and self.role in ("assistant", "user"))

    def set_actions_enabled(self, enabled: bool) -> None:
        for b in (self._edit, self._regen):
            b.setEnabled(enabled)

    # ---- rendering
    @property
    def has_origins(self) -> bool:
        return bool(self.runs)

    def set_theme(self, theme: Theme, *, render_now: bool = True) -> None:
        self._theme = theme
        if render_now:
            self.render()

    def set_colour_tokens(self, on: bool, *, render_now: bool = True) -> bool:
        """True when the look changed (and, without render_now, a render is owed)."""
        if on != self._colour_tokens:
            self._colour_tokens = on
            if render_now:
                self.render()
            return True
        return False

    def render(self) -> None:
        """Show the text. Markdown conversion has a time budget: blocks it did not reach show as
        plain text and a follow-up render (next event-loop turn) converts them."""
        started = time.perf_counter()
        self._continue_pending = False
        doc = self.body.document()
        doc.setDefaultStyleSheet(rich_text.document_css(self._theme))
        complete = True
        if self._colour_tokens and self.runs:
            html = rich_text.origin_html(self.text, self.runs, self._theme, streaming=self.streaming)
        else:
            html, complete = self._renderer.render(self.text, streaming=self.streaming,
                                                   budget_s=RENDER_BUDGET_S)
        self.body.setHtml(html)
        self.body.setVisible(bool(self.text) or self.streaming or not self.error)
        if not complete and not self._continue_pending:
            self._continue_pending = True
            self._continue_timer.start()
        self.last_render_s = time.perf_counter() - started

    @property
    def render_complete(self) -> bool:
        return not self._continue_pending

    def _continue_render(self) -> None:
        if self._continue_pending:
            self.render()

    # ---- links: http(s) only, after the user saw the whole target
    def _on_link_clicked(self, url: QUrl) -> None:
        target = url.toString()
        if not rich_text.link_allowed(target):
            self.link_blocked.emit(target)
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Open link?",
                          "Open this link in your web browser?", parent=self)
        named(box, "open_link_dialog", "Open link?")
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setInformativeText(target)  # the full target, not the text the model wrote over it
        box.setStandardButtons(QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.finished.connect(lambda _r, b=box, u=QUrl(url): self._on_link_answered(b, u))
        self.link_dialog = box
        box.open()

    def _on_link_answered(self, box: QMessageBox, url: QUrl) -> None:
        if box.clickedButton() is box.button(QMessageBox.StandardButton.Open):
            QDesktopServices.openUrl(url)
        self.link_dialog = None
        box.deleteLater()

    def _refresh_footer(self) -> None:
        figures, config = footer_lines(self.metrics, self.config)
        self.footer.setText(figures)
        self.footer.setVisible(bool(figures))
        self.config_footer.setText(config)
        self.config_footer.setVisible(bool(config))

    # ---- editing
    def begin_edit(self) -> None:
        self._editor.setPlainText(self.text)
        for w in (self._editor, self._save, self._cancel):
            w.show()
        self.body.hide()
        self._editor.setFocus()

    def end_edit(self) -> None:
        for w in (self._editor, self._save, self._cancel):
            w.hide()
        self.body.show()

    def _submit_edit(self) -> None:
        text = self._editor.toPlainText().strip()
        if text:
            self.end_edit()
            self.edit_submitted.emit(text)

    def _copy_text(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
