"""Compare tab: 2–4 configurations side by side on one prompt, streaming live, then a summary
of ratios against the baseline column and of output agreement, exportable as Markdown / JSON.

The view only talks to a CompareBridge; figures come from the Qt-free ui.viewmodels.compare,
so the summary table (ui.compare_summary), the column footers (ui.compare_column) and the
exported reports show the same strings.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.config import EngineConfig, ModelSpec, SamplingParams
from ui.compare_bridge import CompareBridge
from ui.compare_column import FIGURES, CompareColumnPanel, combo
from ui.compare_provenance import collect_provenance
from ui.compare_summary import CompareSummaryTable
from ui.formatting import MISSING, format_bytes, format_ms, model_display_name
from ui.reflow import FlowLayout, ReflowGrid
from ui.theme import LIGHT, Theme
from ui.viewmodels.compare import Comparison
from ui.viewmodels.compare_format import fmt_rate
from ui.viewmodels.compare_presets import DEFAULT_PRESETS, NEXT_PRESETS
from ui.widgets import label, named

MIN_COLUMNS, MAX_COLUMNS = 2, 4
MIN_COLUMN_WIDTH = 280  # narrower than this, columns wrap onto another row
RENDER_INTERVAL_MS = 80  # streaming text re-renders at most this often


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
        self.mode_combo = combo("compare_mode", "Run mode", [("fair", "fair"), ("race", "race")])
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

        self.table = CompareSummaryTable()
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        s_head = QHBoxLayout()
        s_head.addWidget(label("Summary against the baseline (column 1)", "compare_summary_title", role="section"))
        s_head.addStretch(1)
        s_head.addWidget(self.export_md_button)
        s_head.addWidget(self.export_json_button)
        self.footer = named(QWidget(), "compare_footer", "Comparison status and colour legend")
        foot = QHBoxLayout(self.footer)
        foot.setContentsMargins(0, 0, 0, 0)
        foot.setSpacing(16)
        self.status.setWordWrap(True)  # a long verdict wraps rather than widening the tab
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
        layout.addWidget(self.footer)
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
            self.table.fill(self.comparison, self.theme)

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
        self.table.fit(len(self.panels))
        self._update_buttons()
        return panel

    def set_columns(self, columns: list[tuple[str, EngineConfig]]) -> None:
        """Open these configurations as the columns (2 to 4; the first is the baseline), e.g. from Tune."""
        columns = list(columns)[:MAX_COLUMNS]
        if len(columns) < MIN_COLUMNS or self.bridge.is_running:
            return
        while len(self.panels) > len(columns):
            self.remove_column(self.panels[-1])
        while len(self.panels) < len(columns):
            self.add_column("custom")
        for panel, (name, config) in zip(self.panels, columns):
            panel.set_config(name, config)
        self._update_buttons()

    def remove_column(self, panel: CompareColumnPanel) -> None:
        if len(self.panels) <= MIN_COLUMNS or panel not in self.panels or panel.index == 0:
            return
        self.panels.remove(panel)
        self.columns_area.remove_cell(panel)
        panel.deleteLater()
        for i, p in enumerate(self.panels):
            p.set_index(i)
        self.table.fit(len(self.panels))
        self._update_buttons()

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
                                models=[p.model() for p in self.panels], presets=[p.preset for p in self.panels],
                                remotes=[p.remote for p in self.panels])
        prompt = (("user", text),) if self.chat_check.isChecked() else text
        self.table.setRowCount(0)
        for p in self.panels:
            p.clear_output(p.status_label.text() or "waiting…")
            p.set_figures({key: MISSING for key, _ in FIGURES})
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
            where = (f" · {model_display_name(info.name_or_path)} · {info.dtype or info.architecture} · {info.device}"
                     if info else "")  # a server reports no dtype: its kind instead
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
                           "acceptance": MISSING if rate is None else f"{rate * 100:.0f}%"})

    def _on_run_recorded(self, column: int, record) -> None:
        panel = self._current(column)
        if panel is None:
            return
        what = "warm-up done" if record.warmup else f"repeat {record.repeat + 1}/{self.comparison.repeats} done"
        panel.set_status(f"{what} · {record.completion_tokens} tokens · {record.reason}"
                                   + (f" · {record.error}" if record.error else ""))
        panel.set_figures({
            "tokens_per_s": MISSING if record.tokens_per_s is None else f"{fmt_rate(record.tokens_per_s)} tok/s",
            "ttft": format_ms(record.ttft_s), "tpot": format_ms(record.tpot_s),
            "weights": format_bytes(record.weights_bytes), "kv": format_bytes(record.peak_kv_bytes),
            "acceptance": MISSING if record.acceptance_rate is None else f"{record.acceptance_rate * 100:.0f}%"})

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
        self.table.fill(comp, self.theme)
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
