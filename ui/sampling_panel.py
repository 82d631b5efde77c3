"""Collapsible generation settings: system prompt and sampling parameters, prefilled from the
model's generation_config.json when it has one."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.config import SamplingParams
from engine.generation_defaults import generation_defaults
from ui.widgets import ElidedLabel, label, named

FALLBACK = SamplingParams(max_new_tokens=256)
SPIN_MIN_WIDTH = 64


def model_defaults(name_or_path: str | None) -> SamplingParams:
    """Sampling defaults of a local model dir (its generation_config.json); the fallback otherwise."""
    if name_or_path and Path(name_or_path).expanduser().is_dir():
        return generation_defaults(str(Path(name_or_path).expanduser()))
    return FALLBACK


def model_context_length(info) -> int | None:
    """The model's context window in tokens: from the engine's ModelInfo when it says, else from
    a local model folder's config.json (max_position_embeddings / n_positions)."""
    for attr in ("context_length", "max_context_tokens", "max_position_embeddings"):
        value = getattr(info, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    path = Path(info.name_or_path).expanduser() / "config.json" if info and info.name_or_path else None
    if path is None or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def format_stops(stops: tuple[str, ...]) -> str:
    return ", ".join(s.encode("unicode_escape").decode("ascii").replace(",", "\\x2c") for s in stops)


def parse_stops(text: str) -> tuple[str, ...]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part:
            try:
                out.append(codecs.decode(part, "unicode_escape"))
            except UnicodeDecodeError:
                out.append(part)
    return tuple(out)


class SamplingSettingsView(QFrame):
    system_prompt_edited = Signal(str)
    values_changed = Signal()  # the user changed a sampling field (not a programmatic reset)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        named(self, "generation_settings", "Generation settings")
        self.setProperty("role", "settings")
        self._defaults = FALLBACK
        self._loading = False
        self.toggle = named(QToolButton(), "generation_settings_toggle", "Show generation settings")
        self.toggle.setText("Generation settings")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.toggled.connect(self.set_expanded)
        # elides instead of widening the chat column (small windows keep Send on screen)
        self.summary = named(ElidedLabel(""), "generation_settings_summary", "Current sampling settings")
        self.summary.setProperty("role", "muted")

        self.body = named(QWidget(), "generation_settings_body", "Generation settings fields")
        self.system_prompt = named(QPlainTextEdit(), "system_prompt_input", "System prompt")
        self.system_prompt.setPlaceholderText("System prompt for this conversation (optional)")
        self.system_prompt.setFixedHeight(64)
        self.temperature = self._double("temperature_spin", "Temperature", 0.0, 2.0, 0.05, 2)
        self.temperature.setSpecialValueText("0 (greedy)")
        self.top_p = self._double("top_p_spin", "Top-p", 0.01, 1.0, 0.05, 2)
        self.top_k = self._int("top_k_spin", "Top-k", 0, 10000)
        self.top_k.setSpecialValueText("off")
        self.max_tokens = self._int("max_tokens_spin", "Maximum new tokens", 1, 32768)
        self.seed = self._int("seed_spin", "Seed", -1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.stops = named(QLineEdit(), "stop_strings_input", "Stop strings",
                           "Comma-separated; escapes such as \\n allowed")
        self.stops.setPlaceholderText("e.g. \\n\\n, END")
        self.reset_button = named(QPushButton("Model defaults"), "reset_sampling_button",
                                  "Reset sampling to the model's defaults")
        self.reset_button.clicked.connect(self.reset_to_defaults)
        for w in (self.temperature, self.top_p, self.top_k, self.max_tokens, self.seed):
            w.valueChanged.connect(self._on_field_changed)
        self.stops.textChanged.connect(self._on_field_changed)

        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(6)
        fields = [("Temperature", self.temperature), ("Top-p", self.top_p), ("Top-k", self.top_k),
                  ("Max tokens", self.max_tokens), ("Seed", self.seed)]
        for i, (text, w) in enumerate(fields):
            grid.addWidget(label(text, f"{w.objectName()}_label", role="field"), 0, i)
            grid.addWidget(w, 1, i)
        grid.addWidget(label("Stop strings", "stop_strings_label", role="field"), 2, 0, 1, 2)
        grid.addWidget(self.stops, 3, 0, 1, 4)
        grid.addWidget(self.reset_button, 3, 4)
        inner = QVBoxLayout(self.body)
        inner.setContentsMargins(0, 4, 0, 0)
        inner.setSpacing(6)
        inner.addWidget(label("System prompt", "system_prompt_label", role="field"))
        inner.addWidget(self.system_prompt)
        inner.addLayout(grid)
        head = QHBoxLayout()
        head.addWidget(self.toggle)
        head.addWidget(self.summary, 1)
        box = QVBoxLayout(self)
        box.setContentsMargins(16, 6, 16, 6)
        box.setSpacing(4)
        box.addLayout(head)
        box.addWidget(self.body)
        self.system_prompt.installEventFilter(self)
        self.set_defaults(FALLBACK)
        self.set_expanded(False)

    def _double(self, name, accessible, lo, hi, step, decimals) -> QDoubleSpinBox:
        w = named(QDoubleSpinBox(), name, accessible)
        w.setRange(lo, hi)
        w.setSingleStep(step)
        w.setDecimals(decimals)
        w.setKeyboardTracking(False)
        w.setMinimumWidth(SPIN_MIN_WIDTH)  # may shrink below the widest value's width
        return w

    def _int(self, name, accessible, lo, hi) -> QSpinBox:
        w = named(QSpinBox(), name, accessible)
        w.setRange(lo, hi)
        w.setKeyboardTracking(False)
        w.setMinimumWidth(SPIN_MIN_WIDTH)
        return w

    # ---- state
    def set_expanded(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.toggle.setAccessibleName("Hide generation settings" if expanded else "Show generation settings")
        if self.toggle.isChecked() != expanded:
            self.toggle.setChecked(expanded)

    @property
    def defaults(self) -> SamplingParams:
        return self._defaults

    def set_defaults(self, defaults: SamplingParams, *, apply: bool = True) -> None:
        """New model defaults (the "Model defaults" button); the fields take them when `apply`."""
        self._defaults = defaults
        if apply:
            self.set_values(defaults)

    def reset_to_defaults(self) -> None:
        self.set_values(self._defaults)
        self.values_changed.emit()  # the user asked for it: remember it

    def set_values(self, d: SamplingParams) -> None:
        """Show `d` in the fields (restored settings, model defaults) without reporting an edit."""
        self._loading = True
        try:
            self.temperature.setValue(d.temperature)
            self.top_p.setValue(d.top_p)
            self.top_k.setValue(d.top_k)
            self.max_tokens.setValue(d.max_new_tokens)
            self.seed.setValue(-1 if d.seed is None else d.seed)
            self.stops.setText(format_stops(tuple(d.stop)))
        finally:
            self._loading = False
        self._update_summary()

    def _on_field_changed(self, *_args) -> None:
        self._update_summary()
        if not self._loading:
            self.values_changed.emit()

    def sampling_params(self) -> SamplingParams:
        seed = self.seed.value()
        return SamplingParams(
            temperature=self.temperature.value(),
            top_p=self.top_p.value(),
            top_k=self.top_k.value(),
            max_new_tokens=self.max_tokens.value(),
            seed=None if seed < 0 else seed,
            stop=parse_stops(self.stops.text()),
        )

    def set_system_prompt(self, text: str) -> None:
        self.system_prompt.setPlainText(text)

    def system_prompt_text(self) -> str:
        return self.system_prompt.toPlainText().strip()

    def _update_summary(self, *_args) -> None:
        p = self.sampling_params()
        mode = "greedy" if p.greedy else f"T {p.temperature:g} · top-p {p.top_p:g}" + (
            f" · top-k {p.top_k}" if p.top_k else "")
        stops = f" · stop {format_stops(p.stop)}" if p.stop else ""
        self.summary.setText(f"{mode} · max {p.max_new_tokens} tokens{stops}")

    def eventFilter(self, obj, event) -> bool:
        if obj is self.system_prompt and event.type() == event.Type.FocusOut:
            self.system_prompt_edited.emit(self.system_prompt_text())
        return super().eventFilter(obj, event)
