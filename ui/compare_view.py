"""Compare tab: 2–4 configurations side by side on one prompt, streaming live, then a summary
of ratios against the baseline column and of output agreement, exportable as Markdown / JSON.

The view only talks to a CompareBridge; figures come from the Qt-free compare_model, so the
table, the column footers and the exported reports show the same strings.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.config import (
    BatchingConfig,
    EngineConfig,
    KVCacheMode,
    ModelSpec,
    Quantisation,
    SamplingParams,
    SpeculativeConfig,
    SpeculativeMode,
)
from ui.compare_bridge import CompareBridge
from ui.compare_model import (
    SUMMARY_COLUMNS,
    Comparison,
    collect_provenance,
    fmt_rate,
    ratio_quality,
)
from ui.reflow import FlowLayout, ReflowGrid
from ui.formatting import format_bytes, format_ms, model_display_name
from ui.theme import LIGHT, Theme
from ui.widgets import label, named

PRESETS = ("baseline", "KV cache", "all optimisations", "speculative", "nf4", "custom")
DEFAULT_PRESETS = ("baseline", "KV cache", "all optimisations")
NEXT_PRESETS = ("speculative", "nf4", "custom")
MIN_COLUMNS, MAX_COLUMNS = 2, 4
MIN_COLUMN_WIDTH = 280  # narrower than this, columns wrap onto another row
RENDER_INTERVAL_MS = 80  # streaming text re-renders at most this often
RATIO_KEYS = {"speed": "speed", "ttft_ratio": "ttft", "tpot_ratio": "tpot", "memory_ratio": "memory"}
FIGURES = (("tokens_per_s", "tok/s"), ("acceptance", "Acceptance"), ("ttft", "TTFT"), ("tpot", "TPOT"),
           ("weights", "Weights"), ("kv", "Peak KV"))  # two per row


def preset_config(preset: str, draft_model: str | None) -> EngineConfig:
    """The configuration behind a preset name; speculation uses the draft when there is one."""
    single = BatchingConfig(enabled=False)
    spec = (SpeculativeConfig(SpeculativeMode.DRAFT, 4, draft_model=draft_model) if draft_model
            else SpeculativeConfig(SpeculativeMode.NGRAM, 4))
    table = {
        "baseline": EngineConfig(kv_cache=KVCacheMode.OFF, batching=single),
        "KV cache": EngineConfig(kv_cache=KVCacheMode.ON, batching=single),
        "all optimisations": EngineConfig(kv_cache=KVCacheMode.ON, batching=BatchingConfig(), speculative=spec),
        "speculative": EngineConfig(kv_cache=KVCacheMode.ON, batching=single, speculative=spec),
        "nf4": EngineConfig(kv_cache=KVCacheMode.ON, batching=single, quantisation=Quantisation.NF4),
    }
    if preset not in table:
        raise ValueError(f"unknown preset {preset!r}")
    return table[preset]


def token_html(pieces: list[str], origins: list[str], divergence: int | None, theme: Theme) -> str:
    """Token pieces as rich text: accepted draft tokens on the draft colour; from the first
    token that differs from the baseline on, a danger background (the first one strongest)."""
    out = []
    first = None
    if divergence is not None:
        first = next((i for i in range(divergence, len(pieces)) if pieces[i]), None)
    for i, (piece, origin) in enumerate(zip(pieces, origins)):
        if not piece:
            continue
        style = ""
        if first is not None and i == first:
            style = f"background-color:{theme.danger}; color:{theme.accent_text};"
        elif divergence is not None and i >= divergence:
            style = f"background-color:{theme.danger_soft};"
        elif origin == "draft":
            style = f"background-color:{theme.draft_token};"
        text = html.escape(piece).replace("\n", "<br>")
        out.append(f'<span style="{style}">{text}</span>' if style else text)
    if divergence is not None and first is None and pieces:
        out.append(f'<span style="color:{theme.danger};"> ∎ ends here</span>')
    return f'<div style="white-space: pre-wrap;">{"".join(out)}</div>'


def _combo(name: str, accessible: str, items: list[tuple[str, object]]) -> QComboBox:
    box = named(QComboBox(), name, accessible)
    for text, data in items:
        box.addItem(text, data)
    return box


class CompareColumnPanel(QFrame):
    """One column: name, preset (or custom settings), model, streaming text and figures."""

    changed = Signal()
    remove_requested = Signal(object)  # self

    def __init__(self, index: int, preset: str, default_model: str | None, draft_model: str | None,
                 theme: Theme) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setProperty("role", "compare_column")
        self.default_model, self.draft_model, self.theme = default_model, draft_model, theme
        self.pieces: list[str] = []
        self.origins: list[str] = []
        self.divergence: int | None = None
        self.dirty = False
        self._last_preset = preset
        self.name_edit = QLineEdit(preset)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(PRESETS)
        self.caption = label("", "", role="section")
        self.remove_button = QToolButton()
        self.remove_button.setText("✕")
        self.remove_button.setToolTip("Remove this column")
        keep = self.remove_button.sizePolicy()
        keep.setRetainSizeWhenHidden(True)  # every column's rows line up, the baseline's too
        self.remove_button.setSizePolicy(keep)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText(f"default model: {model_display_name(default_model)}"
                                           if default_model else "model directory or hub id")
        self.config_label = label("", "", role="muted")
        self.status_label = label("", "", role="muted")
        self.text = QTextBrowser()
        self.text.setMinimumHeight(90)
        self.text.setOpenLinks(False)
        self.value_labels = {key: label("–", "", role="value") for key, _ in FIGURES}
        for w in (self.config_label, self.status_label):  # one line each, clipped when narrow
            w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.field_labels = {key: label(title, "", role="field") for key, title in FIGURES}
        self._build_editor()

        top = QHBoxLayout()
        top.addWidget(self.caption, 1)
        top.addWidget(self.remove_button)
        head = QHBoxLayout()
        head.addWidget(self.name_edit, 1)
        head.addWidget(self.preset_combo, 1)
        figures = QGridLayout()
        figures.setHorizontalSpacing(14)
        for n, (key, _) in enumerate(FIGURES):
            cell = QVBoxLayout()
            cell.setSpacing(0)
            cell.addWidget(self.field_labels[key])
            cell.addWidget(self.value_labels[key])
            figures.addLayout(cell, n // 2, n % 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(6)
        layout.addLayout(top)
        layout.addLayout(head)
        layout.addWidget(self.model_edit)
        layout.addWidget(self.config_label)
        layout.addWidget(self.editor)
        layout.addWidget(self.status_label)
        layout.addWidget(self.text, 1)
        layout.addLayout(figures)

        self.set_index(index)
        self.preset_combo.setCurrentText(preset)
        self._on_preset_changed(preset)
        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))
        for w in (self.name_edit, self.model_edit):
            w.textChanged.connect(self.changed)
        self.model_edit.textChanged.connect(self._on_custom_edited)

    def _build_editor(self) -> None:
        self.editor = QWidget()
        self.kv_combo = _combo("", "", [(m.value, m) for m in KVCacheMode])
        self.quant_combo = _combo("", "", [(q.value, q) for q in Quantisation])
        self.spec_combo = _combo("", "", [(m.value, m) for m in SpeculativeMode])
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 16)
        self.adaptive_check = QCheckBox("adaptive k")
        self.batching_check = QCheckBox("batching")
        grid = QGridLayout(self.editor)
        grid.setContentsMargins(0, 0, 0, 0)
        self.editor_labels = []
        for n, (title, w) in enumerate((("KV cache", self.kv_combo), ("Quantisation", self.quant_combo),
                                        ("Speculative", self.spec_combo), ("Draft k", self.k_spin))):
            self.editor_labels.append(label(title, "", role="field"))
            grid.addWidget(self.editor_labels[-1], 0, n)
            grid.addWidget(w, 1, n)
        grid.addWidget(self.adaptive_check, 2, 0, 1, 2)
        grid.addWidget(self.batching_check, 2, 2, 1, 2)
        for w in (self.kv_combo, self.quant_combo, self.spec_combo):
            w.currentIndexChanged.connect(self._on_custom_edited)
        self.k_spin.valueChanged.connect(self._on_custom_edited)
        for w in (self.adaptive_check, self.batching_check):
            w.toggled.connect(self._on_custom_edited)

    def set_index(self, index: int) -> None:
        """Names for tests and screen readers follow the column's position."""
        self.index = index
        n, p = index + 1, f"compare_column_{index}"
        named(self, p, f"Column {n}")
        named(self.name_edit, f"{p}_name", f"Column {n} name")
        named(self.preset_combo, f"{p}_preset", f"Column {n} configuration preset")
        named(self.remove_button, f"{p}_remove", f"Remove column {n}")
        named(self.caption, f"{p}_caption", f"Column {n} caption")
        self.caption.setText(f"COLUMN {n} · BASELINE" if index == 0 else f"COLUMN {n}")
        named(self.model_edit, f"{p}_model", f"Column {n} model path", "empty: the default model")
        named(self.config_label, f"{p}_config", f"Column {n} configuration")
        named(self.editor, f"{p}_editor", f"Column {n} custom configuration")
        named(self.kv_combo, f"{p}_kv_mode", f"Column {n} KV cache mode")
        named(self.quant_combo, f"{p}_quantisation", f"Column {n} quantisation")
        named(self.spec_combo, f"{p}_spec_mode", f"Column {n} speculative decoding")
        named(self.k_spin, f"{p}_spec_k", f"Column {n} draft tokens per step")
        named(self.adaptive_check, f"{p}_spec_adaptive", f"Column {n} adaptive draft length")
        named(self.batching_check, f"{p}_batching", f"Column {n} batching")
        named(self.status_label, f"{p}_status", f"Column {n} status")
        named(self.text, f"{p}_text", f"Column {n} output")
        for w in self.editor_labels:
            named(w, f"{p}_{w.text().lower().replace(' ', '_')}_label", f"Column {n} {w.text()} label")
        for key, title in FIGURES:
            named(self.value_labels[key], f"{p}_{key}", f"Column {n} {title}")
            named(self.field_labels[key], f"{p}_{key}_label", f"Column {n} {title} label")
        self.remove_button.setVisible(index > 0)
        self.caption.setToolTip("the other columns are compared with this one" if index == 0 else "")
        self.name_edit.setToolTip("the baseline: other columns are compared with it" if index == 0 else "")

    # ---- configuration
    @property
    def preset(self) -> str:
        return self.preset_combo.currentText()

    @property
    def name(self) -> str:
        return self.name_edit.text().strip() or self.preset

    def model(self) -> str | None:
        return self.model_edit.text().strip() or self.default_model

    def _draft_for_model(self) -> str | None:
        # the bundled draft shares the default model's tokenizer, not another model's
        return self.draft_model if self.model() == self.default_model else None

    def config(self) -> EngineConfig:
        if self.preset != "custom":
            return preset_config(self.preset, self._draft_for_model())
        mode = self.spec_combo.currentData()
        spec = SpeculativeConfig(mode=mode, num_draft_tokens=self.k_spin.value(),
                                 adaptive=self.adaptive_check.isChecked(),
                                 draft_model=self._draft_for_model() if mode is SpeculativeMode.DRAFT else None)
        return EngineConfig(kv_cache=self.kv_combo.currentData(), quantisation=self.quant_combo.currentData(),
                            batching=BatchingConfig(enabled=self.batching_check.isChecked()), speculative=spec)

    def _on_preset_changed(self, preset: str) -> None:
        if preset == "custom" and self._last_preset != "custom":
            # start the editor from what the column ran so far
            self._load_editor(preset_config(self._last_preset, self._draft_for_model()))
        if self.name_edit.text() in ("", self._last_preset):  # not named by the user: follow the preset
            self.name_edit.setText(preset)
        self._last_preset = preset
        self.editor.setVisible(preset == "custom")
        self._refresh_config_label()
        self.changed.emit()

    def _load_editor(self, config: EngineConfig) -> None:
        widgets = (self.kv_combo, self.quant_combo, self.spec_combo, self.k_spin, self.adaptive_check,
                   self.batching_check)
        for w in widgets:
            w.blockSignals(True)
        self.kv_combo.setCurrentIndex(self.kv_combo.findData(config.kv_cache))
        self.quant_combo.setCurrentIndex(self.quant_combo.findData(config.quantisation))
        self.spec_combo.setCurrentIndex(self.spec_combo.findData(config.speculative.mode))
        self.k_spin.setValue(config.speculative.num_draft_tokens)
        self.adaptive_check.setChecked(config.speculative.adaptive)
        self.batching_check.setChecked(config.batching.enabled)
        for w in widgets:
            w.blockSignals(False)
        self._on_custom_edited()

    def _on_custom_edited(self, *_args) -> None:
        has_draft = self._draft_for_model() is not None
        self.spec_combo.model().item(self.spec_combo.findData(SpeculativeMode.DRAFT)).setEnabled(has_draft)
        if not has_draft and self.spec_combo.currentData() is SpeculativeMode.DRAFT:
            self.spec_combo.blockSignals(True)  # no draft for this model: prompt lookup needs none
            self.spec_combo.setCurrentIndex(self.spec_combo.findData(SpeculativeMode.NGRAM))
            self.spec_combo.blockSignals(False)
        speculating = self.spec_combo.currentData() is not SpeculativeMode.OFF
        self.k_spin.setEnabled(speculating)
        self.adaptive_check.setEnabled(speculating)
        self._refresh_config_label()
        self.changed.emit()

    def _refresh_config_label(self, *_args) -> None:
        config = self.config()
        self.config_label.setText(config.describe())
        tip = f"model: {self.model() or 'none'}"
        if config.speculative.mode is SpeculativeMode.DRAFT:
            tip += f"\ndraft model: {config.speculative.draft_model}"
        self.config_label.setToolTip(tip)

    # ---- results
    def clear_output(self, status: str) -> None:
        self.pieces, self.origins, self.divergence = [], [], None
        self.text.clear()
        self.set_status(status)
        self.dirty = False

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setToolTip(text)  # the label clips in a narrow column
        self.status_label.setAccessibleDescription(text)

    def show_tokens(self, pieces: list[str], origins: list[str]) -> None:
        self.pieces, self.origins = list(pieces), list(origins)
        self.dirty = True

    def set_divergence(self, index: int | None) -> None:
        if index != self.divergence:
            self.divergence = index
            self.dirty = True

    def render(self, follow: bool) -> None:
        self.dirty = False
        bar = self.text.verticalScrollBar()
        keep = bar.value()
        self.text.setHtml(token_html(self.pieces, self.origins, self.divergence, self.theme))
        bar.setValue(bar.maximum() if follow else keep)

    def set_figures(self, figures: dict[str, str]) -> None:
        for key, value in figures.items():
            if key in self.value_labels:
                self.value_labels[key].setText(value)


class CompareView(QWidget):
    """The Compare tab. Takes a CompareBridge; never touches an engine itself."""

    def __init__(self, compare_bridge: CompareBridge, default_model: str | None, *, draft_model: str | None = None,
                 theme: Theme = LIGHT, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        named(self, "compare_view", "Compare configurations")
        self.bridge = compare_bridge
        self.default_model = default_model
        self.draft_model = draft_model
        self.theme = theme
        self.comparison: Comparison | None = None
        self.panels: list[CompareColumnPanel] = []
        self._build()
        for preset in DEFAULT_PRESETS:
            self.add_column(preset)
        self._render_timer = QTimer(self)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_dirty)
        self._render_timer.start()
        b = self.bridge
        b.columns_building.connect(self._on_columns_building)
        b.column_ready.connect(self._on_column_ready)
        b.column_failed.connect(self._on_column_failed)
        b.error_occurred.connect(self._on_error_occurred)
        b.run_started.connect(self._on_run_started)
        b.tokens_received.connect(self._on_tokens_received)
        b.step_completed.connect(self._on_step_completed)
        b.run_recorded.connect(self._on_run_recorded)
        b.comparison_finished.connect(self._on_comparison_finished)
        self._update_buttons()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.prompt_edit = named(QPlainTextEdit(), "compare_prompt", "Prompt for every column")
        self.prompt_edit.setPlaceholderText("One prompt for every column…")
        self.prompt_edit.setFixedHeight(62)
        self.chat_check = named(QCheckBox("chat"), "compare_chat_toggle", "Send as a chat message",
                                "on: the prompt is sent as a user message through the chat template")
        self.temperature_spin = named(QDoubleSpinBox(), "compare_temperature", "Temperature")
        self.temperature_spin.setRange(0.0, 2.0)
        self.temperature_spin.setSingleStep(0.1)
        self.temperature_spin.setToolTip("0 = greedy")
        self.top_k_spin = named(QSpinBox(), "compare_top_k", "Top-k")
        self.top_k_spin.setRange(0, 1000)
        self.top_p_spin = named(QDoubleSpinBox(), "compare_top_p", "Top-p")
        self.top_p_spin.setRange(0.01, 1.0)
        self.top_p_spin.setSingleStep(0.05)
        self.top_p_spin.setValue(1.0)
        self.max_tokens_spin = named(QSpinBox(), "compare_max_tokens", "Maximum new tokens")
        self.max_tokens_spin.setRange(1, 4096)
        self.max_tokens_spin.setValue(64)
        self.seed_spin = named(QSpinBox(), "compare_seed", "Seed")
        self.seed_spin.setRange(0, 2**31 - 1)
        self.mode_combo = _combo("compare_mode", "Run mode", [("fair", "fair"), ("race", "race")])
        self.mode_combo.setItemData(0, "one column at a time: each runs alone", Qt.ItemDataRole.ToolTipRole)
        self.mode_combo.setItemData(1, "all columns at once, competing for the machine", Qt.ItemDataRole.ToolTipRole)
        self.mode_combo.setToolTip("fair: one column at a time · race: all at once")
        self.repeats_spin = named(QSpinBox(), "compare_repeats", "Repeats per column")
        self.repeats_spin.setRange(1, 50)
        self.warmup_check = named(QCheckBox("warm-up"), "compare_warmup", "Warm-up run per column",
                                  "one unmeasured run per column first")
        self.warmup_check.setChecked(True)
        self.add_button = named(QPushButton("+ Column"), "compare_add_column", "Add a column")
        self.run_button = named(QPushButton("Run"), "compare_run", "Run the comparison")
        self.run_button.setProperty("role", "primary")
        self.stop_button = named(QPushButton("Stop"), "compare_stop", "Stop the comparison")
        self.export_md_button = named(QPushButton("Export Markdown"), "compare_export_markdown",
                                      "Export the report as Markdown")
        self.export_json_button = named(QPushButton("Export JSON"), "compare_export_json", "Export the results as JSON")
        self.status = label("", "compare_status", "Comparison status", role="muted")
        self.legend = label(self._legend_html(), "compare_legend", "Colour legend", role="muted")

        # settings wrap onto more lines in a narrow window; each label stays with its field
        self.settings_area = named(QWidget(), "compare_settings", "Sampling and run settings")
        settings = FlowLayout(self.settings_area, spacing=14)
        settings.setContentsMargins(0, 0, 0, 0)
        settings.addWidget(self.chat_check)
        for title, w in (("Temperature", self.temperature_spin), ("Top-k", self.top_k_spin), ("Top-p", self.top_p_spin),
                         ("Max tokens", self.max_tokens_spin), ("Seed", self.seed_spin), ("Mode", self.mode_combo),
                         ("Repeats", self.repeats_spin)):
            pair = QWidget()
            row = QHBoxLayout(pair)
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(6)
            row.addWidget(label(title, f"{w.objectName()}_label", f"{title} label", role="field"))
            row.addWidget(w)
            settings.addWidget(pair)
        for w, width in ((self.temperature_spin, 72), (self.top_k_spin, 72), (self.top_p_spin, 72),
                         (self.max_tokens_spin, 80), (self.seed_spin, 96), (self.repeats_spin, 60)):
            w.setMaximumWidth(width)
        settings.addWidget(self.warmup_check)
        # the actions sit beside the prompt, where they stay in view at any width
        actions = QGridLayout()
        actions.setSpacing(6)
        actions.addWidget(self.run_button, 0, 0, 1, 2)
        actions.addWidget(self.stop_button, 1, 0)
        actions.addWidget(self.add_button, 1, 1)
        actions.setRowStretch(2, 1)
        prompt_row = QHBoxLayout()
        prompt_row.setSpacing(8)
        prompt_row.addWidget(self.prompt_edit, 1)
        prompt_row.addLayout(actions)
        self.prompt_edit.setFixedHeight(max(62, actions.sizeHint().height()))

        # columns side by side where they fit, else wrapped onto a second row
        self.columns_area = named(ReflowGrid(min_cell_width=MIN_COLUMN_WIDTH, max_columns=MAX_COLUMNS),
                                  "compare_columns", "Columns")

        self.table = named(QTableWidget(0, len(SUMMARY_COLUMNS)), "compare_summary_table",
                           "Summary: ratios against the baseline column and agreement")
        self.table.setHorizontalHeaderLabels([h for _, h in SUMMARY_COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        s_head = QHBoxLayout()
        s_head.addWidget(label("Summary against the baseline (column 1)", "compare_summary_title", role="section"))
        s_head.addStretch(1)
        s_head.addWidget(self.export_md_button)
        s_head.addWidget(self.export_json_button)
        foot = QHBoxLayout()
        foot.addWidget(self.status, 1)
        foot.addWidget(self.legend)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)
        layout.addLayout(prompt_row)
        layout.addWidget(self.settings_area)
        layout.addWidget(self.columns_area, 1)
        layout.addSpacing(4)
        layout.addLayout(s_head)
        layout.addWidget(self.table)  # as tall as its rows (see _fit_table)
        layout.addLayout(foot)
        self.add_button.clicked.connect(lambda: self.add_column())
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.bridge.stop)
        self.export_md_button.clicked.connect(lambda: self._export_dialog("md"))
        self.export_json_button.clicked.connect(lambda: self._export_dialog("json"))

    def _legend_html(self) -> str:
        t = self.theme

        def swatch(colour: str, text: str, fg: str | None = None) -> str:
            fg_style = f" color:{fg};" if fg else ""
            return f'<span style="background-color:{colour};{fg_style}">&nbsp;{text}&nbsp;</span>'

        return (f"{swatch(t.draft_token, 'accepted draft token')}&nbsp;&nbsp;"
                f"{swatch(t.danger, 'first token that differs', t.accent_text)}"
                f"{swatch(t.danger_soft, 'and after it')}")

    def shutdown(self) -> None:
        """Stop every column engine (called by the main window on close)."""
        self.bridge.shutdown()

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.legend.setText(self._legend_html())
        for p in self.panels:
            p.theme = theme
            p.dirty = True
        if self.comparison is not None and self.comparison.finished:
            self._fill_table(self.comparison)

    # ------------------------------------------------------------------ columns
    def add_column(self, preset: str | None = None) -> CompareColumnPanel | None:
        if len(self.panels) >= MAX_COLUMNS:
            return None
        if preset is None:
            used = {p.preset for p in self.panels}
            preset = next((p for p in NEXT_PRESETS if p not in used), "custom")
        panel = CompareColumnPanel(len(self.panels), preset, self.default_model, self.draft_model, self.theme)
        panel.remove_requested.connect(self.remove_column)
        panel.changed.connect(self._update_buttons)
        self.panels.append(panel)
        self.columns_area.add_cell(panel)
        self._fit_table()
        self._update_buttons()
        return panel

    def remove_column(self, panel: CompareColumnPanel) -> None:
        if len(self.panels) <= MIN_COLUMNS or panel not in self.panels or panel.index == 0:
            return
        self.panels.remove(panel)
        self.columns_area.remove_cell(panel)
        panel.deleteLater()
        for i, p in enumerate(self.panels):
            p.set_index(i)
        self._fit_table()
        self._update_buttons()

    def _fit_table(self) -> None:
        """Room for one row per column, so the summary never scrolls."""
        rows = max(len(self.panels), self.table.rowCount())
        row_h = self.table.verticalHeader().defaultSectionSize()
        if self.table.rowCount():
            row_h = max(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setFixedHeight(header + rows * row_h + 2 * self.table.frameWidth() + 2)

    def _update_buttons(self) -> None:
        running = self.bridge.is_running
        self.add_button.setEnabled(len(self.panels) < MAX_COLUMNS and not running)
        for p in self.panels:
            p.remove_button.setEnabled(len(self.panels) > MIN_COLUMNS and not running)
        have_model = all(p.model() for p in self.panels)
        self.run_button.setEnabled(not running and have_model)
        self.run_button.setToolTip("" if have_model else "give every column a model (no default model is set)")
        self.stop_button.setEnabled(running)
        done = self.comparison is not None and self.comparison.finished and any(c.runs for c in self.comparison.columns)
        self.export_md_button.setEnabled(done)
        self.export_json_button.setEnabled(done)

    # ------------------------------------------------------------------ running
    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=round(self.temperature_spin.value(), 3), top_k=self.top_k_spin.value(),
                              top_p=round(self.top_p_spin.value(), 3), seed=self.seed_spin.value(),
                              max_new_tokens=self.max_tokens_spin.value())

    def run(self) -> Comparison | None:
        """Build the columns' engines if they changed, then start; returns at once."""
        text = self.prompt_edit.toPlainText().strip()
        if not text:
            self.status.setText("Write a prompt first.")
            return None
        if not all(p.model() for p in self.panels):
            self.status.setText("Every column needs a model.")
            return None
        self.bridge.set_columns(ModelSpec(self.default_model or self.panels[0].model()),
                                [p.config() for p in self.panels], names=[p.name for p in self.panels],
                                models=[p.model() for p in self.panels], presets=[p.preset for p in self.panels])
        prompt = (("user", text),) if self.chat_check.isChecked() else text
        self.table.setRowCount(0)
        for p in self.panels:
            p.clear_output(p.status_label.text() or "waiting…")
            p.set_figures({key: "–" for key, _ in FIGURES})
        self.comparison = self.bridge.run(prompt, self.sampling(), mode=self.mode_combo.currentData(),
                                          repeats=self.repeats_spin.value(), warmup=self.warmup_check.isChecked())
        if not self.comparison.finished:
            self.status.setText("Loading the columns' models…" if not self.bridge.is_ready else "Running…")
        self._update_buttons()
        return self.comparison

    def _current(self, column: int) -> CompareColumnPanel | None:
        return self.panels[column] if self.comparison is not None and column < len(self.panels) else None

    def _on_columns_building(self, n: int) -> None:
        for p in self.panels[:n]:
            p.set_status("loading model…")

    def _on_column_ready(self, column: int) -> None:
        if column < len(self.panels):
            info = self.bridge.model_info(column)
            where = f" · {model_display_name(info.name_or_path)} · {info.dtype} · {info.device}" if info else ""
            self.panels[column].set_status(f"ready{where}")

    def _on_column_failed(self, column: int, message: str) -> None:
        if column < len(self.panels):
            self.panels[column].set_status("failed to load")
            self.panels[column].text.setPlainText(message)
        self.status.setText(f"Column {column + 1} could not be built: {message}")

    def _on_error_occurred(self, column: int, event) -> None:
        if column < len(self.panels):
            panel = self.panels[column]
            panel.set_status(f"warning: {event.message}")

    def _on_run_started(self, column: int, job) -> None:
        panel, comp = self._current(column), self.comparison
        if panel is None:
            return
        what = "warm-up run" if job.warmup else f"repeat {job.repeat + 1}/{comp.repeats}"
        panel.clear_output(f"running · {what}")
        step = "warming up" if job.warmup else f"repeat {job.repeat + 1} of {comp.repeats}"
        names = ", ".join(self.panels[c].name for c in range(len(self.panels)) if comp.mode == "race" or c == column)
        self.status.setText(f"Running {names}: {step}…")

    def _on_tokens_received(self, column: int, _event) -> None:
        panel, comp = self._current(column), self.comparison
        live = comp.columns[column].live if comp is not None and column < comp.num_columns else None
        if panel is not None and live is not None:
            panel.show_tokens(live.pieces, live.origins)

    def _on_step_completed(self, column: int, event) -> None:
        panel, comp = self._current(column), self.comparison
        live = comp.columns[column].live if comp is not None and column < comp.num_columns else None
        if panel is None or live is None:
            return
        s = event.stats
        rate = live.acceptance_rate
        panel.set_figures({"tokens_per_s": f"{fmt_rate(s.tokens_per_s)} tok/s",
                           "weights": format_bytes(s.weights_bytes),
                           "kv": format_bytes(live.peak_kv_bytes),
                           "acceptance": "–" if rate is None else f"{rate * 100:.0f}%"})

    def _on_run_recorded(self, column: int, record) -> None:
        panel = self._current(column)
        if panel is None:
            return
        what = "warm-up done" if record.warmup else f"repeat {record.repeat + 1}/{self.comparison.repeats} done"
        panel.set_status(f"{what} · {record.completion_tokens} tokens · {record.reason}"
                                   + (f" · {record.error}" if record.error else ""))
        panel.set_figures({
            "tokens_per_s": "–" if record.tokens_per_s is None else f"{fmt_rate(record.tokens_per_s)} tok/s",
            "ttft": format_ms(record.ttft_s), "tpot": format_ms(record.tpot_s),
            "weights": format_bytes(record.weights_bytes), "kv": format_bytes(record.peak_kv_bytes),
            "acceptance": "–" if record.acceptance_rate is None else f"{record.acceptance_rate * 100:.0f}%"})

    def _on_comparison_finished(self, comp: Comparison) -> None:
        if comp is not self.comparison:
            return
        for i, panel in enumerate(self.panels[: comp.num_columns]):
            col = comp.columns[i]
            if col.output is not None:
                panel.show_tokens(list(col.output.pieces), list(col.output.origins))
                panel.set_figures(comp.figures(i))
                n = len(col.runs)
                panel.set_status(f"{n} run{'s' if n != 1 else ''} · {col.output.completion_tokens} tokens"
                                           + ("" if col.consistent else " · repeats differ"))
        self._fill_table(comp)
        self._apply_divergences(comp, None)
        runs = sum(len(c.runs) for c in comp.columns)
        failed = self.bridge.failures()
        if failed:
            self.status.setText("Could not run: " + "; ".join(f"column {i + 1}: {m}" for i, m in sorted(failed.items())))
        else:
            verdict = self._verdict(comp)
            self.status.setText(("Stopped" if comp.cancelled else "Done") + f": {runs} measured runs. {verdict}")
        self._render_dirty(follow=False)
        self._update_buttons()

    def _verdict(self, comp: Comparison) -> str:
        identical = [c.spec.name for i, c in enumerate(comp.columns) if i and (a := comp.agreement(i))
                     and a.first_divergence is None]
        differ = [c.spec.name for i, c in enumerate(comp.columns) if i and (a := comp.agreement(i))
                  and a.first_divergence is not None]
        parts = []
        if identical:
            parts.append(f"Identical to the baseline: {', '.join(identical)}.")
        if differ:
            parts.append(f"Differs from the baseline: {', '.join(differ)}.")
        return " ".join(parts)

    def _fill_table(self, comp: Comparison) -> None:
        t = self.theme
        rows = comp.summary_rows()
        self.table.setRowCount(len(rows))
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
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()
        self._fit_table()

    def _apply_divergences(self, comp: Comparison, selected: int | None) -> None:
        """Each differing column highlights from its first divergence on; the baseline shows
        the selected row's divergence, else the earliest one."""
        firsts = {}
        for i in range(1, comp.num_columns):
            a = comp.agreement(i)
            firsts[i] = a.first_divergence if a is not None else None
            self.panels[i].set_divergence(firsts[i])
        if selected is not None and selected > 0:
            base = firsts.get(selected)
        else:
            base = min((d for d in firsts.values() if d is not None), default=None)
        self.panels[0].set_divergence(base)

    def _on_table_selection(self) -> None:
        comp = self.comparison
        rows = self.table.selectionModel().selectedRows()
        if comp is None or not comp.finished or comp.num_columns > len(self.panels):
            return
        self._apply_divergences(comp, rows[0].row() if rows else None)
        self._render_dirty(follow=False)

    def _render_dirty(self, follow: bool = True) -> None:
        for p in self.panels:
            if p.dirty:
                p.render(follow)

    # ------------------------------------------------------------------ export
    def report_markdown(self) -> str:
        return self.comparison.to_markdown(collect_provenance(self.comparison))

    def report_json(self) -> str:
        return self.comparison.to_json(collect_provenance(self.comparison))

    def export(self, path: str | Path) -> Path:
        """Write the report: Markdown for .md, JSON otherwise by suffix (.json)."""
        path = Path(path)
        text = self.report_json() if path.suffix.lower() == ".json" else self.report_markdown()
        path.write_text(text, encoding="utf-8")
        self.status.setText(f"Exported {path.name}")
        return path

    def _export_dialog(self, kind: str) -> None:
        if self.comparison is None:
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        filters = "Markdown (*.md)" if kind == "md" else "JSON (*.json)"
        suggested = str(Path.home() / f"comparison-{stamp}.{kind}")
        path, _ = QFileDialog.getSaveFileName(self, "Export comparison", suggested, filters)
        if path:
            try:
                self.export(path)
            except OSError as exc:
                self.status.setText(f"Could not export: {exc}")
