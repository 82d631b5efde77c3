"""ui/engine_panel.py: every switch reconfigures the running engine and shows what came of it."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from engine import events as ev
from engine.config import KVCacheMode, Quantisation, SpeculativeMode
from tests.helpers.windows import QT_LOG_IGNORE, ask, first_tokens, send_prompt, wait_answer

pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)


def _select(combo, value) -> None:
    index = combo.findData(value)
    assert index >= 0
    combo.setCurrentIndex(index)


def test_flipping_kv_cache_and_batching_mid_answer_reaches_the_engine(qtbot, window):
    panel, bridge = window.engine_panel, window.bridge
    send_prompt(qtbot, window, "speak the speech i pray you", max_tokens=4000)
    first_tokens(qtbot, window)

    with qtbot.waitSignal(bridge.config_applied, timeout=30_000) as applied:
        _select(panel.kv_combo, KVCacheMode.OFF)
        assert panel.kv_status.state == "applying" and panel.kv_status.text() == "applying…"
    assert applied.args[0].config_dict == panel.requested_config.to_dict()
    assert bridge.config == panel.requested_config and bridge.config.kv_cache is KVCacheMode.OFF
    assert panel.kv_status.state == "applied"
    assert window.chat.is_generating, "the answer kept going through the change"

    with qtbot.waitSignal(bridge.config_applied, timeout=30_000):
        qtbot.mouseClick(panel.batching_check, Qt.MouseButton.LeftButton)
        assert panel.batching_status.state == "applying"
    assert bridge.config == panel.requested_config and not bridge.config.batching.enabled
    assert panel.batching_status.state == "applied"
    assert not panel.batch_spin.isEnabled()

    window.chat.stop()
    finished = wait_answer(qtbot, window)
    assert finished.reason in (ev.FinishReason.CANCELLED, ev.FinishReason.LENGTH)
    assert "kv off" in finished.config_label and "batching off" in finished.config_label
    assert finished.config_label in window.chat.message_views[-1].config_footer.text()
    # persisted for the next start
    assert window.settings.engine_config() == bridge.config


def test_decode_bursts_are_on_by_default_and_switch_off_mid_answer(qtbot, window):
    panel, bridge = window.engine_panel, window.bridge
    assert panel.bursts_check.isChecked() and bridge.config.batching.decode_bursts
    send_prompt(qtbot, window, "speak the speech i pray you", max_tokens=4000)
    first_tokens(qtbot, window)
    with qtbot.waitSignal(bridge.config_applied, timeout=30_000):
        box = panel.bursts_check  # a user clicks the box itself (the row is as wide as the panel)
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(6, box.height() // 2))
        assert panel.batching_status.state == "applying"
    assert not bridge.config.batching.decode_bursts and bridge.config.batching.enabled
    assert panel.batching_status.state == "applied"
    window.chat.stop()
    finished = wait_answer(qtbot, window)
    assert "(no bursts)" in finished.config_label
    assert window.settings.engine_config() == bridge.config


def test_a_refused_speculative_config_shows_why_and_reverts(qtbot, window, tmp_path):
    panel, bridge = window.engine_panel, window.bridge
    before = bridge.config
    panel.draft_input.setText(str(tmp_path / "no-such-draft"))
    with qtbot.waitSignal(bridge.error_occurred, timeout=30_000,
                          check_params_cb=lambda e: e.where == "config") as refused:
        _select(panel.spec_combo, SpeculativeMode.DRAFT)
        assert panel.spec_status.state == "applying"
    assert panel.spec_status.state == "failed"
    assert panel.spec_status.text().startswith("failed: ")
    assert refused.args[0].message in panel.spec_status.text()
    assert panel.spec_combo.currentData() is before.speculative.mode  # back to what the engine runs
    assert not window.banner.isVisible()  # config failures are shown at the control, not as a banner

    # the panel still works afterwards
    with qtbot.waitSignal(bridge.config_applied, timeout=30_000):
        _select(panel.kv_combo, KVCacheMode.PREFIX)
    assert bridge.config.kv_cache is KVCacheMode.PREFIX
    assert panel.requested_config.speculative.mode is before.speculative.mode


def test_speculative_controls_enable_with_the_mode(qtbot, window):
    panel = window.engine_panel
    assert not panel.k_spin.isEnabled() and not panel.draft_input.isEnabled()
    assert panel.k_spin.maximum() == 8 and panel.k_spin.minimum() == 1
    _select(panel.spec_combo, SpeculativeMode.NGRAM)
    assert panel.k_spin.isEnabled() and panel.adaptive_check.isEnabled()
    assert not panel.draft_input.isEnabled()
    _select(panel.spec_combo, SpeculativeMode.DRAFT)
    assert panel.draft_input.isEnabled() and panel.draft_browse.isEnabled()
    # whatever the engine answers, each change ends applied or failed, never stuck at 'applying'
    qtbot.waitUntil(lambda: panel.spec_status.state in ("applied", "failed") and not panel._inflight,
                    timeout=30_000)


def test_unavailable_quantisation_levels_are_disabled_with_the_reason(qtbot, window, monkeypatch):
    """The engine publishes what its device cannot run (ModelInfo); the panel probes nothing itself."""
    import dataclasses

    import torch

    from engine import quant

    monkeypatch.setattr(quant, "bitsandbytes_version", lambda: None)
    levels = quant.unavailable_levels(torch.device(window.bridge.model_info.device))
    assert {lvl for lvl, _ in levels} == {"int8", "nf4", "fp4"}
    window.bridge.model_info = dataclasses.replace(window.bridge.model_info, unavailable_levels=levels)
    panel = window.engine_panel
    panel._refresh_availability()
    model = panel.quant_combo.model()
    for level in (Quantisation.INT8, Quantisation.NF4, Quantisation.FP4):
        item = model.item(panel.quant_combo.findData(level))
        assert not item.isEnabled()
        assert "bitsandbytes" in item.toolTip()
    assert model.item(panel.quant_combo.findData(Quantisation.NONE)).isEnabled()


def test_model_facts_are_shown(window):
    picker = window.engine_panel.picker
    info = window.bridge.model_info
    assert picker.facts.isVisible()
    assert picker._fact_labels["architecture"].text() == info.architecture
    assert picker._fact_labels["device"].text() == info.device
    assert picker._fact_labels["dtype"].text() == f"{info.dtype} (auto)"  # the window starts on dtype auto
    assert picker._fact_labels["dtype"].toolTip() == info.dtype_note and info.dtype_note.startswith("auto")
    assert picker.status.state == "applied"
    assert picker.combo.currentData() == info.name_or_path


# ---------------------------------------------------------------- the bundled pair, as a user meets it

def _bundled():
    from app import gui, paths

    if not paths.bundled_models_present() or not (paths.bundled_draft_dir() / "config.json").is_file():
        pytest.skip("the bundled demo pair is not built")
    return paths.bundled_target_dir(), paths.bundled_draft_dir(), gui.bundled_model_names()


@pytest.mark.parametrize("quant", [Quantisation.NONE, Quantisation.NF4])
def test_draft_model_from_the_panel_uses_the_bundled_draft(qtbot, make_window, quant):
    """A fresh start on the bundled target; choose "Draft model" in the real combo, nothing typed."""
    target, draft, names = _bundled()
    window = make_window(str(target), bundled_target=target, bundled_draft=draft, model_names=names)
    panel, bridge = window.engine_panel, window.bridge
    assert panel.spec_combo.currentData() is SpeculativeMode.OFF and panel.draft_input.text() == ""
    assert "Shakespeare demo draft" in panel.draft_input.placeholderText()
    if quant is not Quantisation.NONE:
        if quant.value in dict(bridge.model_info.unavailable_levels):
            pytest.skip(f"{quant.value} cannot run here")
        with qtbot.waitSignal(bridge.model_loaded, timeout=120_000):
            _select(panel.quant_combo, quant)
        qtbot.waitUntil(lambda: panel.quant_status.state == "applied", timeout=60_000)
    with qtbot.waitSignal(bridge.config_applied, timeout=120_000,
                          check_params_cb=lambda e: e.config_dict["speculative"]["mode"] == "draft"):
        _select(panel.spec_combo, SpeculativeMode.DRAFT)
    assert panel.spec_status.state == "applied", panel.spec_status.text()
    assert panel.spec_combo.currentData() is SpeculativeMode.DRAFT  # did not snap back to Off
    assert bridge.config.speculative.draft_model == str(draft)
    assert bridge.config.quantisation is quant
    finished = ask(qtbot, window, "To be, or not to be", max_tokens=24)
    assert finished.reason is not ev.FinishReason.ERROR, finished.error
    assert "spec draft" in finished.config_label and finished.stats.spec.num_drafts > 0
    answer = window.chat.message_views[-1]
    assert "acceptance" in answer.footer.text()
    assert "Shakespeare demo (27.8M)" in answer.config_footer.text()  # not "target"


def test_the_bundled_models_have_names_a_user_understands(qtbot, make_window):
    target, draft, names = _bundled()
    assert names[str(target)] == "Shakespeare demo (27.8M)"
    assert names[str(draft)].startswith("Shakespeare demo draft (")
    window = make_window(str(target), bundled_target=target, bundled_draft=draft, model_names=names)
    picker = window.engine_panel.picker
    assert picker.combo.currentText() == "Shakespeare demo (27.8M) — bundled"
    assert picker.status.text() == "loaded Shakespeare demo (27.8M)"
    assert window.chat.empty_label.text().startswith("Chat with Shakespeare demo (27.8M).")
    assert picker.hub_input.text() == str(target)  # the path box shows what is loaded
    assert window.status.model_label.text().startswith("Shakespeare demo (27.8M)")


def test_an_answer_that_ran_under_two_configurations_says_so_in_its_footer(qtbot, window):
    """Provenance: flip the KV cache mid-answer; the footer names both with their token ranges."""
    panel, bridge = window.engine_panel, window.bridge
    window.chat.settings.stops.setText("")
    send_prompt(qtbot, window, "once more unto the breach", max_tokens=4000)
    first_tokens(qtbot, window)
    with qtbot.waitSignal(bridge.config_applied, timeout=30_000):
        _select(panel.kv_combo, KVCacheMode.OFF)
    qtbot.waitUntil(lambda: len(window.chat.message_views[-1].text) > 0, timeout=30_000)
    window.chat.stop()
    finished = wait_answer(qtbot, window)
    if len(finished.config_spans) < 2:
        pytest.skip("the answer ended before the change reached it")
    footer = window.chat.message_views[-1].config_footer.text()
    first, second = finished.config_spans[:2]
    assert f"ran under: tokens 0–{second.first_token - 1}: kv on" in footer
    assert f"{second.first_token}–" in footer and "kv off" in footer
