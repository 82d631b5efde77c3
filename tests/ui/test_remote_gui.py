"""The desktop app against real servers over real sockets: `transformers serve` and vLLM (CPU build,
n-gram speculation), both session fixtures shared with tests/engine. Driven by objectName, from
the defaults a user sees: the model picker's "Connect to server…" and "Launch profile…"."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import openai
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDialog, QGroupBox, QLabel, QLineEdit, QPlainTextEdit, QPushButton

from engine import events as ev
from engine.remote.launch import free_port
from tests.helpers.remote_servers import API_KEY, SERVED, independent_counter
from tests.helpers.windows import QT_LOG_IGNORE, ask, first_tokens, send_prompt, wait_answer
from ui.dashboard_view import DashboardView
from ui.formatting import MISSING

# the offscreen platform cannot raise a window (the dialogs raise themselves when reopened)
pytestmark = [pytest.mark.slow, pytest.mark.qt_log_ignore(*QT_LOG_IGNORE, "This plugin does not support raise")]

PROMPT = "the quick brown fox"
CONNECT_MS = 30_000


def _picker_button(window, name: str) -> QPushButton:
    button = window.engine_panel.findChild(QPushButton, name)
    assert button is not None and button.isVisible(), name
    return button


def _open_connect_dialog(qtbot, window):
    qtbot.mouseClick(_picker_button(window, "connect_server_button"), Qt.MouseButton.LeftButton)
    dialog = window.engine_panel.picker.connect_dialog
    assert dialog is not None and dialog.isVisible()
    return dialog


def _type(qtbot, widget: QLineEdit, text: str) -> None:
    widget.clear()
    qtbot.keyClicks(widget, text)


def _connect(qtbot, window, url: str, *, key: str = "", model: str | None = None, test: bool = True):
    """Fill the dialog, optionally test, press Connect; returns the dialog."""
    dialog = _open_connect_dialog(qtbot, window)
    _type(qtbot, dialog.findChild(QLineEdit, "remote_url_input"), url)
    if key:
        _type(qtbot, dialog.findChild(QLineEdit, "remote_api_key_input"), key)
    if test:
        with qtbot.waitSignal(dialog.models_listed, timeout=CONNECT_MS) as listed:
            qtbot.mouseClick(dialog.findChild(QPushButton, "remote_test_button"), Qt.MouseButton.LeftButton)
        combo = dialog.findChild(QComboBox, "remote_model_combo")
        assert [combo.itemText(i) for i in range(combo.count())] == list(listed.args[0])
    if model is not None:
        dialog.findChild(QComboBox, "remote_model_combo").setEditText(model)
    qtbot.mouseClick(dialog.findChild(QPushButton, "remote_connect_button"), Qt.MouseButton.LeftButton)
    return dialog


def _section(window, name: str) -> QGroupBox:
    return window.engine_panel.findChild(QGroupBox, name)


def _label(root, name: str) -> str:
    return root.findChild(QLabel, name).text()


def test_chat_streams_from_transformers_serve_and_back_to_local(qtbot, window, tserve_server):
    bridge = window.bridge
    local_model = bridge.model_info.name_or_path
    with qtbot.waitSignal(bridge.remote_connected, timeout=CONNECT_MS) as connected:
        dialog = _connect(qtbot, window, tserve_server.base_url, model=tserve_server.profile.model)
    assert not dialog.isVisible() and bridge.is_remote
    assert connected.args[0].model == tserve_server.profile.model and not connected.args[0].has_metrics
    qtbot.waitUntil(lambda: bridge.model_info is not None, timeout=CONNECT_MS)

    # the engine panel: the server's facts read-only, the local switches locked with the reason
    remote = window.engine_panel.findChild(QGroupBox, "remote_section")
    assert remote.isVisible()
    assert _label(remote, "remote_url_value") == tserve_server.base_url
    assert _label(remote, "remote_metrics_value") == "not exposed"
    assert _label(remote, "remote_max_len_value") == MISSING  # not reported: unknown, never 0
    for name in ("kv_section", "batching_section", "quant_section", "spec_section"):
        assert not _section(window, name).isEnabled(), name
    kv_combo = window.engine_panel.kv_combo
    assert not kv_combo.isEnabled() and "set by launch flags — use a launch profile" in kv_combo.toolTip()
    assert window.engine_panel.findChild(QLabel, "model_params_value").text() == MISSING
    assert MISSING in window.status.model_label.text()  # quantisation unknown on a server

    finished = ask(qtbot, window, PROMPT, max_tokens=30)
    client = openai.OpenAI(base_url=tserve_server.base_url, api_key="EMPTY", max_retries=0)
    ref = client.chat.completions.create(model=tserve_server.profile.model,
                                         messages=[{"role": "user", "content": PROMPT}], max_tokens=30,
                                         temperature=0)
    answer = window.chat.message_views[-1]
    assert finished.error is None and finished.request_id.startswith("remote-")
    assert answer.text == finished.text == ref.choices[0].message.content
    assert f"{ref.usage.completion_tokens} tokens" in answer.footer.text()
    assert "remote" in answer.config_footer.text()  # which backend answered is kept with the answer

    # back to the local engine: its model is still loaded, the switches are live again
    qtbot.mouseClick(_picker_button(window, "use_local_engine_button"), Qt.MouseButton.LeftButton)
    assert not bridge.is_remote and bridge.model_info.name_or_path == local_model
    assert not remote.isVisible() and _section(window, "kv_section").isEnabled()
    assert "launch flags" not in kv_combo.toolTip()
    local = ask(qtbot, window, PROMPT, max_tokens=4)
    assert local.error is None and not local.request_id.startswith("remote-")


def test_refused_connection_and_unknown_model_are_clear_and_the_app_keeps_working(qtbot, window, tserve_server):
    bridge = window.bridge
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    dialog = _open_connect_dialog(qtbot, window)
    _type(qtbot, dialog.findChild(QLineEdit, "remote_url_input"), dead)
    with qtbot.waitSignal(dialog.probe_failed, timeout=CONNECT_MS) as failed:
        qtbot.mouseClick(dialog.findChild(QPushButton, "remote_test_button"), Qt.MouseButton.LeftButton)
    assert failed.args[0].startswith(f"cannot connect to {dead}")
    assert dialog.isVisible() and "cannot connect" in dialog.findChild(QLabel, "remote_connect_status").text()

    # connected anyway: one clear load error in the picker, the answer to a message says it too
    with qtbot.waitSignal(bridge.error_occurred, timeout=CONNECT_MS,
                          check_params_cb=lambda e: e.where == "load") as err:
        qtbot.mouseClick(dialog.findChild(QPushButton, "remote_connect_button"), Qt.MouseButton.LeftButton)
    assert "cannot connect" in err.args[0].message
    qtbot.waitUntil(lambda: "cannot connect" in window.engine_panel.picker.status.text(), timeout=5000)
    refused = ask(qtbot, window, PROMPT, max_tokens=4)
    assert refused.reason is ev.FinishReason.ERROR and "cannot connect" in refused.error
    assert "cannot connect" in window.chat.message_views[-1].error_label.text()

    # a model the server does not serve: named, with what it does serve
    with qtbot.waitSignal(bridge.error_occurred, timeout=CONNECT_MS,
                          check_params_cb=lambda e: e.where == "load") as err:
        _connect(qtbot, window, tserve_server.base_url, model="no-such-model", test=False)
    assert "'no-such-model' is not served" in err.args[0].message
    assert "no-such-model" in window.engine_panel.picker.status.text()

    # the app keeps working: back to local, a message is answered
    qtbot.mouseClick(_picker_button(window, "use_local_engine_button"), Qt.MouseButton.LeftButton)
    ok = ask(qtbot, window, PROMPT, max_tokens=4)
    assert ok.error is None and ok.reason is ev.FinishReason.LENGTH


def test_launch_profile_starts_shows_log_and_a_dying_server_keeps_the_partial_answer(
        qtbot, window, served_model_dir):
    exe = Path(sys.executable).parent / "transformers"
    command = shlex.join([str(exe), "serve", str(served_model_dir), "--host", "{host}", "--port", "{port}",
                          "--device", "cpu"])
    qtbot.mouseClick(_picker_button(window, "launch_profile_button"), Qt.MouseButton.LeftButton)
    dialog = window.engine_panel.picker.profile_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.keyClicks(dialog.findChild(QLineEdit, "profile_name_input"), "tserve-profile")
    dialog.findChild(QPlainTextEdit, "profile_command_input").setPlainText(command)
    dialog.findChild(QPlainTextEdit, "profile_env_input").setPlainText("HF_HUB_OFFLINE=1\n# a comment")
    qtbot.keyClicks(dialog.findChild(QLineEdit, "profile_model_input"), str(served_model_dir))
    health = dialog.findChild(QLabel, "profile_health_status")
    with qtbot.waitSignal(window.bridge.remote_connected, timeout=120_000):
        qtbot.mouseClick(dialog.findChild(QPushButton, "profile_start_button"), Qt.MouseButton.LeftButton)
        assert health.text().startswith("starting tserve-profile")
    assert health.text().startswith("healthy:")
    backend = dialog.backend
    assert backend.server.running
    qtbot.waitUntil(lambda: dialog.findChild(QPlainTextEdit, "profile_log_view").toPlainText() != "",
                    timeout=5000)

    send_prompt(qtbot, window, PROMPT, max_tokens=200)  # this model's greedy answer has no EOS
    first_tokens(qtbot, window)
    backend.server.kill()  # the server dies mid-answer
    finished = wait_answer(qtbot, window)
    answer = window.chat.message_views[-1]
    assert finished.reason is ev.FinishReason.ERROR and finished.text
    assert answer.text == finished.text  # what was said is kept …
    assert "answer interrupted" in answer.error_label.text()  # … and marked as interrupted
    qtbot.waitUntil(lambda: health.text().startswith("failed: the server exited"), timeout=5000)

    qtbot.mouseClick(dialog.findChild(QPushButton, "profile_stop_button"), Qt.MouseButton.LeftButton)
    assert not window.bridge.is_remote and health.text() == "stopped"
    ok = ask(qtbot, window, PROMPT, max_tokens=4)  # the local engine answers again
    assert ok.error is None


def test_dashboard_shows_vllm_batch_queue_kv_and_acceptance_live(qtbot, window, vllm_server):
    dashboard = DashboardView(window.bridge)
    window.add_tab(dashboard, "Dashboard")
    window.tabs.setCurrentIndex(window.tabs.count() - 1)
    strip = dashboard.server_metrics
    assert not strip.isVisible()  # the local engine: no server strip
    accepted0 = independent_counter(vllm_server.root_url, "vllm:spec_decode_num_accepted_tokens_total")
    drafted0 = independent_counter(vllm_server.root_url, "vllm:spec_decode_num_draft_tokens_total")

    with qtbot.waitSignal(window.bridge.server_metrics_sampled, timeout=CONNECT_MS):
        _connect(qtbot, window, vllm_server.base_url, key=API_KEY, model=SERVED)
    assert strip.isVisible() and "vLLM" in _label(strip, "server_metrics_title")
    assert _label(strip, "server_running_value") == "0" and _label(strip, "server_waiting_value") == "0"
    assert _label(strip, "server_kv_value").endswith("%")
    panel_reason = window.engine_panel.spec_combo.toolTip()
    assert panel_reason == "vLLM: set by launch flags — use a launch profile"

    running_seen = [0.0]
    window.bridge.server_metrics_sampled.connect(
        lambda e: running_seen.append(e.snapshot.num_requests_running))
    finished = ask(qtbot, window, PROMPT, max_tokens=48)
    assert finished.error is None
    accepted1 = independent_counter(vllm_server.root_url, "vllm:spec_decode_num_accepted_tokens_total")
    drafted1 = independent_counter(vllm_server.root_url, "vllm:spec_decode_num_draft_tokens_total")
    assert drafted1 > drafted0  # n-gram speculation drafted for this answer
    # a scrape after the answer: the strip's since-connect acceptance equals the counters' deltas
    qtbot.waitUntil(lambda: window.bridge.server_snapshot.snapshot.num_draft_tokens == drafted1,
                    timeout=CONNECT_MS)
    qtbot.waitUntil(lambda: _label(strip, "server_acceptance_detail") ==
                    f"{(accepted1 - accepted0) / (drafted1 - drafted0) * 100:.0f} % since connect", timeout=5000)
    latest = window.bridge.server_snapshot.snapshot
    assert _label(strip, "server_running_value") == f"{latest.num_requests_running:.0f}"  # follows each scrape
    steps = dashboard.model.steps  # the charts read the server's steps: batch and queue known, memory unknown
    batch = steps.column("batch_size")
    assert len(steps) > 0 and set(batch.tolist()) <= set(running_seen) | {0.0}
    assert all(math.isnan(x) for x in steps.column("kv_cache_bytes"))


def test_compare_races_the_local_engine_against_a_server_and_a_launch_profile(
        qtbot, tiny_llama_dir, tserve_server, served_model_dir):
    from ui.compare_bridge import CompareBridge
    from ui.compare_view import CompareView

    bridge = CompareBridge()
    view = CompareView(bridge, str(tiny_llama_dir))
    qtbot.addWidget(view)
    try:
        while len(view.panels) < 3:
            view.add_column()
        view.prompt_edit.setPlainText(PROMPT)
        view.max_tokens_spin.setValue(30)
        view.warmup_check.setChecked(False)
        view.mode_combo.setCurrentIndex(view.mode_combo.findData("race"))
        view.chat_check.setChecked(True)  # a conversation: the server applies its chat template
        server_col, profile_col = view.panels[1], view.panels[2]

        # column 2: a server, chosen in its Connect dialog
        server_col.backend_button.menu().actions()[0].trigger()
        dialog = server_col.findChild(QDialog, "connect_server_dialog")
        _type(qtbot, dialog.findChild(QLineEdit, "remote_url_input"), tserve_server.base_url)
        dialog.findChild(QComboBox, "remote_model_combo").setEditText(tserve_server.profile.model)
        qtbot.mouseClick(dialog.findChild(QPushButton, "remote_connect_button"), Qt.MouseButton.LeftButton)
        assert server_col.remote is not None and not server_col.preset_combo.isVisibleTo(server_col)
        assert server_col.config_label.text().startswith(f"remote {tserve_server.base_url}")

        # column 3: a launch profile (transformers serve), edited in the profile dialog
        profile_col.backend_button.menu().actions()[1].trigger()
        pdialog = profile_col.findChild(QDialog, "launch_profile_dialog")
        exe = Path(sys.executable).parent / "transformers"
        qtbot.keyClicks(pdialog.findChild(QLineEdit, "profile_name_input"), "tserve-flags")
        pdialog.findChild(QPlainTextEdit, "profile_command_input").setPlainText(shlex.join(
            [str(exe), "serve", str(served_model_dir), "--host", "{host}", "--port", "{port}", "--device", "cpu"]))
        pdialog.findChild(QPlainTextEdit, "profile_env_input").setPlainText("HF_HUB_OFFLINE=1")
        qtbot.keyClicks(pdialog.findChild(QLineEdit, "profile_model_input"), str(served_model_dir))
        qtbot.mouseClick(pdialog.findChild(QPushButton, "profile_start_button"), Qt.MouseButton.LeftButton)
        assert profile_col.remote is not None and profile_col.remote.name == "tserve-flags"

        with qtbot.waitSignal(bridge.comparison_finished, timeout=120_000):
            comp = view.run()
        profile_backend = bridge._engines[2]
        assert comp.finished and not comp.cancelled, view.status.text()
        local, served, profiled = (c.runs[0] for c in comp.columns)
        client = openai.OpenAI(base_url=tserve_server.base_url, api_key="EMPTY", max_retries=0)
        ref = client.chat.completions.create(model=tserve_server.profile.model,
                                             messages=[{"role": "user", "content": PROMPT}], max_tokens=30,
                                             temperature=0)
        assert local.error is None and local.peak_kv_bytes is not None  # measured locally
        assert served.error is None and served.text == ref.choices[0].message.content
        assert profiled.text == served.text  # the same model behind both servers, greedy
        assert served.peak_kv_bytes is None and served.memory_bytes is None  # a server's: unknown, never 0
        assert view.panels[1].value_labels["kv"].text() == MISSING
        assert comp.columns[2].spec.label.startswith("profile tserve-flags: ")
        assert comp.to_dict({})["columns"][1]["config"] is None  # no local EngineConfig for a server column
    finally:
        assert bridge.shutdown(10.0)
    assert profile_backend.server.process.poll() is not None  # the profile's server stopped with Compare
