"""ui/chat_view.py with a real engine on a tiny model: streaming, stop, regenerate, edit, colouring."""

from __future__ import annotations

import json
import shutil

import pytest
from PySide6.QtCore import Qt

from engine import events as ev
from engine.metrics import RequestStats, SpecStats
from tests.helpers.windows import (
    QT_LOG_IGNORE,
    ask,
    first_tokens,
    send_prompt,
    wait_answer,
)

pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)


def test_send_streams_the_answer_and_the_footer_shows_metrics(qtbot, window):
    chat = window.chat
    seen = []  # (still generating?, characters shown) after each token event reached the view
    window.bridge.tokens_received.connect(
        lambda e: seen.append((chat.is_generating, len(chat.message_views[-1].text))))

    rid = send_prompt(qtbot, window, "to be or not to be", max_tokens=32)
    assert chat.composer.input.toPlainText() == ""  # Enter sent and cleared it
    assert not chat.composer.send_button.isEnabled() and chat.composer.stop_button.isEnabled()
    finished = wait_answer(qtbot, window)

    assert finished.request_id == rid
    assert finished.reason in (ev.FinishReason.LENGTH, ev.FinishReason.STOP)
    user, answer = chat.message_views
    assert (user.role, user.text) == ("user", "to be or not to be")
    assert answer.role == "assistant" and answer.text == finished.text and finished.stats.completion_tokens > 0
    streaming = [n for generating, n in seen if generating]
    assert len(streaming) >= 2 and streaming == sorted(streaming), "the answer grew token by token"
    assert answer.body.toPlainText().split() == finished.text.split()

    figures = answer.footer.text()
    assert f"{finished.stats.completion_tokens} tokens" in figures
    assert "tok/s" in figures and "TTFT" in figures
    config = answer.config_footer.text()
    assert finished.config_label in config and "greedy" in config
    assert window.bridge.model_info.name_or_path.rstrip("/").split("/")[-1] in config
    assert chat.composer.send_button.isEnabled() and not chat.composer.stop_button.isEnabled()
    assert chat.title.text() == "to be or not to be"


def test_shift_enter_adds_a_newline_instead_of_sending(qtbot, window):
    box = window.chat.composer.input
    qtbot.keyClicks(box, "first line")
    qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(box, "second")
    assert box.toPlainText() == "first line\nsecond"
    assert window.chat.message_views == []


def test_stop_ends_the_answer_early_and_keeps_what_was_said(qtbot, window):
    chat = window.chat
    send_prompt(qtbot, window, "friends romans countrymen", max_tokens=4000)
    first_tokens(qtbot, window)
    with qtbot.waitSignal(chat.generation_finished, timeout=30_000) as done:
        qtbot.mouseClick(chat.composer.stop_button, Qt.MouseButton.LeftButton)
    finished = done.args[0]
    assert finished.reason is ev.FinishReason.CANCELLED
    assert 0 < finished.stats.completion_tokens < 500
    answer = chat.message_views[-1]
    assert "stopped" in answer.footer.text()
    [_, stored] = window.chat._store.messages(chat.conversation_id)
    assert stored.content == finished.text and stored.metrics["reason"] == "cancelled"
    assert chat.composer.send_button.isEnabled()


def test_escape_is_the_stop_shortcut(qtbot, window):
    assert window.stop_action.shortcut().toString() == "Esc"
    send_prompt(qtbot, window, "a horse a horse", max_tokens=4000)
    first_tokens(qtbot, window)
    with qtbot.waitSignal(window.chat.generation_finished, timeout=30_000) as done:
        window.stop_action.trigger()
    assert done.args[0].reason is ev.FinishReason.CANCELLED


def test_regenerate_replaces_the_last_answer(qtbot, window):
    chat = window.chat
    first = ask(qtbot, window, "now is the winter", max_tokens=12)
    regen = chat.message_views[-1]._regen
    assert regen.isVisible()
    with qtbot.waitSignal(chat.generation_finished, timeout=60_000) as again:
        qtbot.mouseClick(regen, Qt.MouseButton.LeftButton)
    assert again.args[0].text == first.text  # greedy: the same answer again
    stored = chat._store.messages(chat.conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert len(chat.message_views) == 2


def test_edit_and_resend_drops_the_later_messages(qtbot, window):
    chat = window.chat
    ask(qtbot, window, "first question", max_tokens=8)
    ask(qtbot, window, "second question", max_tokens=8)
    first_user = chat.message_views[0]
    first_user.begin_edit()
    first_user._editor.setPlainText("edited question")
    with qtbot.waitSignal(chat.generation_finished, timeout=60_000):
        qtbot.mouseClick(first_user._save, Qt.MouseButton.LeftButton)
    stored = chat._store.messages(chat.conversation_id)
    assert (stored[0].role, stored[0].content) == ("user", "edited question")
    assert [m.role for m in stored] == ["user", "assistant"]
    assert [v.role for v in chat.message_views] == ["user", "assistant"]


def test_tokens_are_coloured_by_origin_with_a_legend(qtbot, window):
    """Feed the view a speculative answer through the bridge's signals (synthetic events)."""
    chat = window.chat
    rid = send_prompt(qtbot, window, "we are such stuff", max_tokens=2)
    bridge = window.bridge
    draft, target = ev.TokenOrigin.DRAFT, ev.TokenOrigin.TARGET
    bridge.tokens_received.emit(ev.TokensGenerated(
        request_id=rid, text="as dreams", token_ids=(1, 2), origins=(draft, target), token_texts=("as", " dreams")))
    bridge.tokens_received.emit(ev.TokensGenerated(
        request_id=rid, text=" are", token_ids=(3,), origins=(draft,), token_texts=(" are",)))
    stats = RequestStats(prompt_tokens=5, completion_tokens=3, cached_prompt_tokens=0, submitted_s=0.0,
                         first_token_s=0.1, finished_s=0.3, ttft_s=0.1, e2e_s=0.3, tpot_s=0.1, itl_s=(0.2,),
                         tokens_per_s=10.0, prefill_tokens_per_s=None,
                         spec=SpecStats(num_drafts=2, num_draft_tokens=4, num_accepted_tokens=2))
    with qtbot.waitSignal(chat.generation_finished, timeout=5000):
        bridge.request_finished.emit(ev.RequestFinished(
            request_id=rid, reason=ev.FinishReason.STOP, text="as dreams are", token_ids=(1, 2, 3), stats=stats,
            config_label="kv on · batch 8 · none · spec draft k=4"))
    answer = chat.message_views[-1]
    theme = window.themes.theme
    assert answer.text == "as dreams are"
    assert "acceptance 50%" in answer.footer.text()
    assert "spec draft k=4" in answer.config_footer.text()
    assert not chat.legend.isVisible()
    assert theme.draft_token not in answer.body.toHtml()

    qtbot.mouseClick(chat.colour_toggle, Qt.MouseButton.LeftButton)
    assert chat.colour_toggle.isChecked() and chat.legend.isVisible() and window.colour_action.isChecked()
    html = answer.body.toHtml()
    assert theme.draft_token in html and theme.target_token in html
    assert answer.body.toPlainText() == "as dreams are"
    runs = chat._store.messages(chat.conversation_id)[-1].metrics["origin_runs"]
    assert runs == [["as", "draft"], [" dreams", "target"], [" are", "draft"]]

    window.colour_action.trigger()  # the View menu toggles it back
    assert not chat.colour_toggle.isChecked() and not chat.legend.isVisible()
    assert theme.draft_token not in answer.body.toHtml()


def test_conversation_list_new_rename_search_delete(qtbot, window):
    chat = window.chat
    ask(qtbot, window, "alpha question", max_tokens=4)
    first_id = chat.conversation_id
    window.new_chat_action.trigger()
    assert chat.conversation_id is None and chat.message_views == []
    ask(qtbot, window, "beta question", max_tokens=4)
    assert chat.conversations.titles() == ["beta question", "alpha question"]

    chat.rename_conversation(first_id, "Renamed")
    assert "Renamed" in chat.conversations.titles()
    qtbot.keyClicks(chat.conversations.search, "beta")
    assert chat.conversations.titles() == ["beta question"]
    chat.conversations.search.clear()

    chat.select_conversation(first_id)
    assert chat.title.text() == "Renamed"
    assert chat.message_views[0].text == "alpha question"
    delete = chat.conversations.delete_button
    qtbot.mouseClick(delete, Qt.MouseButton.LeftButton)
    assert delete.text() == "Confirm?" and "Renamed" in chat.conversations.titles()
    qtbot.mouseClick(delete, Qt.MouseButton.LeftButton)
    assert chat.conversations.titles() == ["beta question"]
    assert chat.conversation_id is None


def test_sampling_defaults_come_from_generation_config(qtbot, make_window, tiny_llama_dir, tmp_path):
    model = tmp_path / "model-with-defaults"
    shutil.copytree(tiny_llama_dir, model)
    (model / "generation_config.json").write_text(json.dumps({
        "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 77,
        "stop_strings": ["\n\n"]}))
    window = make_window(str(model))
    s = window.chat.settings
    assert (s.temperature.value(), s.top_k.value(), s.top_p.value(), s.max_tokens.value()) == (0.7, 20, 0.9, 77)
    assert s.stops.text() == "\\n\\n"
    params = s.sampling_params()
    assert params.stop == ("\n\n",) and params.temperature == 0.7


def test_no_model_answer_is_an_inline_error_not_a_crash(qtbot, make_window):
    window = make_window(None, wait_loaded=False)
    assert "No model loaded" in window.chat.empty_label.text()
    finished = ask(qtbot, window, "hello?", max_tokens=4)
    assert finished.reason is ev.FinishReason.ERROR
    answer = window.chat.message_views[-1]
    assert answer.error_label.isVisible() and "no model" in answer.error_label.text().lower()
    # nothing half-made is stored: only the question
    assert [m.role for m in window.chat._store.messages(window.chat.conversation_id)] == ["user"]
