"""A column layout that fills the room it is given without asking for more by width.

A word-wrapped label makes every enclosing layout height-for-width, and a scroll area around a
height-for-width view then sizes it by its items' preferred heights (a chart's 400 px) instead
of the window's height. The Tune, Timeline and Memory views fill their tab instead; their
minimum sizes still hold.
"""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout


class FillColumn(QVBoxLayout):
    def hasHeightForWidth(self) -> bool:  # Qt override
        return False
