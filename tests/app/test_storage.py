"""app/storage.py: conversations and messages round-trip through SQLite, atomically."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.storage import DB_FILENAME, ConversationStore

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    s = ConversationStore()
    yield s
    s.close()


def test_default_location_honours_data_dir(store, tmp_path):
    assert store.path == tmp_path / DB_FILENAME
    assert store.journal_mode == "wal"


def test_conversation_and_messages_round_trip_across_reopen(store, tmp_path):
    conv = store.create_conversation("First chat", system_prompt="be brief")
    store.add_message(conv.id, "user", "hello")
    store.add_message(conv.id, "assistant", "hi **there**",
                      metrics={"completion_tokens": 3, "ttft_s": 0.01},
                      config={"label": "kv on", "model": "tiny"})
    store.close()

    again = ConversationStore(tmp_path / DB_FILENAME)
    try:
        [loaded] = again.conversations()
        assert (loaded.id, loaded.title, loaded.system_prompt) == (conv.id, "First chat", "be brief")
        msgs = again.messages(conv.id)
        assert [(m.role, m.content) for m in msgs] == [("user", "hello"), ("assistant", "hi **there**")]
        assert msgs[1].metrics == {"completion_tokens": 3, "ttft_s": 0.01}
        assert msgs[1].config == {"label": "kv on", "model": "tiny"}
        assert msgs[0].metrics is None
    finally:
        again.close()


def test_list_orders_by_last_activity_and_searches_titles_and_text(store):
    a = store.create_conversation("Alpha")
    b = store.create_conversation("Beta")
    store.add_message(a.id, "user", "talk about 100% foxes")
    assert [c.title for c in store.conversations()] == ["Alpha", "Beta"]
    assert [c.title for c in store.conversations("bet")] == ["Beta"]
    assert [c.title for c in store.conversations("foxes")] == ["Alpha"]
    assert [c.title for c in store.conversations("100%")] == ["Alpha"]
    assert store.conversations("0%f") == []  # % is literal, not a wildcard
    assert b.id != a.id


def test_rename_system_prompt_and_delete_cascade(store):
    conv = store.create_conversation("Old")
    store.add_message(conv.id, "user", "x")
    store.rename_conversation(conv.id, "New")
    store.set_system_prompt(conv.id, "sys")
    got = store.conversation(conv.id)
    assert (got.title, got.system_prompt) == ("New", "sys")
    store.delete_conversation(conv.id)
    assert store.conversation(conv.id) is None
    assert store.messages(conv.id) == []


def test_delete_messages_from_drops_the_tail_only(store):
    conv = store.create_conversation("c")
    ids = [store.add_message(conv.id, role, text).id
           for role, text in [("user", "1"), ("assistant", "2"), ("user", "3"), ("assistant", "4")]]
    assert store.delete_messages_from(conv.id, ids[2]) == 2
    assert [m.content for m in store.messages(conv.id)] == ["1", "2"]


def test_a_failed_write_leaves_nothing_behind(store):
    conv = store.create_conversation("c")
    with pytest.raises(TypeError):
        store.add_message(conv.id, "assistant", "x", metrics={"bad": object()})
    with pytest.raises(sqlite3.IntegrityError):
        store.add_message(conv.id, "robot", "not a role")
    assert store.messages(conv.id) == []


def test_a_message_and_its_conversation_touch_commit_together(store):
    """The second statement of add_message fails (a trigger makes it): the first must not stay.
    A non-atomic add_message (two autocommits) leaves the message behind and fails this."""
    conv = store.create_conversation("c")
    store._conn.execute("CREATE TEMP TRIGGER refuse_touch BEFORE UPDATE ON conversations "
                        "BEGIN SELECT RAISE(ABORT, 'touch refused'); END")
    with pytest.raises(sqlite3.DatabaseError, match="touch refused"):
        store.add_message(conv.id, "user", "half-written?")
    store._conn.execute("DROP TRIGGER refuse_touch")
    assert store.messages(conv.id) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_finished_messages_survive_a_hard_kill(tmp_path):
    """A process killed right after a message is committed keeps it; nothing is half-written."""
    script = textwrap.dedent(f"""
        import os, signal
        from app.storage import ConversationStore
        s = ConversationStore({str(tmp_path / DB_FILENAME)!r})
        c = s.create_conversation("survivor")
        s.add_message(c.id, "user", "question")
        s.add_message(c.id, "assistant", "answer", metrics={{"completion_tokens": 1}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    s = ConversationStore(tmp_path / DB_FILENAME)
    try:
        [conv] = s.conversations()
        assert [m.content for m in s.messages(conv.id)] == ["question", "answer"]
    finally:
        s.close()
