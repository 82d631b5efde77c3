"""Small widget helpers shared by the views: naming for tests and screen readers, status pills."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str, accessible: str, description: str = "") -> W:
    """Give a widget its objectName (tests, QSS) and accessible name (screen readers)."""
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    if description:
        widget.setAccessibleDescription(description)
    return widget


def label(text: str, name: str, accessible: str | None = None, *, role: str = "") -> QLabel:
    """A QLabel with names; `role` becomes a QSS property (e.g. 'muted', 'section', 'value')."""
    w = named(QLabel(text), name, accessible or text or name)
    if role:
        w.setProperty("role", role)
    return w


def set_style_state(widget: QWidget, prop: str, value: str) -> None:
    """Change a QSS-visible dynamic property and re-polish so the style follows."""
    if widget.property(prop) == value:
        return
    widget.setProperty(prop, value)
    style = widget.style()
    style.unpolish(widget)
    style.polish(widget)


class StatusPill(QLabel):
    """'applying…' / 'applied' / 'failed: why' next to a control."""

    def __init__(self, name: str, accessible: str) -> None:
        super().__init__("")
        named(self, name, accessible)
        self.setProperty("role", "pill")
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.state = ""
        self.hide()

    def show_state(self, state: str, message: str = "") -> None:
        """state: 'applying' | 'applied' | 'failed' | ''"""
        self.state = state
        text = {"applying": "applying…", "applied": "✓ applied", "failed": f"failed: {message}"}.get(state, "")
        self.setText(text)
        self.setToolTip(message if state == "failed" else "")
        self.setAccessibleDescription(text)
        set_style_state(self, "state", state)
        self.setVisible(bool(text))


class ElidedLabel(QLabel):
    """One line that ends in '…' when it does not fit; the whole text is its tooltip."""

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        self._full = text
        self.setToolTip(text)
        self.setAccessibleDescription(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(1, self.width()))
        super().setText(shown)


def labelled(title: str, widget: QWidget) -> QWidget:
    """A field label and its control side by side, one unit for a flowing toolbar."""
    pair = QWidget()
    row = QHBoxLayout(pair)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(4)
    row.addWidget(label(title, f"{widget.objectName()}_label", f"{title} label", role="field"))
    row.addWidget(widget)
    return pair
