"""One Compare column: name, preset (or custom settings), model, streaming text and figures."""

from __future__ import annotations

import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QMenu,
    QSizePolicy,
    QSpinBox,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.config import BatchingConfig, EngineConfig, KVCacheMode, Quantisation, SpeculativeConfig, SpeculativeMode
from ui.formatting import MISSING, model_display_name
from ui.theme import Theme
from ui.viewmodels.compare_presets import PRESETS, preset_config
from ui.widgets import label, named

FIGURES = (("tokens_per_s", "tok/s"), ("ttft", "TTFT"), ("tpot", "TPOT"),
           ("acceptance", "Acceptance"), ("weights", "Weights"), ("kv", "Peak KV"))
FIGURES_PER_ROW = 3  # speed on the first row, memory and acceptance on the second


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


def combo(name: str, accessible: str, items: list[tuple[str, object]]) -> QComboBox:
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
        self.remote = None  # RemoteSpec | LaunchProfile: this column runs on a server, not a local engine
        self.backend_button = QToolButton()
        self.backend_button.setText("Server ▾")
        self.backend_button.setToolTip("Run this column on a remote server or a launch profile")
        self.backend_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.backend_button)
        menu.addAction("Connect to server…", self._choose_server)
        menu.addAction("Launch profile…", self._choose_profile)
        menu.addAction("Local engine", lambda: self.set_remote(None))
        self.backend_button.setMenu(menu)
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
        self.value_labels = {key: label(MISSING, "", role="value") for key, _ in FIGURES}
        for w in (self.config_label, self.status_label):  # one line each, clipped when narrow
            w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.field_labels = {key: label(title, "", role="field") for key, title in FIGURES}
        self._build_editor()

        top = QHBoxLayout()
        top.addWidget(self.caption, 1)
        top.addWidget(self.backend_button)
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
            figures.addLayout(cell, n // FIGURES_PER_ROW, n % FIGURES_PER_ROW)
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
        self.kv_combo = combo("", "", [(m.value, m) for m in KVCacheMode])
        self.quant_combo = combo("", "", [(q.value, q) for q in Quantisation])
        self.spec_combo = combo("", "", [(m.value, m) for m in SpeculativeMode])
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
        named(self.backend_button, f"{p}_backend", f"Column {n} backend")
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

    def set_config(self, name: str, config: EngineConfig) -> None:
        """Show a given configuration (the custom editor, loaded from it) under a given name."""
        self.preset_combo.setCurrentText("custom")
        self._load_editor(config)
        self.name_edit.setText(name)
        self.name_edit.setCursorPosition(0)

    def set_remote(self, remote) -> None:
        """Run this column on a server (RemoteSpec) or a launch profile (LaunchProfile); None: local."""
        from ui.compare_bridge import remote_label

        self.remote = remote
        for w in (self.preset_combo, self.model_edit):
            w.setVisible(remote is None)
        self.editor.setVisible(remote is None and self.preset == "custom")
        if remote is not None:
            if self.name_edit.text() in ("", self._last_preset):
                self.name_edit.setText(getattr(remote, "name", None) or "server")
            self.config_label.setText(remote_label(remote))
            self.config_label.setToolTip(remote_label(remote))
        else:
            self._refresh_config_label()
        self.changed.emit()

    def _choose_server(self) -> None:
        from ui.remote_dialog import ConnectDialog

        dialog = ConnectDialog(self)
        dialog.accepted.connect(lambda: self.set_remote(dialog.spec()))
        dialog.open()

    def _choose_profile(self) -> None:
        from ui.remote_dialog import LaunchProfileDialog

        dialog = LaunchProfileDialog(None, self)
        dialog.profile_chosen.connect(self.set_remote)
        dialog.open()

    def _on_preset_changed(self, preset: str) -> None:
        if preset == "custom" and self._last_preset != "custom":
            # start the editor from what the column ran so far
            self._load_editor(preset_config(self._last_preset, self._draft_for_model()))
        if self.name_edit.text() in ("", self._last_preset):  # not named by the user: follow the preset
            self.name_edit.setText(preset)
            self.name_edit.setCursorPosition(0)  # a narrow field shows the start of the name
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
        if self.remote is not None:
            return  # set_remote shows what the server runs
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
