"""ui/chat_view.py with a real engine on a tiny model: streaming, stop, regenerate, edit, colouring."""

from __future__ import annotations

import json
import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QPushButton

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
    qtbot.waitUntil(lambda: not chat.rendering, timeout=5000)
    html = answer.body.toHtml()
    assert theme.draft_token in html and theme.target_token in html
    assert answer.body.toPlainText() == "as dreams are"
    runs = chat._store.messages(chat.conversation_id)[-1].metrics["origin_runs"]
    assert runs == [["as", "draft"], [" dreams", "target"], [" are", "draft"]]

    window.colour_action.trigger()  # the View menu toggles it back
    assert not chat.colour_toggle.isChecked() and not chat.legend.isVisible()
    qtbot.waitUntil(lambda: not chat.rendering, timeout=5000)
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
    box = chat.conversations.findChild(QMessageBox, "delete_conversation_dialog")
    assert box is not None and box.isVisible() and "Renamed" in box.informativeText()
    box.findChild(QPushButton, "cancel_delete_button").click()  # a real confirmation: Cancel keeps it
    assert "Renamed" in chat.conversations.titles()
    qtbot.mouseClick(delete, Qt.MouseButton.LeftButton)
    box = chat.conversations.delete_dialog
    box.findChild(QPushButton, "confirm_delete_button").click()
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


# ---------------------------------------------------------------- issue 15: what a user hit

def _small_context_model(src, dst, context: int):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["max_position_embeddings"] = context
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_a_history_longer_than_the_context_drops_the_oldest_turns_and_says_so(
        qtbot, make_window, tiny_llama_dir, tmp_path):
    model = _small_context_model(tiny_llama_dir, tmp_path / "ctx-160", 160)
    window = make_window(str(model))
    chat = window.chat
    chat.settings.set_system_prompt("you are hamlet")
    long_turn = "the quality of mercy is not strained " * 5  # ~40 tokens of a 160-token context
    answers = [ask(qtbot, window, f"{i}: {long_turn}", max_tokens=8) for i in range(5)]
    assert all(a.reason is not ev.FinishReason.ERROR for a in answers), [a.error for a in answers]
    last = chat.message_views[-1]
    assert "earliest message" in last.footer.text() and "160-token context" in last.footer.text()
    stored = chat._store.messages(chat.conversation_id)
    assert len(stored) == 10, "nothing is deleted from the conversation itself"
    assert answers[-1].stats.prompt_tokens < 160


def test_an_answer_that_fills_the_context_says_context_full(qtbot, make_window, tiny_llama_dir, tmp_path):
    model = _small_context_model(tiny_llama_dir, tmp_path / "ctx-48", 48)
    window = make_window(str(model))
    chat = window.chat
    chat.settings.stops.setText("")
    finished = ask(qtbot, window, "speak", max_tokens=2000)
    if finished.reason is ev.FinishReason.STOP:
        pytest.skip("the tiny model said EOS before the context filled")
    assert finished.reason is ev.FinishReason.LENGTH
    assert finished.stats.completion_tokens < 2000
    footer = chat.message_views[-1].footer.text()
    assert "context full" in footer and "hit max tokens" not in footer


def test_generation_settings_survive_requantising_and_a_restart(qtbot, make_window):
    from engine.config import Quantisation

    window = make_window()
    s = window.chat.settings
    s.set_expanded(True)
    s.max_tokens.clear()
    qtbot.keyClicks(s.max_tokens, "2000")
    qtbot.keyClick(s.max_tokens, Qt.Key.Key_Return)
    s.stops.clear()
    qtbot.keyClicks(s.stops, "END")
    assert s.max_tokens.value() == 2000 and s.stops.text() == "END"
    panel = window.engine_panel
    with qtbot.waitSignal(window.bridge.config_applied, timeout=60_000):
        panel.quant_combo.setCurrentIndex(panel.quant_combo.findData(Quantisation.BF16))
    assert (s.max_tokens.value(), s.stops.text()) == (2000, "END"), "requantising kept them"
    assert s.sampling_params().max_new_tokens == 2000
    make_window.close(window)

    again = make_window()
    s2 = again.chat.settings
    assert (s2.max_tokens.value(), s2.stops.text()) == (2000, "END"), "restored at the next start"
    qtbot.mouseClick(s2.reset_button, Qt.MouseButton.LeftButton)  # model defaults are one click away
    assert s2.max_tokens.value() == s2.defaults.max_new_tokens


def test_regenerate_answers_an_unanswered_last_question(qtbot, make_window):
    window = make_window()
    store = window.chat._store
    conv = store.create_conversation("left hanging")
    store.add_message(conv.id, "user", "is anyone there")
    window.chat._refresh_list()
    window.chat.select_conversation(conv.id)
    [question] = window.chat.message_views
    qtbot.waitUntil(question._regen.isVisible, timeout=5000)
    assert question._regen.text() == "Answer"
    with qtbot.waitSignal(window.chat.generation_finished, timeout=60_000) as done:
        window.regenerate_action.trigger()  # Ctrl+R
    assert done.args[0].stats.completion_tokens > 0
    assert [m.role for m in store.messages(conv.id)] == ["user", "assistant"]


def test_an_answer_under_two_configurations_lists_both_in_the_footer(qtbot, window):
    chat = window.chat
    rid = send_prompt(qtbot, window, "we are such stuff", max_tokens=2)
    stats = RequestStats(prompt_tokens=5, completion_tokens=120, cached_prompt_tokens=0, submitted_s=0.0,
                         first_token_s=0.1, finished_s=0.3, ttft_s=0.1, e2e_s=0.3, tpot_s=0.1, itl_s=(0.2,),
                         tokens_per_s=10.0, prefill_tokens_per_s=None)
    spans = (ev.ConfigSpan(0, "kv on · batch 8 · none · spec off"),
             ev.ConfigSpan(41, "kv off · batch 8 · nf4 · spec off"))
    with qtbot.waitSignal(chat.generation_finished, timeout=30_000):
        window.bridge.request_finished.emit(ev.RequestFinished(
            request_id=rid, reason=ev.FinishReason.STOP, text="as dreams are made on", token_ids=(1,),
            stats=stats, config_label=spans[-1].label, config_spans=spans))
    footer = chat.message_views[-1].config_footer.text()
    assert "tokens 0–40: kv on, none · 41–119: kv off, nf4" in footer
    stored = chat._store.messages(chat.conversation_id)[-1]
    assert stored.config["spans"] == [[0, spans[0].label], [41, spans[1].label]]


def test_long_titles_elide_and_the_list_never_scrolls_sideways(qtbot, window):
    chat = window.chat
    title = "a very long question about " + "the lineage of the kings of Denmark " * 6
    ask(qtbot, window, title, max_tokens=2)
    window.resize(1100, 700)
    qtbot.waitUntil(lambda: chat.title.width() < 900, timeout=5000)
    assert chat.title.text().endswith("…") and chat.title.full_text() == title[:48].strip()
    assert chat.title.fontMetrics().horizontalAdvance(chat.title.text()) <= chat.title.width()
    listed = chat.conversations.list
    assert listed.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
    assert not listed.horizontalScrollBar().isVisible()
    assert listed.item(0).toolTip().startswith(title[:48].strip())


@pytest.mark.parametrize("size", [(1280, 720), (1100, 700)])
def test_send_and_the_colour_toggle_are_on_screen_at_small_sizes(qtbot, window, size):
    window.resize(*size)
    qtbot.waitUntil(lambda: window.width() == size[0] and window.height() == size[1], timeout=5000)
    chat = window.chat
    chat.settings.set_expanded(True)
    qtbot.waitUntil(chat.settings.body.isVisible, timeout=5000)
    from PySide6.QtWidgets import QApplication, QScrollArea

    QApplication.processEvents()  # let the layouts take the expanded settings in

    tab = window.findChild(QScrollArea, "chat_view_scroll")
    assert chat.minimumSizeHint().width() <= tab.viewport().width(), f"the chat needs more width than {size} gives"
    panel = window.engine_panel
    assert panel.widget().minimumSizeHint().width() <= panel.viewport().width(), "the engine panel is too wide"
    win = window.rect()
    for w in (chat.composer.send_button, chat.composer.stop_button, chat.colour_toggle, chat.composer.input):
        qtbot.waitUntil(w.isVisible, timeout=5000)
        top_left = w.mapTo(window, w.rect().topLeft())
        bottom_right = w.mapTo(window, w.rect().bottomRight())
        assert win.contains(top_left) and win.contains(bottom_right), f"{w.objectName()} off-screen at {size}"
        assert w.visibleRegion().boundingRect().size() == w.size(), f"{w.objectName()} cut at {size}"
    for area in (tab, panel):
        assert not area.horizontalScrollBar().isVisible(), f"{area.objectName()} scrolls sideways at {size}"


def test_a_message_the_engine_cannot_take_is_an_inline_error(qtbot, window):
    window.bridge.shutdown()  # e.g. the engine is gone while the window is still up
    chat = window.chat
    qtbot.keyClicks(chat.composer.input, "anyone?")
    qtbot.keyClick(chat.composer.input, Qt.Key.Key_Return)
    answer = chat.message_views[-1]
    assert answer.role == "assistant" and "not sent" in answer.error_label.text()
    assert not chat.is_generating and chat.composer.send_button.isEnabled()
    assert [m.role for m in chat._store.messages(chat.conversation_id)] == ["user"]
