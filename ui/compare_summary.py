"""The Compare tab's summary: one row per column, ratios against the baseline, agreement."""

from __future__ import annotations

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QSizePolicy, QTableWidget, QTableWidgetItem

from ui.theme import Theme
from ui.viewmodels.compare import SUMMARY_COLUMNS, Comparison
from ui.viewmodels.compare_format import ratio_quality
from ui.widgets import named

RATIO_KEYS = {"speed": "speed", "ttft_ratio": "ttft", "tpot_ratio": "tpot", "memory_ratio": "memory"}


class CompareSummaryTable(QTableWidget):
    def __init__(self) -> None:
        super().__init__(0, len(SUMMARY_COLUMNS))
        named(self, "compare_summary_table", "Summary: ratios against the baseline column and agreement")
        self.setHorizontalHeaderLabels([h for _, h in SUMMARY_COLUMNS])
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def fit(self, num_columns: int) -> None:
        """Room for one row per column, so the summary never scrolls."""
        rows = max(num_columns, self.rowCount())
        row_h = self.verticalHeader().defaultSectionSize()
        if self.rowCount():
            row_h = max(self.rowHeight(r) for r in range(self.rowCount()))
        header = self.horizontalHeader().sizeHint().height()
        self.setFixedHeight(header + rows * row_h + 2 * self.frameWidth() + 2)

    def fill(self, comp: Comparison, theme: Theme) -> None:
        """One row per column; ratio cells coloured better / worse than the baseline."""
        t = theme
        rows = comp.summary_rows()
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, (key, _) in enumerate(SUMMARY_COLUMNS):
                item = QTableWidgetItem(row[key])
                if key in RATIO_KEYS and r > 0:
                    quality = ratio_quality(RATIO_KEYS[key], comp.ratios(r)[RATIO_KEYS[key]])
                    colour = {"better": t.success, "worse": t.danger}.get(quality)
                    if colour:
                        item.setForeground(QColor(colour))
                if key == "agreement" and r > 0:
                    item.setForeground(QColor(t.success if row[key] == "identical" else t.danger))
                if r == 0 and row[key] in ("baseline", "reference"):
                    item.setForeground(QColor(t.muted))
                if key == "memory":
                    col = comp.columns[r]
                    item.setToolTip(f"weights {comp.figures(r)['weights']} + peak KV cache {comp.figures(r)['kv']}"
                                    if col.runs else "")
                if key == "column":
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.setItem(r, c, item)
        self.resizeRowsToContents()
        self.fit(len(rows))
