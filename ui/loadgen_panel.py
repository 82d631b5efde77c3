"""Load generator controls: simulated users sending prompts through the bridge.

The generator (engine.loadgen) runs on its own thread and only submits, through
bridge.submit (a thread-safe enqueue on the engine). This panel hands each finished request
of its own back to it (notify_finished) from the bridge's request_finished signal, so a
simulated user becomes free again. Stop ends the arrivals; requests already in flight finish.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from engine import events as ev
from engine.loadgen import DEFAULT_PROMPTS, LoadGenerator, LoadSpec
from ui.widgets import label, named

LONG_PROMPTS = tuple(
    p * 3 for p in (
        "Tell me the whole tale of the king who divided his kingdom among his daughters, and what came of it. ",
        "Describe the storm upon the heath, the fool, the blind earl and the road to Dover, in order. ",
        "Recount how the prince of Denmark met his father's ghost upon the battlements at night. ",
        "Relate the story of the two houses of Verona, alike in dignity, and the lovers they lost. ",
    )
)
REPETITIVE_PROMPTS = (
    "Repeat after me: to be or not to be, to be or not to be, to be or not to be.",
    "Say it again and again: a horse, a horse, my kingdom for a horse, a horse, a horse.",
    "Echo this line: friends, romans, countrymen, friends, romans, countrymen, lend me your ears.",
    "Once more: now is the winter, now is the winter, now is the winter of our discontent.",
)
STATUS_INTERVAL_MS = 500
PROMPT_SETS = {
    "short": ("Short questions", DEFAULT_PROMPTS),
    "long": ("Long prompts (prefill heavy)", LONG_PROMPTS),
    "repetitive": ("Repetitive (n-gram friendly)", REPETITIVE_PROMPTS),
    "custom": ("Custom (one prompt per line)", ()),
}


class LoadGenPanel(QGroupBox):
    started = Signal()
    stopped = Signal()

    def __init__(self, bridge, parent=None) -> None:
        super().__init__("Load generator", parent)
        named(self, "loadgen_panel", "Load generator")
        self._bridge = bridge
        self.generator: LoadGenerator | None = None
        self._runs = 0

        self.users_spin = named(QSpinBox(), "loadgen_users_spin", "Simulated users",
                                "Requests in flight at most: each user waits for its answer")
        self.users_spin.setRange(1, 256)
        self.users_spin.setValue(4)
        self.rate_spin = named(QDoubleSpinBox(), "loadgen_rate_spin", "Arrival rate, requests per second",
                               "Mean of the Poisson arrivals")
        self.rate_spin.setRange(0.1, 500.0)
        self.rate_spin.setDecimals(1)
        self.rate_spin.setSingleStep(0.5)
        self.rate_spin.setValue(2.0)
        self.rate_spin.setSuffix(" req/s")
        self.prompts_combo = named(QComboBox(), "loadgen_prompts_combo", "Prompt set")
        for key, (text, _) in PROMPT_SETS.items():
            self.prompts_combo.addItem(text, key)
        self.prompts_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.prompts_combo.setMinimumContentsLength(12)
        self.custom_prompts = named(QPlainTextEdit(), "loadgen_custom_prompts", "Custom prompts, one per line")
        self.custom_prompts.setPlaceholderText("one prompt per line")
        self.custom_prompts.setFixedHeight(70)
        self.custom_prompts.setVisible(False)
        self.min_tokens_spin = named(QSpinBox(), "loadgen_min_tokens_spin", "Minimum output tokens")
        self.max_tokens_spin = named(QSpinBox(), "loadgen_max_tokens_spin", "Maximum output tokens")
        for spin, value in ((self.min_tokens_spin, 16), (self.max_tokens_spin, 96)):
            spin.setRange(1, 8192)
            spin.setValue(value)
        self.start_button = named(QPushButton("Start load"), "loadgen_start_button", "Start the load generator")
        self.start_button.setProperty("role", "primary")
        self.stop_button = named(QPushButton("Stop"), "loadgen_stop_button", "Stop the load generator",
                                 "Stops new arrivals; requests in flight finish")
        self.stop_button.setEnabled(False)
        self.status = label("idle", "loadgen_status", "Load generator status", role="muted")
        self.status.setWordWrap(True)
        # the status follows the requests at most twice a second: a label update re-lays out the view
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._update_status)

        form = QFormLayout()
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        form.addRow(label("Users", "loadgen_users_label", role="field"), self.users_spin)
        form.addRow(label("Rate", "loadgen_rate_label", role="field"), self.rate_spin)
        form.addRow(label("Prompts", "loadgen_prompts_label", role="field"), self.prompts_combo)
        form.addRow(self.custom_prompts)
        form.addRow(label("Min tokens", "loadgen_min_tokens_label", "Minimum output tokens", role="field"),
                    self.min_tokens_spin)
        form.addRow(label("Max tokens", "loadgen_max_tokens_label", "Maximum output tokens", role="field"),
                    self.max_tokens_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 1)
        buttons.addWidget(self.stop_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(10, 12, 10, 10)
        col.setSpacing(8)
        col.addLayout(form)
        col.addLayout(buttons)
        col.addWidget(self.status)

        self.prompts_combo.currentIndexChanged.connect(self._on_prompt_set_changed)
        self.min_tokens_spin.valueChanged.connect(self._on_min_changed)
        self.max_tokens_spin.valueChanged.connect(self._on_max_changed)
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(self.stop)
        bridge.request_finished.connect(self._on_request_finished)
        bridge.request_queued.connect(self._on_request_queued)
        bridge.state_changed.connect(self._on_state_changed)

    # ------------------------------------------------------------------ public
    @property
    def running(self) -> bool:
        return self.generator is not None and self.generator.running

    def prompts(self) -> tuple[str, ...]:
        key = self.prompts_combo.currentData()
        if key == "custom":
            return tuple(line.strip() for line in self.custom_prompts.toPlainText().splitlines() if line.strip())
        return PROMPT_SETS[key][1]

    def spec(self) -> LoadSpec:
        """The LoadSpec the controls describe (ValueError when they describe none)."""
        return LoadSpec(users=self.users_spin.value(), rate_per_s=self.rate_spin.value(),
                        min_new_tokens=self.min_tokens_spin.value(), max_new_tokens=self.max_tokens_spin.value(),
                        prompts=self.prompts(), seed=self._runs)

    def start(self, spec: LoadSpec | None = None) -> bool:
        if self.running:
            return True
        try:
            spec = spec or self.spec()
        except ValueError as exc:
            self.status.setText(str(exc))
            return False
        self._runs += 1
        self.generator = LoadGenerator(self._bridge.submit, spec)
        self.generator.start()
        self._set_running(True)
        self.started.emit()
        return True

    def stop(self) -> None:
        gen = self.generator
        if gen is not None and gen.running:
            gen.stop()
        self._set_running(False)
        self._update_status()
        self.stopped.emit()

    # ------------------------------------------------------------------ slots
    def _on_request_finished(self, event: ev.RequestFinished) -> None:
        gen = self.generator
        if gen is None:
            return
        gen.notify_finished(event.request_id)
        if not gen.running and self.stop_button.isEnabled() and not gen.stats.in_flight:
            self._set_running(False)  # reached max_requests
            self.stopped.emit()
            self._update_status()
        elif not self._status_timer.isActive():
            self._status_timer.start()

    def _on_request_queued(self, event: ev.RequestQueued) -> None:
        if self.generator is not None and event.tag == "loadgen" and not self._status_timer.isActive():
            self._status_timer.start()

    def _on_state_changed(self, event: ev.StateChanged) -> None:
        if event.state is ev.EngineState.STOPPED and self.running:
            self.stop()

    def _on_prompt_set_changed(self) -> None:
        self.custom_prompts.setVisible(self.prompts_combo.currentData() == "custom")

    def _on_min_changed(self, value: int) -> None:
        if self.max_tokens_spin.value() < value:
            self.max_tokens_spin.setValue(value)

    def _on_max_changed(self, value: int) -> None:
        if self.min_tokens_spin.value() > value:
            self.min_tokens_spin.setValue(value)

    def _set_running(self, on: bool) -> None:
        self.start_button.setEnabled(not on)
        self.stop_button.setEnabled(on)
        for w in (self.users_spin, self.rate_spin, self.prompts_combo, self.custom_prompts, self.min_tokens_spin,
                  self.max_tokens_spin):
            w.setEnabled(not on)
        if on:
            self._update_status()

    def _update_status(self) -> None:
        gen = self.generator
        if gen is None:
            return
        s = gen.stats
        state = "running" if gen.running else "stopped"
        text = f"{state} · {s.submitted} sent · {s.finished} done · {len(s.in_flight)} in flight"
        self.status.setText(text)
        self.status.setAccessibleDescription(text)
