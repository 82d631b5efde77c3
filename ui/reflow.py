"""Layouts that fit the window instead of forcing it wider.

- FlowLayout: items left to right, wrapping onto the next line when the row is full (a
  toolbar or a row of settings that must not push a horizontal scroll bar).
- ReflowGrid: a widget laying out cells in as many columns as fit (each at least
  `min_cell_width` wide, at most `max_columns`), re-flowing when it is resized.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import QGridLayout, QLayout, QLayoutItem, QSizePolicy, QWidget


class FlowLayout(QLayout):
    """Lines of items; an item that does not fit on the current line starts the next one."""

    def __init__(self, parent: QWidget | None = None, *, spacing: int = 8, line_spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self._line_spacing = line_spacing

    # ---- QLayout protocol
    def addItem(self, item: QLayoutItem) -> None:  # Qt override
        self._items.append(item)

    def count(self) -> int:  # Qt override
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # Qt override
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # Qt override
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # Qt override
        return Qt.Orientation(0)

    def heightForWidth(self, width: int) -> int:  # Qt override
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # Qt override
        """Lay the lines out, and make the owner as tall as they are. (Not height-for-width:
        that would make every enclosing layout size itself by height-for-width, and a scroll
        area around it would take the other items' preferred heights as its content height.)"""
        super().setGeometry(rect)
        height = self._arrange(rect, move=True)
        owner = self.parentWidget()
        if owner is not None and owner.layout() is self and owner.minimumHeight() != height:
            owner.setMinimumHeight(height)

    def sizeHint(self) -> QSize:  # Qt override
        m = self.contentsMargins()
        width = sum(i.sizeHint().width() for i in self._items if not i.isEmpty())
        width += self._spacing * max(len(self._visible()) - 1, 0)
        height = max((i.sizeHint().height() for i in self._items), default=0)
        return QSize(width + m.left() + m.right(), height + m.top() + m.bottom())

    def minimumSize(self) -> QSize:  # Qt override
        """As wide as the widest item: everything else wraps."""
        size = QSize()
        for item in self._visible():
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    # ---- placement
    def _visible(self) -> list[QLayoutItem]:
        return [i for i in self._items if not i.isEmpty()]

    def _arrange(self, rect: QRect, *, move: bool) -> int:
        """Place the items in rect (when move); returns the height the lines take."""
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, line_h = area.x(), area.y(), 0
        for item in self._visible():
            hint = item.sizeHint()
            w = min(hint.width(), area.width()) if area.width() > 0 else hint.width()
            if x > area.x() and x + w > area.right() + 1:  # no room left on this line
                x, y = area.x(), y + line_h + self._line_spacing
                line_h = 0
            # a word-wrapping label cut to the line's width is taller than its one-line hint
            h = max(item.heightForWidth(w), hint.height()) if item.hasHeightForWidth() else hint.height()
            if move:
                item.setGeometry(QRect(QPoint(x, y), QSize(w, h)))
            x += w + self._spacing
            line_h = max(line_h, h)
        return y + line_h - rect.y() + m.bottom()


def columns_that_fit(width: int, min_cell_width: int, spacing: int, max_columns: int) -> int:
    """How many cells of at least min_cell_width fit side by side in width (at least one)."""
    n = (width + spacing) // (min_cell_width + spacing)
    return max(1, min(int(n), max_columns))


class ReflowGrid(QWidget):
    """Cells in rows of as many columns as fit; `reflowed(columns)` after each change."""

    reflowed = Signal(int)

    def __init__(self, *, min_cell_width: int, max_columns: int, spacing: int = 8,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.min_cell_width = min_cell_width
        self.max_columns = max_columns
        self.cells: list[QWidget] = []
        self.num_columns = 0
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(spacing)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add_cell(self, widget: QWidget) -> None:
        self.cells.append(widget)
        self._place(force=True)

    def remove_cell(self, widget: QWidget) -> None:
        if widget in self.cells:
            self.cells.remove(widget)
            self.grid.removeWidget(widget)
            self._place(force=True)

    def row_col(self, widget: QWidget) -> tuple[int, int]:
        i = self.cells.index(widget)
        return divmod(i, max(self.num_columns, 1))

    def minimumSizeHint(self) -> QSize:  # Qt override
        """One cell wide: the grid wraps instead of widening its parent."""
        hint = super().minimumSizeHint()
        cell_min = max((c.minimumSizeHint().width() for c in self.cells), default=0)
        return QSize(max(min(self.min_cell_width, hint.width()), cell_min), hint.height())

    def resizeEvent(self, event) -> None:  # Qt override
        super().resizeEvent(event)
        self._place()

    def _place(self, force: bool = False) -> None:
        width = self.width() if self.isVisible() or self.width() > 0 else self.min_cell_width * self.max_columns
        n = columns_that_fit(width, self.min_cell_width, self.grid.spacing(), self.max_columns)
        n = min(n, max(len(self.cells), 1))
        if n == self.num_columns and not force:
            return
        self.num_columns = n
        for cell in self.cells:
            self.grid.removeWidget(cell)
        for c in range(self.grid.columnCount()):
            self.grid.setColumnStretch(c, 0)
        for r in range(self.grid.rowCount()):
            self.grid.setRowStretch(r, 0)
        for i, cell in enumerate(self.cells):
            self.grid.addWidget(cell, i // n, i % n)
        for c in range(n):
            self.grid.setColumnStretch(c, 1)
        for r in range((len(self.cells) + n - 1) // n):
            self.grid.setRowStretch(r, 1)
        self.reflowed.emit(n)
