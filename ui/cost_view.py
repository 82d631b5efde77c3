"""Cost view: what the measured throughput costs, now vs the baseline, and a daily projection.

The arithmetic lives in ui.viewmodels.cost; the throughputs come from the dashboard model
(current: since the last configuration change, 30 s at most; baseline: captured by the user,
else the first busy stretch before any change, 20 s of it at most). Each side says how many
tokens over how long it rests on; no ratio is claimed while either is too thin. The view
refreshes on the dashboard's timer.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
)

from ui.viewmodels.dashboard import BASELINE_WINDOW_S, DashboardModel
from ui.formatting import MISSING
from ui.viewmodels.cost import Baseline, CostInputs, CostModel, describe_basis, format_money
from ui.widgets import label, named

ROWS = (
    ("tps", "Throughput"),
    ("per_million", "Cost / 1M tokens out"),
    ("hours", "Device-hours / day"),
    ("per_day", "Cost / day"),
    ("basis", "Based on"),
)


class CostView(QGroupBox):
    def __init__(self, model: DashboardModel, cost: CostModel | None = None, parent=None) -> None:
        super().__init__("Cost", parent)
        named(self, "cost_view", "Cost", "Cost per million output tokens from the measured throughput")
        self.model = model
        self.cost = cost or CostModel()
        inputs = self.cost.inputs

        self.price_spin = named(QDoubleSpinBox(), "cost_price_spin", "Hardware price per hour")
        self.price_spin.setRange(0.0, 10_000.0)
        self.price_spin.setDecimals(2)
        self.price_spin.setSingleStep(0.25)
        self.price_spin.setPrefix("$ ")
        self.price_spin.setSuffix(" / hour")
        self.price_spin.setValue(inputs.price_per_hour)
        self.requests_spin = named(QSpinBox(), "cost_requests_spin", "Requests per day")
        self.requests_spin.setRange(0, 99_999_999)
        self.requests_spin.setSingleStep(10_000)
        self.requests_spin.setGroupSeparatorShown(True)
        self.requests_spin.setValue(int(inputs.requests_per_day))
        self.tokens_spin = named(QSpinBox(), "cost_tokens_spin", "Average output tokens per request")
        self.tokens_spin.setRange(1, 100_000)
        self.tokens_spin.setValue(int(inputs.avg_output_tokens))
        self.measured_tokens_button = named(QToolButton(), "cost_measured_tokens_button",
                                            "Use the measured average output tokens")
        self.measured_tokens_button.setText("measured")
        self.measured_tokens_button.setToolTip("Set to the mean completion tokens of the finished requests")
        self.baseline_button = named(QPushButton("Use current as baseline"), "cost_baseline_button",
                                     "Use current as baseline",
                                     "Capture the current configuration's throughput as the baseline")
        self.auto_baseline_button = named(QToolButton(), "cost_auto_baseline_button", "Use the automatic baseline")
        self.auto_baseline_button.setText("auto")
        self.auto_baseline_button.setToolTip(f"Baseline = the first busy stretch of load ({BASELINE_WINDOW_S:.0f} s "
                                             "of it at most) before any configuration change")
        self.compare_baseline_button = named(QToolButton(), "cost_compare_baseline_button",
                                             "Use the last comparison's baseline column")
        self.compare_baseline_button.setText("from Compare")
        self.compare_baseline_button.setToolTip("Baseline = the baseline column of the last finished Compare run "
                                                "(its tokens over its wall time)")
        self.compare_baseline_button.setEnabled(False)
        self._offered: Baseline | None = None
        self.baseline_source = label("", "cost_baseline_source", "Baseline source", role="hint")
        self.baseline_source.setWordWrap(True)

        form = QFormLayout()
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        form.addRow(label("Price", "cost_price_label", role="field"), self.price_spin)
        form.addRow(label("Requests/day", "cost_requests_label", role="field"), self.requests_spin)
        tokens_row = QHBoxLayout()
        tokens_row.addWidget(self.tokens_spin, 1)
        tokens_row.addWidget(self.measured_tokens_button)
        form.addRow(label("Output tokens", "cost_tokens_label", role="field"), tokens_row)

        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(4)
        grid.addWidget(label("Baseline", "cost_baseline_header", role="section"), 0, 1, Qt.AlignmentFlag.AlignRight)
        grid.addWidget(label("Current", "cost_current_header", role="section"), 0, 2, Qt.AlignmentFlag.AlignRight)
        self.values: dict[str, dict[str, object]] = {"baseline": {}, "current": {}}
        for row, (key, text) in enumerate(ROWS, start=1):
            grid.addWidget(label(text, f"cost_{key}_label", role="field"), row, 0)
            for col, which in ((1, "baseline"), (2, "current")):
                value = label(MISSING, f"cost_{which}_{key}_value", f"{which.capitalize()} {text.lower()}",
                              role="value")
                value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                grid.addWidget(value, row, col)
                self.values[which][key] = value
        grid.setColumnStretch(0, 1)
        self.summary = label("measuring…", "cost_summary", "Cost comparison summary", role="value")
        self.summary.setWordWrap(True)

        baseline_row = QHBoxLayout()
        baseline_row.addWidget(self.baseline_button, 1)
        baseline_row.addWidget(self.auto_baseline_button)
        other_baselines = QHBoxLayout()  # its own line: the side panel stays narrow
        other_baselines.addStretch(1)
        other_baselines.addWidget(self.compare_baseline_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(10, 12, 10, 10)
        col.setSpacing(8)
        col.addLayout(form)
        col.addLayout(baseline_row)
        col.addLayout(other_baselines)
        col.addWidget(self.baseline_source)
        col.addLayout(grid)
        col.addWidget(self.summary)

        for spin in (self.price_spin, self.requests_spin, self.tokens_spin):
            spin.valueChanged.connect(self._on_inputs_changed)
            spin.setMinimumWidth(96)  # grow with the panel; do not dictate its width
        self.baseline_button.clicked.connect(self.capture_baseline)
        self.auto_baseline_button.clicked.connect(self._on_auto_baseline)
        self.compare_baseline_button.clicked.connect(self.use_compare_baseline)
        self.measured_tokens_button.clicked.connect(self._on_use_measured_tokens)
        self.refresh()

    # ------------------------------------------------------------------ public
    def capture_baseline(self) -> bool:
        """Keep the current measurement as the baseline, unless it is too thin to compare on."""
        current = self.model.current_throughput()
        if current is None:
            self.baseline_source.setText("nothing measured yet: run some load first")
            return False
        refused = self.cost.capture_baseline(Baseline.from_throughput(
            current, "captured", self.model.config_label_at(current.t_to_s)))
        if refused:
            self.baseline_source.setText(f"not captured: {refused}")
            return False
        self.refresh()
        return True

    def offer_comparison(self, comp) -> None:
        """A finished Compare run (connect CompareBridge.comparison_finished here)."""
        offered = Baseline.from_comparison(comp) if comp.finished and not comp.cancelled else None
        self._offered = offered
        self.compare_baseline_button.setEnabled(offered is not None)

    def use_compare_baseline(self) -> bool:
        if self._offered is None:
            return False
        refused = self.cost.capture_baseline(self._offered)
        if refused:
            self.baseline_source.setText(f"not used: {refused}")
            return False
        self.refresh()
        return True

    def auto_baseline(self) -> Baseline | None:
        auto = self.model.auto_baseline()
        if auto is None:
            return None
        return Baseline.from_throughput(auto, "auto", self.model.config_label_at(auto.t_from_s))

    def refresh(self) -> None:
        current = self.model.current_throughput()
        auto = self.auto_baseline()
        baseline = self.cost.baseline(auto)
        comparison = self.cost.comparison(current, auto)
        for which, line, basis in (("baseline", comparison.baseline, baseline),
                                   ("current", comparison.current, current)):
            cells = self.values[which]
            cells["tps"].setText(MISSING if line is None else f"{line.tokens_per_s:,.1f} tok/s")
            cells["per_million"].setText(MISSING if line is None else format_money(line.cost_per_million))
            cells["hours"].setText(MISSING if line is None else f"{line.device_hours_per_day:,.1f} h")
            cells["per_day"].setText(MISSING if line is None else format_money(line.cost_per_day))
            shown = basis if line is not None else None
            cells["basis"].setText(describe_basis(shown, short=True))  # the full account on hover
            cells["basis"].setToolTip(describe_basis(shown) if shown is not None else "")
            cells["basis"].setAccessibleDescription(cells["basis"].toolTip())
        if baseline is None:
            self.baseline_source.setText(f"baseline: the first busy stretch of load before any change "
                                         f"({BASELINE_WINDOW_S:.0f} s at most; measuring…), or press the button")
        else:
            if baseline.source == "compare":
                self.baseline_source.setText(f"baseline (Compare run, one request at a time): {baseline.label}")
            else:
                how = "captured" if baseline.source == "captured" else "first busy stretch"
                self.baseline_source.setText(f"baseline ({how}, {baseline.t_from_s:,.0f}–{baseline.t_to_s:,.0f} s): "
                                             f"{baseline.label}")
        self.summary.setText(self._summary(comparison))
        self.summary.setAccessibleDescription(self.summary.text())

    # ------------------------------------------------------------------ slots
    def _on_inputs_changed(self) -> None:
        self.cost.inputs = CostInputs(self.price_spin.value(), self.requests_spin.value(), self.tokens_spin.value())
        self.refresh()

    def _on_auto_baseline(self) -> None:
        self.cost.clear_baseline()
        self.refresh()

    def _on_use_measured_tokens(self) -> None:
        mean = self.model.mean_completion_tokens()
        if mean is not None:
            self.tokens_spin.setValue(max(round(mean), 1))

    def _summary(self, comparison) -> str:
        current = comparison.current
        if current is None:
            return "measuring… (no throughput since the last change yet)"
        devices = f"{current.devices_needed} device{'s' if current.devices_needed != 1 else ''}"
        if comparison.refusal:
            return f"no comparison: {comparison.refusal}"
        if comparison.speedup is None:
            return f"{self.requests_spin.value():,} requests/day need {devices} at the current throughput"
        cheaper = comparison.saving_fraction * 100
        verb = "cheaper" if cheaper >= 0 else "dearer"
        return (f"×{comparison.speedup:.2f} throughput, {abs(cheaper):.0f} % {verb}: "
                f"{format_money(abs(comparison.saving_per_day))}/day {'saved' if cheaper >= 0 else 'extra'}; "
                f"{devices} for {self.requests_spin.value():,} requests/day")
