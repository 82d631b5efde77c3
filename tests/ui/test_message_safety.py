"""ui/message_widget.py + ui/rich_text.py with hostile model output: nothing of the machine is
loaded, links open only http(s) after a confirmation, and no text blocks the GUI thread."""

from __future__ import annotations

import struct
import zlib

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QTextDocument
from PySide6.QtWidgets import QMessageBox

from tests.helpers.windows import QT_LOG_IGNORE
from ui.message_widget import MessageView

pytestmark = pytest.mark.qt_log_ignore(*QT_LOG_IGNORE)

# Generous against 50 ms on a slow, shared CI box; the old renderer took ~10 s for '[' * 8000.
RENDER_CALL_LIMIT_S = 0.35


def _png(path):
    """A real 1x1 PNG, so a renderer that loads file: images would succeed in loading it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x00\xff\x00\x00"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _view(qtbot, text: str) -> MessageView:
    view = MessageView("assistant", text)
    view.resize(700, 400)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    return view


def _click_text(qtbot, view: MessageView, needle: str) -> None:
    cursor = view.body.document().find(needle)
    assert not cursor.isNull(), f"{needle!r} not shown"
    cursor.setPosition(cursor.selectionStart() + 1)
    pos = view.body.cursorRect(cursor).center()
    qtbot.mouseClick(view.body.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_a_local_image_named_by_the_model_is_never_loaded(qtbot, tmp_path):
    import os

    secret = _png(tmp_path / "secret.png")
    url = QUrl.fromLocalFile(str(secret)).toString()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # reading it would block the GUI thread for ever
    fifo_url = QUrl.fromLocalFile(str(fifo)).toString()
    view = _view(qtbot, f"look: ![a cat]({url}) and ![zero](file:///dev/zero) ![p]({fifo_url})"
                        f"\n\n<img src=\"{url}\">")
    doc = view.body.document()
    for name in (url, "file:///etc/passwd"):  # asking the document loads nothing either
        res = doc.resource(QTextDocument.ResourceType.ImageResource, QUrl(name))
        assert res is None or res.isNull(), f"{name} was loaded"
    assert "<img" not in view.body.toHtml()
    shown = view.body.toPlainText()
    assert f"[image: a cat — {url}]" in shown and "[image: zero — file:///dev/zero]" in shown
    assert '<img src="' in shown  # raw HTML is text
    # and the browser refuses anything a document could still ask for
    assert url in view.body.refused_resources


def test_file_and_script_links_are_inert_and_never_navigate(qtbot, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda u: opened.append(u.toString()))
    view = _view(qtbot, "see [passwords](file:///etc/passwd) or [run](javascript:alert(1)) "
                        "or <qrc:/x>")
    before = view.body.toPlainText()
    assert "(blocked link: file:///etc/passwd)" in before
    assert "(blocked link: javascript:alert(1))" in before
    assert "<a" not in view.body.toHtml().split("<body", 1)[1].replace("<a name", "")  # no live anchors
    _click_text(qtbot, view, "passwords")
    view.body.setSource(QUrl("file:///etc/passwd"))  # even asked directly, it does not navigate
    blocked = []
    view.link_blocked.connect(blocked.append)
    view.body.anchorClicked.emit(QUrl("file:///etc/passwd"))
    assert blocked == ["file:///etc/passwd"]
    assert view.link_dialog is None and opened == []
    assert view.body.toPlainText() == before and "root:" not in view.body.toPlainText()


def test_an_http_link_opens_only_after_confirming_the_full_target(qtbot, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda u: opened.append(u.toString()))
    target = "https://example.com/some/long/path?q=1"
    view = _view(qtbot, f"read [the docs]({target}) please")
    before = view.body.toPlainText()

    _click_text(qtbot, view, "the docs")
    box = view.findChild(QMessageBox, "open_link_dialog")
    assert box is not None and box.isVisible() and box.informativeText() == target
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert opened == [] and view.body.toPlainText() == before

    _click_text(qtbot, view, "the docs")
    box = view.link_dialog
    assert box is not None and box.informativeText() == target
    box.button(QMessageBox.StandardButton.Open).click()
    assert opened == [target]
    assert view.body.toPlainText() == before  # never navigated inside the message


HOSTILE = {
    "open brackets": "[" * 20000,
    "image openers": "![" * 15000,
    "link openers": "[a](" * 10000,
    "emphasis": "**a *b " * 6000,
    "deep quotes": "> " * 20000,
    "deep list": "".join("  " * i + "- x\n" for i in range(400)),
    "huge table": "|" + "a|" * 400 + "\n|" + "-|" * 400 + "\n" + ("|" + "x|" * 400 + "\n") * 200,
    "many bracket paragraphs": ("![" * 1400 + "\n\n") * 40,
    "huge text": "word " * 60000,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_no_text_blocks_the_gui_thread(qtbot, name):
    view = _view(qtbot, "")
    view.text = HOSTILE[name]
    calls = 0
    view.render()
    calls += 1
    assert view.last_render_s < RENDER_CALL_LIMIT_S, f"{name}: {view.last_render_s:.3f} s in one render"
    while not view.render_complete:  # the rest follows on later event-loop turns, each bounded
        view.render()
        calls += 1
        assert view.last_render_s < RENDER_CALL_LIMIT_S
        assert calls < 200
    assert view.body.toPlainText().strip(), "something is shown"


def test_a_streaming_hostile_answer_renders_in_bounded_steps(qtbot):
    view = _view(qtbot, "")
    view.set_streaming(True)
    worst = 0.0
    for _ in range(60):
        view.append("[![" * 100)
        view.render()
        worst = max(worst, view.last_render_s)
    assert worst < RENDER_CALL_LIMIT_S
    view.finish(view.text, {}, {})
    assert view.body.toPlainText().startswith("[![")


def test_markdown_still_renders(qtbot):
    view = _view(qtbot, "# Title\n\nsome **bold** and `code`\n\n```\nx = 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    html = view.body.toHtml()
    assert "font-weight:700" in html or "font-weight:600" in html
    assert view.body.document().toPlainText().split() == ["Title", "some", "bold", "and", "code",
                                                          "x", "=", "1", "a", "b", "1", "2"]


def test_opening_a_conversation_of_hostile_answers_never_blocks(qtbot, window):
    """A stored conversation is model text too: its views render over several event-loop turns."""
    import time

    chat = window.chat
    store = chat._store
    conv = store.create_conversation("hostile")
    for i in range(30):
        store.add_message(conv.id, "user", f"question {i}")
        store.add_message(conv.id, "assistant", ("![" * 1400 + "\n\n") * 3 + "[" * 2000)
    chat._refresh_list()
    started = time.perf_counter()
    chat.select_conversation(conv.id)
    opened_s = time.perf_counter() - started
    assert opened_s < RENDER_CALL_LIMIT_S, f"opening took {opened_s:.3f} s on the GUI thread"
    worst = 0.0
    while chat.rendering:
        with qtbot.waitSignal(chat._drain_timer.timeout, timeout=5000):
            pass
        worst = max(worst, chat.last_drain_s)
    assert worst < RENDER_CALL_LIMIT_S, f"one turn of rendering took {worst:.3f} s"
    last = chat.message_views[-1]
    assert last.render_complete and last.body.toPlainText().startswith("![")
