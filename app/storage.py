"""Conversation store: SQLite (stdlib) under the user data dir. Qt-free.

Every write is one transaction and the database runs in WAL mode, so a finished
message survives a restart, and a hard kill during generation loses at most the
message still in flight (it is only written when it finishes).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from app.paths import user_data_dir

DB_FILENAME = "conversations.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    created REAL NOT NULL,
    metrics_json TEXT,
    config_json TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    system_prompt: str = ""


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created: float
    metrics: dict | None = None
    config: dict | None = None


def default_db_path() -> Path:
    return user_data_dir() / DB_FILENAME


class ConversationStore:
    """One connection, used from one thread (the GUI thread)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across process kills in WAL mode
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._conn:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---- lifecycle
    def close(self) -> None:
        self._conn.close()

    @property
    def journal_mode(self) -> str:
        return self._conn.execute("PRAGMA journal_mode").fetchone()[0]

    # ---- conversations
    def create_conversation(self, title: str, system_prompt: str = "") -> Conversation:
        now = time.time()
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO conversations (title, created, updated, system_prompt) VALUES (?, ?, ?, ?)",
                (title, now, now, system_prompt),
            )
        return Conversation(cur.lastrowid, title, now, now, system_prompt)

    def conversation(self, conversation_id: int) -> Conversation | None:
        row = self._conn.execute(
            "SELECT id, title, created, updated, system_prompt FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        return Conversation(*row) if row else None

    def conversations(self, search: str = "") -> list[Conversation]:
        """Most recently updated first; `search` matches titles and message text."""
        sql = "SELECT id, title, created, updated, system_prompt FROM conversations"
        args: tuple = ()
        if search.strip():
            pattern = "%" + _escape_like(search.strip()) + "%"
            sql += (" WHERE title LIKE ? ESCAPE '\\' OR id IN "
                    "(SELECT conversation_id FROM messages WHERE content LIKE ? ESCAPE '\\')")
            args = (pattern, pattern)
        sql += " ORDER BY updated DESC, id DESC"
        return [Conversation(*row) for row in self._conn.execute(sql, args)]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        with self._conn:
            self._conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        with self._conn:
            self._conn.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?",
                               (system_prompt, conversation_id))

    def delete_conversation(self, conversation_id: int) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ---- messages
    def add_message(self, conversation_id: int, role: str, content: str, *,
                    metrics: dict | None = None, config: dict | None = None) -> Message:
        """Insert one finished message and touch its conversation, in one transaction."""
        metrics_json = json.dumps(metrics) if metrics is not None else None
        config_json = json.dumps(config) if config is not None else None
        now = time.time()
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO messages (conversation_id, role, content, created, metrics_json, config_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, metrics_json, config_json),
            )
            self._conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return Message(cur.lastrowid, conversation_id, role, content, now, metrics, config)

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self._conn.execute(
            "SELECT id, conversation_id, role, content, created, metrics_json, config_json "
            "FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        return [Message(r[0], r[1], r[2], r[3], r[4], _loads(r[5]), _loads(r[6])) for r in rows]

    def delete_messages_from(self, conversation_id: int, message_id: int) -> int:
        """Delete a message and every later one of its conversation (edit / regenerate)."""
        with self._conn:
            cur = self._conn.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
                                     (conversation_id, message_id))
            self._conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id))
        return cur.rowcount


def _loads(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
