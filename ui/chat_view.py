"""Chat: conversations, a streaming transcript, generation settings and the composer.

The view talks to the engine only through the bridge and keeps conversations in a store
(app.storage.ConversationStore or anything with the same methods), injected by the caller.

An answer is written to the store while it streams (every PERSIST_INTERVAL_MS, one
transaction each, state 'streaming'), so a hard kill loses at most that much; the app marks
such answers 'interrupted' at the next start. A history longer than the model's context is
sent without its oldest messages (the footer says how many), the system prompt always kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine import events as ev
from engine.config import GenerateRequest
from ui.chat_history import DEFAULT_CHARS_PER_TOKEN, fit_history, learn_chars_per_token
from ui.composer import ComposerView
from ui.conversation_list import ConversationListView
from ui.formatting import (
    metrics_from_finished,
    origin_runs,
    sampling_label,
)
from ui.message_widget import MessageView
from ui.model_names import ModelNames
from ui.sampling_panel import SamplingSettingsView, model_context_length, model_defaults
from ui.theme import LIGHT, Theme
from ui.transcript import TranscriptView
from ui.widgets import ElidedLabel, label, named

RENDER_INTERVAL_MS = 40  # re-render a streaming answer at most ~25 times a second
RENDER_SHARE = 0.2  # ...and spend at most this share of the GUI thread on it (long answers)
MAX_RENDER_INTERVAL_MS = 1000
PERSIST_INTERVAL_MS = 1000  # write the streaming answer this often (one transaction each)
RENDER_TURN_BUDGET_S = 0.025  # rendering a whole conversation: at most this per event-loop turn
TITLE_CHARS = 48
REQUEST_TAG = "chat"
STATE_STREAMING, STATE_INTERRUPTED, STATE_DONE = "streaming", "interrupted", "done"


@dataclass
class _Pending:
    request_id: str
    conversation_id: int
    view: MessageView | None
    text: str = ""
    runs: list = field(default_factory=list)
    messages: tuple = ()  # what was sent (after fitting to the context)
    dropped: int = 0  # earliest messages left out to fit
    message_id: int | None = None  # the stored row while it streams
    saved_text: str = ""


class ChatView(QWidget):
    generation_started = Signal(str)  # request id
    generation_finished = Signal(object)  # ev.RequestFinished of a chat request
    answer_saved = Signal(int, str)  # message id, text stored so far (while streaming)

    def __init__(self, bridge, store, theme: Theme = LIGHT, parent=None, *, settings=None,
                 model_names: ModelNames | None = None) -> None:
        super().__init__(parent)
        named(self, "chat_view", "Chat")
        self._bridge = bridge
        self._store = store
        self._theme = theme
        self._settings = settings  # ui.settings_store.WorkbenchSettings: sampling fields persist
        self._names = model_names or ModelNames()
        self._conversation_id: int | None = None
        self._pending: _Pending | None = None
        self._last_sampling = ""
        self._sampling_model: str | None = None  # the model the sampling fields are set for
        self._chars_per_token: float | None = None  # learnt from the engine's prompt token counts

        self.conversations = ConversationListView()
        self.title = named(ElidedLabel("New chat"), "chat_title", "Conversation title")
        self.title.setProperty("role", "title")
        self.colour_toggle = named(QCheckBox("Colour tokens by origin"), "colour_tokens_toggle",
                                   "Colour tokens by origin")
        self.colour_toggle.setToolTip("Shade each token by who produced it: accepted from the draft "
                                      "model, or the target model itself")
        self.legend = named(QWidget(), "token_legend", "Token colour legend")
        legend_row = QHBoxLayout(self.legend)
        legend_row.setContentsMargins(0, 0, 0, 0)
        legend_row.setSpacing(6)
        legend_row.addWidget(label("draft (accepted)", "legend_draft", "Accepted from the draft", role="legend_draft"))
        legend_row.addWidget(label("target", "legend_target", "Produced by the target", role="legend_target"))
        self.legend.hide()
        self.colour_toggle.toggled.connect(self.set_colour_tokens)

        self.transcript = TranscriptView()
        self.empty_label = self.transcript.empty_label

        self.settings = SamplingSettingsView()
        self.composer = ComposerView()

        header = named(QFrame(), "chat_header", "Chat header")
        header.setProperty("role", "chat_header")
        head = QHBoxLayout(header)
        head.setContentsMargins(20, 10, 16, 10)
        head.addWidget(self.title, 1)
        head.addWidget(self.legend)
        head.addWidget(self.colour_toggle)
        right = named(QWidget(), "chat_column", "Conversation")
        col = QVBoxLayout(right)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(header)
        col.addWidget(self.transcript, 1)
        col.addWidget(self.settings)
        col.addWidget(self.composer)
        self.splitter = named(QSplitter(Qt.Orientation.Horizontal), "chat_splitter", "Chat layout")
        self.splitter.addWidget(self.conversations)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([230, 800])
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setHandleWidth(1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.splitter)

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_pending)
        self._render_queue: list[MessageView] = []  # views owed a render, drawn newest first
        self.last_drain_s = 0.0
        self._drain_timer = QTimer(self)
        self._drain_timer.setSingleShot(True)
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._drain_render_queue)
        self._persist_timer = QTimer(self)
        self._persist_timer.setInterval(PERSIST_INTERVAL_MS)
        self._persist_timer.timeout.connect(self._persist_partial)

        self.conversations.conversation_selected.connect(self.select_conversation)
        self.conversations.new_requested.connect(self.new_conversation)
        self.conversations.rename_requested.connect(self.rename_conversation)
        self.conversations.delete_requested.connect(self.delete_conversation)
        self.conversations.search_changed.connect(lambda _text: self._refresh_list())
        self.composer.send_requested.connect(self.send)
        self.composer.stop_requested.connect(self.stop)
        self.settings.system_prompt_edited.connect(self._on_system_prompt_edited)
        self.settings.values_changed.connect(self._on_sampling_edited)
        bridge.tokens_received.connect(self._on_tokens_received)
        bridge.request_finished.connect(self._on_request_finished)
        bridge.model_loaded.connect(self._on_model_loaded)
        if bridge.model_info is not None:
            self._on_model_loaded(bridge.model_info)
        self._refresh_list()
        self._update_empty_state()

    # ------------------------------------------------------------------ public API
    @property
    def conversation_id(self) -> int | None:
        return self._conversation_id

    @property
    def is_generating(self) -> bool:
        return self._pending is not None

    @property
    def message_views(self) -> list[MessageView]:
        return list(self.transcript.views)

    @property
    def _views(self) -> list[MessageView]:
        return self.transcript.views

    def focus_input(self) -> None:
        self.composer.input.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def new_conversation(self) -> None:
        """A blank chat; it is stored when its first message is sent."""
        self._save_system_prompt()
        self._conversation_id = None
        self._show_conversation()
        self.focus_input()

    def select_conversation(self, conversation_id: int) -> None:
        if conversation_id == self._conversation_id:
            return
        self._save_system_prompt()
        self._conversation_id = conversation_id
        conv = self._store.conversation(conversation_id)
        if conv is not None:
            self.settings.set_system_prompt(conv.system_prompt)
        self._show_conversation()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._store.rename_conversation(conversation_id, title)
        if conversation_id == self._conversation_id:
            self.title.setText(title)
        self._refresh_list()

    def delete_conversation(self, conversation_id: int) -> None:
        if self._pending is not None and self._pending.conversation_id == conversation_id:
            self.stop()
        self._store.delete_conversation(conversation_id)
        if conversation_id == self._conversation_id:
            self._conversation_id = None
            self._show_conversation()
        self._refresh_list()

    def send(self, text: str) -> str | None:
        """Store the user's message and ask the engine for an answer; returns the request id."""
        text = text.strip()
        if not text or self._pending is not None:
            return None
        if self._conversation_id is None:
            title = text.splitlines()[0][:TITLE_CHARS].strip() or "New chat"
            conv = self._store.create_conversation(title, self.settings.system_prompt_text())
            self._conversation_id = conv.id
            self.title.setText(conv.title)
        else:
            self._save_system_prompt()
        msg = self._store.add_message(self._conversation_id, "user", text)
        self._add_view(MessageView("user", text, message_id=msg.id, theme=self._theme))
        self._refresh_list()
        return self._submit()

    def stop(self) -> None:
        if self._pending is not None:
            self._bridge.abort(self._pending.request_id)

    def regenerate(self) -> str | None:
        """Drop the last answer and ask again; a last question left unanswered (an answer that
        failed, or the app closed first) is simply answered."""
        if self._pending is not None or self._conversation_id is None or not self._views:
            return None
        last = self._views[-1]
        if last.role == "user":
            return self._submit()
        if last.role != "assistant":
            return None
        if last.message_id is not None:
            self._store.delete_messages_from(self._conversation_id, last.message_id)
        self._remove_views_from(len(self._views) - 1)
        return self._submit()

    def edit_and_resend(self, message_id: int, text: str) -> str | None:
        """Replace a user message (and everything after it) with new text, then answer again."""
        if self._conversation_id is None:
            return None
        if self._pending is not None:
            self.stop()
            self._pending = None
            self.composer.set_generating(False)
        index = next((i for i, v in enumerate(self._views) if v.message_id == message_id), None)
        self._store.delete_messages_from(self._conversation_id, message_id)
        if index is not None:
            self._remove_views_from(index)
        return self.send(text)

    def set_theme(self, theme: Theme) -> None:
        self._theme = theme
        for v in self._views:
            v.set_theme(theme, render_now=False)
            self._queue_render(v)

    def set_colour_tokens(self, on: bool) -> None:
        if self.colour_toggle.isChecked() != on:
            self.colour_toggle.setChecked(on)
            return
        self.legend.setVisible(on)
        for v in self._views:
            if v.set_colour_tokens(on, render_now=False):
                self._queue_render(v)

    @property
    def rendering(self) -> bool:
        """Views of the conversation still owed a render (spread over event-loop turns)."""
        return bool(self._render_queue)

    def _queue_render(self, view: MessageView) -> None:
        if view not in self._render_queue:
            self._render_queue.append(view)
        if not self._drain_timer.isActive():
            self._drain_timer.start()

    def _drain_render_queue(self) -> None:
        """Render owed views, newest first, until this turn's budget is spent; then yield."""
        started = time.perf_counter()
        while self._render_queue and time.perf_counter() - started < RENDER_TURN_BUDGET_S:
            view = self._render_queue.pop()
            view.render()
        self.last_drain_s = time.perf_counter() - started
        if self._render_queue:
            self._drain_timer.start()

    # ------------------------------------------------------------------ engine events
    def _on_tokens_received(self, event: ev.TokensGenerated) -> None:
        p = self._pending
        if p is None or event.request_id != p.request_id:
            return
        p.text += event.text
        for piece, origin in zip(event.token_texts, event.origins):
            if piece:
                p.runs.append((piece, origin.value))
        if p.view is not None:
            p.view.append(event.text, event.token_texts, event.origins)
            if not self._render_timer.isActive():
                self._render_timer.start()

    def _on_request_finished(self, event: ev.RequestFinished) -> None:
        p = self._pending
        if p is None or event.request_id != p.request_id:
            return
        self._pending = None
        self._render_timer.stop()
        self._persist_timer.stop()
        self.composer.set_generating(False)
        metrics = metrics_from_finished(event)
        info = self._bridge.model_info
        ctx = model_context_length(info) if info is not None else None
        s = event.stats
        if (ctx and event.reason is ev.FinishReason.LENGTH
                and s.prompt_tokens + s.completion_tokens >= ctx - 1):
            metrics["context_full"] = True  # the context ran out, not the max-tokens setting
        if p.dropped:
            metrics["dropped_messages"] = p.dropped
            metrics["context_tokens"] = ctx
        if s.prompt_tokens and event.reason is not ev.FinishReason.ERROR:
            self._chars_per_token = learn_chars_per_token(p.messages, s.prompt_tokens, self._chars_per_token)
        runs = origin_runs(p.runs)
        config = self._config_dict(event.config_label)
        spans = [[span.first_token, span.label] for span in getattr(event, "config_spans", ()) or ()]
        if len(spans) > 1:
            config["spans"] = spans
        error = event.error if event.reason is ev.FinishReason.ERROR else None
        stored = None
        keep = bool(event.text) or event.reason is not ev.FinishReason.ERROR
        exists = self._store.conversation(p.conversation_id) is not None  # not deleted meanwhile
        if keep and exists:
            full = {**metrics, "origin_runs": runs}
            if p.message_id is not None and self._store.update_message(
                    p.message_id, event.text, metrics=full, config=config, state=STATE_DONE):
                stored = p.message_id
            else:
                stored = self._store.add_message(p.conversation_id, "assistant", event.text,
                                                 metrics=full, config=config).id
            self._refresh_list()
        elif p.message_id is not None and exists:
            self._store.delete_message(p.message_id)  # a failed answer with nothing said
        if p.view is not None:
            p.view.message_id = stored
            p.view.runs = [list(r) for r in runs]
            p.view.finish(event.text, metrics, config, error)
        self._update_actions()
        self.generation_finished.emit(event)

    def _config_dict(self, label: str) -> dict:
        info = self._bridge.model_info
        return {
            "label": label,
            "model": self._names(info.name_or_path if info else None),
            "model_path": info.name_or_path if info else None,
            "sampling": self._last_sampling,
        }

    def _persist_partial(self) -> None:
        """Write the answer streaming so far (one transaction), so a hard kill loses little."""
        p = self._pending
        if p is None or not p.text or p.text == p.saved_text:
            return
        if self._store.conversation(p.conversation_id) is None:
            return
        metrics = {"origin_runs": origin_runs(p.runs)}
        config = self._config_dict(self._bridge.config_label)  # the local config, or the server
        if p.message_id is None:
            p.message_id = self._store.add_message(p.conversation_id, "assistant", p.text, metrics=metrics,
                                                   config=config, state=STATE_STREAMING).id
        elif not self._store.update_message(p.message_id, p.text, metrics=metrics, config=config,
                                            state=STATE_STREAMING):
            return
        p.saved_text = p.text
        self.answer_saved.emit(p.message_id, p.text)

    def _on_model_loaded(self, info: ev.ModelInfo) -> None:
        name = info.name_or_path
        if name != self._sampling_model:  # a new model; a requantise reloads the same one
            defaults = model_defaults(name)
            saved = self._settings.sampling() if self._settings is not None else None
            if saved is not None and saved[0] == name:
                self.settings.set_defaults(defaults, apply=False)
                self.settings.set_values(saved[1])  # what the user set last time for this model
            else:
                self.settings.set_defaults(defaults)
            self._sampling_model = name
        self._update_empty_state()

    def _on_sampling_edited(self) -> None:
        if self._settings is not None and self._sampling_model is not None:
            self._settings.set_sampling(self._sampling_model, self.settings.sampling_params())

    # ------------------------------------------------------------------ internals
    def _submit(self) -> str | None:
        conv = self._store.conversation(self._conversation_id)
        system = conv.system_prompt.strip() if conv is not None else ""
        turns = [(m.role, m.content) for m in self._store.messages(self._conversation_id)
                 if m.role in ("user", "assistant")]
        sampling = self.settings.sampling_params()
        info = self._bridge.model_info
        fitted = fit_history(system or None, turns,
                             context_tokens=model_context_length(info) if info is not None else None,
                             max_new_tokens=sampling.max_new_tokens,
                             chars_per_token=self._chars_per_token or DEFAULT_CHARS_PER_TOKEN)
        self._last_sampling = sampling_label(sampling)
        view = MessageView("assistant", theme=self._theme)
        view.set_colour_tokens(self.colour_toggle.isChecked())
        self._add_view(view)
        try:
            rid = self._bridge.submit(GenerateRequest(messages=fitted.messages, sampling=sampling, tag=REQUEST_TAG))
        except (ValueError, TypeError, RuntimeError) as exc:  # refused at the edge, or the engine is shut down
            view.finish("", {}, self._config_dict(""), error=f"not sent: {exc}")
            self._update_actions()
            return None
        self._pending = _Pending(rid, self._conversation_id, view, messages=fitted.messages,
                                 dropped=fitted.dropped)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._persist_timer.start()
        view.set_streaming(True)
        self.composer.set_generating(True)
        self.transcript.follow()
        self._update_actions()
        self.generation_started.emit(rid)
        return rid

    def _render_pending(self) -> None:
        if self._pending is not None and self._pending.view is not None:
            view = self._pending.view
            view.render()
            # a long answer costs more per render: render it less often
            interval = int(view.last_render_s * 1000 / RENDER_SHARE)
            self._render_timer.setInterval(max(RENDER_INTERVAL_MS, min(MAX_RENDER_INTERVAL_MS, interval)))

    def _show_conversation(self) -> None:
        self._remove_views_from(0)
        if self._pending is not None:
            self._pending.view = None
        conv = self._store.conversation(self._conversation_id) if self._conversation_id is not None else None
        self.title.setText(conv.title if conv else "New chat")
        if conv is None:
            self._conversation_id = None
        else:
            p = self._pending
            for m in self._store.messages(conv.id):
                if p is not None and m.id == p.message_id:
                    continue  # the answer streaming now is shown from memory below
                metrics = dict(m.metrics or {})
                if getattr(m, "state", STATE_DONE) in (STATE_INTERRUPTED, STATE_STREAMING):
                    metrics["reason"] = STATE_INTERRUPTED
                view = MessageView(m.role, m.content, message_id=m.id, metrics=metrics or None,
                                   config=m.config, runs=metrics.get("origin_runs"), theme=self._theme,
                                   render_now=False)
                self._add_view(view)
                self._queue_render(view)
            if p is not None and p.conversation_id == conv.id:
                view = MessageView("assistant", p.text, runs=[list(r) for r in origin_runs(p.runs)],
                                   theme=self._theme)
                self._add_view(view)
                p.view = view
                view.set_streaming(True)
        for v in self._views:
            if v.set_colour_tokens(self.colour_toggle.isChecked(), render_now=False):
                self._queue_render(v)
        self._refresh_list()
        self._update_actions()
        self.transcript.follow()

    def _add_view(self, view: MessageView) -> None:
        view.regenerate_requested.connect(self.regenerate)
        if view.role == "user":
            view.edit_submitted.connect(lambda text, v=view: self.edit_and_resend(v.message_id, text))
        self.transcript.add(view)

    def _remove_views_from(self, index: int) -> None:
        gone = set(map(id, self._views[index:]))
        self._render_queue = [v for v in self._render_queue if id(v) not in gone]
        self.transcript.remove_from(index)
        self._update_empty_state()

    def _update_actions(self) -> None:
        idle = self._pending is None
        for i, v in enumerate(self._views):
            v.set_can_regenerate(idle and i == len(self._views) - 1)
            v.set_actions_enabled(idle)

    def _update_empty_state(self) -> None:
        if self._bridge.model_info is None:
            text = ("No model loaded yet.\nPick the bundled demo, a recent model, a folder or a hub id "
                    "in the engine panel, then say hello.")
        else:
            text = (f"Chat with {self._names(self._bridge.model_info.name_or_path)}.\n"
                    "Answers stream in with their tokens/s, time to first token and the exact engine "
                    "configuration. Flip KV cache, batching or quantisation on the left while it runs.")
        self.transcript.set_hint(text)

    def _refresh_list(self) -> None:
        self.conversations.set_conversations(self._store.conversations(self.conversations.search.text()),
                                             self._conversation_id)

    def _save_system_prompt(self) -> None:
        if self._conversation_id is not None:
            conv = self._store.conversation(self._conversation_id)
            text = self.settings.system_prompt_text()
            if conv is not None and conv.system_prompt != text:
                self._store.set_system_prompt(conv.id, text)

    def _on_system_prompt_edited(self, _text: str) -> None:
        self._save_system_prompt()
