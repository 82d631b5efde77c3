"""Chat: conversations, a streaming transcript, generation settings and the composer.

The view talks to the engine only through the bridge and keeps conversations in a store
(app.storage.ConversationStore or anything with the same methods), injected by the caller.
"""

from __future__ import annotations

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
from ui.composer import ComposerView
from ui.conversation_list import ConversationListView
from ui.formatting import (
    metrics_from_finished,
    model_display_name,
    origin_runs,
    sampling_label,
)
from ui.message_widget import MessageView
from ui.sampling_panel import SamplingSettingsView, model_defaults
from ui.theme import LIGHT, Theme
from ui.transcript import TranscriptView
from ui.widgets import label, named

RENDER_INTERVAL_MS = 40  # re-render a streaming answer at most ~25 times a second
RENDER_SHARE = 0.2  # ...and spend at most this share of the GUI thread on it (long answers)
MAX_RENDER_INTERVAL_MS = 1000
TITLE_CHARS = 48
REQUEST_TAG = "chat"


@dataclass
class _Pending:
    request_id: str
    conversation_id: int
    view: MessageView | None
    text: str = ""
    runs: list = field(default_factory=list)


class ChatView(QWidget):
    generation_started = Signal(str)  # request id
    generation_finished = Signal(object)  # ev.RequestFinished of a chat request

    def __init__(self, bridge, store, theme: Theme = LIGHT, parent=None) -> None:
        super().__init__(parent)
        named(self, "chat_view", "Chat")
        self._bridge = bridge
        self._store = store
        self._theme = theme
        self._conversation_id: int | None = None
        self._pending: _Pending | None = None
        self._last_sampling = ""

        self.conversations = ConversationListView()
        self.title = label("New chat", "chat_title", "Conversation title", role="title")
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

        self.conversations.conversation_selected.connect(self.select_conversation)
        self.conversations.new_requested.connect(self.new_conversation)
        self.conversations.rename_requested.connect(self.rename_conversation)
        self.conversations.delete_requested.connect(self.delete_conversation)
        self.conversations.search_changed.connect(lambda _text: self._refresh_list())
        self.composer.send_requested.connect(self.send)
        self.composer.stop_requested.connect(self.stop)
        self.settings.system_prompt_edited.connect(self._on_system_prompt_edited)
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
        """Drop the last answer and ask again."""
        if self._pending is not None or self._conversation_id is None or not self._views:
            return None
        last = self._views[-1]
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
            v.set_theme(theme)

    def set_colour_tokens(self, on: bool) -> None:
        if self.colour_toggle.isChecked() != on:
            self.colour_toggle.setChecked(on)
            return
        self.legend.setVisible(on)
        for v in self._views:
            v.set_colour_tokens(on)

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
        self.composer.set_generating(False)
        metrics = metrics_from_finished(event)
        runs = origin_runs(p.runs)
        info = self._bridge.model_info
        config = {
            "label": event.config_label,
            "model": model_display_name(info.name_or_path if info else None),
            "model_path": info.name_or_path if info else None,
            "sampling": self._last_sampling,
        }
        error = event.error if event.reason is ev.FinishReason.ERROR else None
        stored = None
        keep = bool(event.text) or event.reason is not ev.FinishReason.ERROR
        if keep and self._store.conversation(p.conversation_id) is not None:  # not deleted meanwhile
            stored = self._store.add_message(p.conversation_id, "assistant", event.text,
                                             metrics={**metrics, "origin_runs": runs}, config=config)
            self._refresh_list()
        if p.view is not None:
            p.view.message_id = stored.id if stored else None
            p.view.runs = [list(r) for r in runs]
            p.view.finish(event.text, metrics, config, error)
        self._update_actions()
        self.generation_finished.emit(event)

    def _on_model_loaded(self, info: ev.ModelInfo) -> None:
        self.settings.set_defaults(model_defaults(info.name_or_path))
        self._update_empty_state()

    # ------------------------------------------------------------------ internals
    def _submit(self) -> str:
        conv = self._store.conversation(self._conversation_id)
        history = []
        if conv is not None and conv.system_prompt.strip():
            history.append(("system", conv.system_prompt.strip()))
        history += [(m.role, m.content) for m in self._store.messages(self._conversation_id)
                    if m.role in ("user", "assistant")]
        sampling = self.settings.sampling_params()
        self._last_sampling = sampling_label(sampling)
        view = MessageView("assistant", theme=self._theme)
        view.set_colour_tokens(self.colour_toggle.isChecked())
        self._add_view(view)
        rid = self._bridge.submit(GenerateRequest(messages=tuple(history), sampling=sampling, tag=REQUEST_TAG))
        self._pending = _Pending(rid, self._conversation_id, view)
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
            for m in self._store.messages(conv.id):
                metrics = m.metrics or {}
                self._add_view(MessageView(m.role, m.content, message_id=m.id, metrics=m.metrics,
                                           config=m.config, runs=metrics.get("origin_runs"), theme=self._theme))
            p = self._pending
            if p is not None and p.conversation_id == conv.id:
                view = MessageView("assistant", p.text, runs=[list(r) for r in origin_runs(p.runs)],
                                   theme=self._theme)
                self._add_view(view)
                p.view = view
                view.set_streaming(True)
        for v in self._views:
            v.set_colour_tokens(self.colour_toggle.isChecked())
        self._refresh_list()
        self._update_actions()
        self.transcript.follow()

    def _add_view(self, view: MessageView) -> None:
        view.regenerate_requested.connect(self.regenerate)
        if view.role == "user":
            view.edit_submitted.connect(lambda text, v=view: self.edit_and_resend(v.message_id, text))
        self.transcript.add(view)

    def _remove_views_from(self, index: int) -> None:
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
            text = (f"Chat with {model_display_name(self._bridge.model_info.name_or_path)}.\n"
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
