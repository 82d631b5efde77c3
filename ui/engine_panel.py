"""Engine panel: model picker plus the optimisation switches, each applied the moment it changes.

Every change sends a whole new EngineConfig through the bridge and marks its control
'applying…' until the engine answers: ConfigApplied -> 'applied', EngineErrorEvent(where=
'config') -> 'failed: why' (and the control goes back to what the engine still runs).
The engine answers config commands in order, so pending changes are matched first-in first-out.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine import events as ev
from engine.config import (
    BatchingConfig,
    EngineConfig,
    KVCacheMode,
    Quantisation,
    SpeculativeConfig,
    SpeculativeMode,
)
from ui.model_names import ModelNames
from ui.model_picker import ModelPickerView
from ui.widgets import StatusPill, label, named

KV_CHOICES = [(KVCacheMode.OFF, "Off — recompute every step"), (KVCacheMode.ON, "On"),
              (KVCacheMode.PREFIX, "On + prefix reuse")]
QUANT_CHOICES = [(Quantisation.NONE, "None (model dtype)"), (Quantisation.BF16, "bf16"),
                 (Quantisation.INT8, "int8 (8-bit weights)"), (Quantisation.NF4, "nf4 (4-bit NormalFloat)"),
                 (Quantisation.FP4, "fp4 (4-bit float)")]
SPEC_CHOICES = [(SpeculativeMode.OFF, "Off"), (SpeculativeMode.DRAFT, "Draft model"),
                (SpeculativeMode.NGRAM, "N-gram (prompt lookup)")]
GROUPS = ("kv", "batching", "quant", "spec")
MAX_K = 8


class EnginePanel(QScrollArea):
    model_requested = Signal(str)

    def __init__(self, bridge, *, bundled_target: Path | None = None, bundled_draft: Path | None = None,
                 recent_models: list[str] | None = None, model_names: ModelNames | None = None,
                 parent=None) -> None:
        super().__init__(parent)
        named(self, "engine_panel", "Engine panel")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the panel fits its width
        self._bridge = bridge
        self._bundled_draft = Path(bundled_draft) if bundled_draft else None
        names = model_names or ModelNames()
        self._applied: EngineConfig = bridge.config
        self._requested: EngineConfig = bridge.config
        self._inflight: list[tuple[dict, str]] = []  # (config dict, group) in the order sent
        self._last_failed: tuple[dict, str] | None = None

        body = named(QWidget(), "engine_panel_body", "Engine settings")
        box = QVBoxLayout(body)
        box.setContentsMargins(12, 12, 12, 12)
        box.setSpacing(12)
        self.picker = ModelPickerView(bridge, bundled_target, recent_models, model_names=names)
        self.picker.model_requested.connect(self.model_requested.emit)
        box.addWidget(self._section("model", "Model", self.picker))

        # KV cache
        self.kv_combo = self._combo("kv_cache_combo", "KV cache mode", KV_CHOICES)
        self.kv_combo.setToolTip("Off recomputes the whole sequence each step; prefix reuse also keeps "
                                 "finished conversations' caches to skip re-reading shared prompts")
        self.kv_status = StatusPill("kv_cache_status", "KV cache status")
        box.addWidget(self._section("kv", "KV cache", self.kv_combo, self.kv_status))

        # batching
        self.batching_check = named(QCheckBox("Continuous batching"), "batching_toggle", "Continuous batching")
        self.batch_spin = named(QSpinBox(), "max_batch_spin", "Maximum batch size")
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setKeyboardTracking(False)
        self.batch_spin.setPrefix("max ")
        self.batch_spin.setMinimumWidth(72)
        self.bursts_check = named(QCheckBox("Decode bursts"), "decode_bursts_toggle", "Decode bursts")
        self.bursts_check.setToolTip("Greedy rows decode several steps per schedule in one native call "
                                     "(up to ~10 ms): the per-step Python is paid once per burst, and "
                                     "tokens stream a few at a time")
        self.batching_status = StatusPill("batching_status", "Batching status")
        row = QHBoxLayout()
        row.addWidget(self.batching_check, 1)
        row.addWidget(self.batch_spin)
        box.addWidget(self._section("batching", "Batching", row, self.bursts_check, self.batching_status))

        # quantisation
        self.quant_combo = self._combo("quantisation_combo", "Quantisation level", QUANT_CHOICES)
        self.quant_status = StatusPill("quantisation_status", "Quantisation status")
        box.addWidget(self._section("quant", "Quantisation", self.quant_combo, self.quant_status))

        # speculative decoding
        self.spec_combo = self._combo("speculative_combo", "Speculative decoding mode", SPEC_CHOICES)
        self.draft_input = named(QLineEdit(), "draft_model_input", "Draft model path or hub id")
        bundled_name = (names(str(self._bundled_draft)) if self._bundled_draft and names.known(str(self._bundled_draft))
                        else "demo draft")
        self.draft_input.setPlaceholderText(f"{bundled_name} (bundled)" if self._bundled_draft
                                            else "draft model path or hub id")
        self.draft_input.setToolTip(f"Empty: the bundled draft, {self._bundled_draft}" if self._bundled_draft
                                    else "A draft model folder or hub id with the target's tokenizer")
        self.draft_browse = named(QToolButton(), "draft_browse_button", "Choose draft model folder")
        self.draft_browse.setText("…")
        self.draft_browse.clicked.connect(self._browse_draft)
        self.k_spin = named(QSpinBox(), "draft_k_spin", "Draft tokens per step (k)")
        self.k_spin.setRange(1, MAX_K)
        self.k_spin.setKeyboardTracking(False)
        self.k_spin.setPrefix("k = ")
        self.adaptive_check = named(QCheckBox("Adaptive k"), "adaptive_k_toggle", "Adaptive draft length")
        self.adaptive_check.setToolTip("Grow k after fully accepted drafts, shrink it after rejections")
        self.spec_status = StatusPill("speculative_status", "Speculative decoding status")
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(6)
        grid.addWidget(self.spec_combo, 0, 0, 1, 3)
        grid.addWidget(label("Draft", "draft_model_label", role="field"), 1, 0)
        grid.addWidget(self.draft_input, 1, 1)
        grid.addWidget(self.draft_browse, 1, 2)
        k_row = QHBoxLayout()
        k_row.setSpacing(10)
        k_row.addWidget(self.k_spin)
        k_row.addWidget(self.adaptive_check, 1)
        grid.addLayout(k_row, 2, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        box.addWidget(self._section("spec", "Speculative decoding", grid, self.spec_status))
        box.addStretch(1)
        self.setWidget(body)

        self._pills = {"kv": self.kv_status, "batching": self.batching_status, "quant": self.quant_status,
                       "spec": self.spec_status}
        self._show_config(self._applied)
        self._refresh_availability()
        self.kv_combo.currentIndexChanged.connect(lambda _i: self._request("kv"))
        self.batching_check.toggled.connect(lambda _on: self._request("batching"))
        self.batch_spin.valueChanged.connect(lambda _v: self._request("batching"))
        self.bursts_check.toggled.connect(lambda _on: self._request("batching"))
        self.quant_combo.currentIndexChanged.connect(lambda _i: self._request("quant"))
        self.spec_combo.currentIndexChanged.connect(lambda _i: self._request("spec"))
        self.k_spin.valueChanged.connect(lambda _v: self._request("spec"))
        self.adaptive_check.toggled.connect(lambda _on: self._request("spec"))
        self.draft_input.editingFinished.connect(self._on_draft_edited)
        bridge.config_applied.connect(self._on_config_applied)
        bridge.error_occurred.connect(self._on_error)
        bridge.model_loaded.connect(lambda _info: self._refresh_availability())

    # ------------------------------------------------------------------ building
    def _section(self, key: str, title: str, *parts) -> QGroupBox:
        group = named(QGroupBox(title), f"{key}_section", title)
        inner = QVBoxLayout(group)
        inner.setContentsMargins(12, 8, 12, 10)
        inner.setSpacing(6)
        for part in parts:
            if isinstance(part, QWidget):
                inner.addWidget(part)
            else:
                inner.addLayout(part)
        return group

    def _combo(self, name: str, accessible: str, choices) -> QComboBox:
        combo = named(QComboBox(), name, accessible)
        for value, text in choices:
            combo.addItem(text, value)
        # a narrow panel cuts long item texts instead of scrolling sideways
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(14)
        return combo

    # ------------------------------------------------------------------ public
    @property
    def requested_config(self) -> EngineConfig:
        return self._requested

    def pill(self, group: str) -> StatusPill:
        return self._pills[group]

    def apply_config(self, config: EngineConfig) -> None:
        """Show `config` in the controls and ask the engine for it (restored settings, --draft)."""
        self._requested = config
        self._show_config(config)
        groups = [g for g in GROUPS if self._group_value(config, g) != self._group_value(self._applied, g)]
        self._send(config, groups[-1] if groups else "kv", groups)

    def use_draft(self, draft: str) -> None:
        cfg = self._requested.with_(speculative=SpeculativeConfig(
            mode=SpeculativeMode.DRAFT, num_draft_tokens=self.k_spin.value(),
            adaptive=self.adaptive_check.isChecked(), draft_model=draft))
        self.apply_config(cfg)

    # ------------------------------------------------------------------ controls -> config
    def _config_from_controls(self) -> EngineConfig:
        base = self._requested
        mode = self.spec_combo.currentData()
        draft = self.draft_input.text().strip() or None
        if draft is None and mode is SpeculativeMode.DRAFT and self._bundled_draft is not None:
            draft = str(self._bundled_draft)  # the empty field means the bundled draft
        return base.with_(
            kv_cache=self.kv_combo.currentData(),
            batching=BatchingConfig(enabled=self.batching_check.isChecked(),
                                    max_batch_size=self.batch_spin.value(),
                                    token_budget=base.batching.token_budget,
                                    decode_bursts=self.bursts_check.isChecked()),
            quantisation=self.quant_combo.currentData(),
            speculative=SpeculativeConfig(mode=mode,
                                          num_draft_tokens=self.k_spin.value(),
                                          adaptive=self.adaptive_check.isChecked(),
                                          draft_model=draft,
                                          ngram_max=base.speculative.ngram_max,
                                          ngram_min=base.speculative.ngram_min),
        )

    def _request(self, group: str) -> None:
        self._update_enabled()
        cfg = self._config_from_controls()
        if cfg == self._requested:
            return
        self._requested = cfg
        self._send(cfg, group, [group])

    def _send(self, cfg: EngineConfig, group: str, groups: list[str]) -> None:
        for g in groups or [group]:
            self._inflight.append((cfg.to_dict(), g))
            self._pills[g].show_state("applying")
        self._bridge.reconfigure(cfg)

    def _on_draft_edited(self) -> None:
        if self.spec_combo.currentData() is SpeculativeMode.DRAFT:
            self._request("spec")

    def _browse_draft(self) -> None:
        start = str(self._bundled_draft) if self._bundled_draft else ""
        path = QFileDialog.getExistingDirectory(self, "Choose draft model folder", start)
        if path:
            self.draft_input.setText(path)
            self._on_draft_edited()

    # ------------------------------------------------------------------ engine answers
    def _on_config_applied(self, event: ev.ConfigApplied) -> None:
        self._applied = EngineConfig.from_dict(event.config_dict).with_(
            prefix_cache_max_bytes=self._applied.prefix_cache_max_bytes)
        matched = [i for i, (d, _g) in enumerate(self._inflight) if d == event.config_dict]
        if not matched:
            failed = self._last_failed
            if failed is not None and failed[0] == event.config_dict:
                # a warning (where='config') came before this apply: it did apply, with a note
                note = self._pills[failed[1]].toolTip()
                self._pills[failed[1]].show_state("applied")
                self._pills[failed[1]].setToolTip(note)
                self._last_failed = None
                self._requested = self._with_group(self._requested, failed[1], self._applied)
                self._show_config(self._requested)
            elif not self._inflight:
                self._requested = self._applied  # changed elsewhere (e.g. another view): follow it
                self._show_config(self._applied)
            return
        # the engine answers in order: everything sent up to the last match has been handled
        answered = self._inflight[: matched[-1] + 1]
        del self._inflight[: matched[-1] + 1]
        for _d, g in answered:
            if not any(g == g2 for _d2, g2 in self._inflight):
                self._pills[g].show_state("applied")
        self._last_failed = None

    def _on_error(self, event: ev.EngineErrorEvent) -> None:
        if event.where != "config" or not self._inflight:
            return
        failed_dict, _ = self._inflight[0]
        groups = [g for d, g in self._inflight if d == failed_dict]
        self._inflight = [(d, g) for d, g in self._inflight if d != failed_dict]
        self._last_failed = (failed_dict, groups[-1])
        for g in groups:
            self._pills[g].show_state("failed", event.message)
        # the engine keeps what it ran before: show that, and build later changes on it
        reverted = self._requested
        for g in groups:
            reverted = self._with_group(reverted, g, self._applied)
        self._requested = reverted
        typed_draft = self.draft_input.text()
        self._show_config(reverted)
        self.draft_input.setText(typed_draft)  # keep what the user typed, so it can be corrected

    # ------------------------------------------------------------------ config -> controls
    @staticmethod
    def _group_value(cfg: EngineConfig, group: str):
        return {"kv": cfg.kv_cache, "batching": cfg.batching, "quant": cfg.quantisation,
                "spec": cfg.speculative}[group]

    @staticmethod
    def _with_group(cfg: EngineConfig, group: str, source: EngineConfig) -> EngineConfig:
        field_name = {"kv": "kv_cache", "batching": "batching", "quant": "quantisation",
                      "spec": "speculative"}[group]
        return cfg.with_(**{field_name: getattr(source, field_name)})

    def _show_config(self, cfg: EngineConfig) -> None:
        widgets = (self.kv_combo, self.batching_check, self.batch_spin, self.bursts_check, self.quant_combo,
                   self.spec_combo, self.k_spin, self.adaptive_check, self.draft_input)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.kv_combo.setCurrentIndex(self.kv_combo.findData(cfg.kv_cache))
            self.batching_check.setChecked(cfg.batching.enabled)
            self.batch_spin.setValue(cfg.batching.max_batch_size)
            self.bursts_check.setChecked(cfg.batching.decode_bursts)
            self.quant_combo.setCurrentIndex(self.quant_combo.findData(cfg.quantisation))
            self.spec_combo.setCurrentIndex(self.spec_combo.findData(cfg.speculative.mode))
            self.k_spin.setValue(min(cfg.speculative.num_draft_tokens, MAX_K))
            self.adaptive_check.setChecked(cfg.speculative.adaptive)
            draft = cfg.speculative.draft_model or ""
            self.draft_input.setText("" if self._is_bundled_draft(draft) else draft)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._update_enabled()

    def _is_bundled_draft(self, draft: str) -> bool:
        if not draft or self._bundled_draft is None:
            return False
        try:
            return Path(draft).expanduser().resolve() == self._bundled_draft.resolve()
        except OSError:
            return False

    def _update_enabled(self) -> None:
        mode = self.spec_combo.currentData()
        self.batch_spin.setEnabled(self.batching_check.isChecked())
        for w in (self.k_spin, self.adaptive_check):
            w.setEnabled(mode is not SpeculativeMode.OFF)
        for w in (self.draft_input, self.draft_browse):
            w.setEnabled(mode is SpeculativeMode.DRAFT)

    def _refresh_availability(self) -> None:
        info = self._bridge.model_info
        # the engine says what its device cannot run (ModelInfo); nothing is probed on this thread
        unavailable = dict(info.unavailable_levels) if info is not None and info.unavailable_levels else {}
        model = self.quant_combo.model()
        for i in range(self.quant_combo.count()):
            reason = unavailable.get(self.quant_combo.itemData(i).value)
            item = model.item(i)
            item.setEnabled(reason is None)
            item.setToolTip(f"Unavailable: {reason}" if reason else "")
