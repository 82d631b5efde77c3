"""Conversation store: SQLite (stdlib) under the user data dir. Qt-free.

Every write is one transaction and the database runs in WAL mode, so a finished
message survives a restart. An answer still streaming is written as it grows (state
'streaming', updated every second or so by the chat view); a hard kill loses at most the
last second, and the next start marks such answers 'interrupted'.

A database that cannot be read (a damaged or foreign file) raises DatabaseUnreadable naming
its path; move_aside() renames it (with its WAL files) so the app can start fresh.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from app.paths import user_data_dir

DB_FILENAME = "conversations.sqlite3"
SCHEMA_VERSION = 2
STATE_DONE = "done"
STATE_STREAMING = "streaming"
STATE_INTERRUPTED = "interrupted"

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
    config_json TEXT,
    state TEXT NOT NULL DEFAULT 'done'
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
    state: str = STATE_DONE


class DatabaseUnreadable(Exception):
    """The conversations database exists but cannot be used (damaged, not SQLite, wrong schema)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"the conversations database {path} cannot be read: {reason}")
        self.path = path
        self.reason = reason


def default_db_path() -> Path:
    return user_data_dir() / DB_FILENAME


def move_aside(path: Path | str) -> Path:
    """Rename an unreadable database (and its -wal/-shm files) to '<name>.unreadable-<time>';
    returns the new path of the database file. Nothing is deleted."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.unreadable-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.unreadable-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    if path.exists():
        path.rename(target)
    return target


class ConversationStore:
    """One connection, used from one thread (the GUI thread)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not a database, damaged pages, a foreign schema
            self._conn.close()
            raise DatabaseUnreadable(self.path, str(exc)) from exc

    def _open(self) -> None:
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across process kills in WAL mode
        self._conn.execute("PRAGMA foreign_keys=ON")
        check = self._conn.execute("PRAGMA quick_check(1)").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
        with self._conn:
            self._conn.executescript(_SCHEMA)
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(messages)")}
            if "state" not in columns:  # schema 1 -> 2
                self._conn.execute("ALTER TABLE messages ADD COLUMN state TEXT NOT NULL DEFAULT 'done'")
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # fail now, not at the first query, if the tables are not what this version expects
        self._conn.execute("SELECT id, title, created, updated, system_prompt FROM conversations LIMIT 1")
        self._conn.execute("SELECT id, conversation_id, role, content, created, metrics_json, config_json, "
                           "state FROM messages LIMIT 1")

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
                    metrics: dict | None = None, config: dict | None = None,
                    state: str = STATE_DONE) -> Message:
        """Insert one message and touch its conversation, in one transaction."""
        metrics_json = json.dumps(metrics) if metrics is not None else None
        config_json = json.dumps(config) if config is not None else None
        now = time.time()
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO messages (conversation_id, role, content, created, metrics_json, config_json, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, metrics_json, config_json, state),
            )
            self._conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return Message(cur.lastrowid, conversation_id, role, content, now, metrics, config, state)

    def update_message(self, message_id: int, content: str, *, metrics: dict | None = None,
                       config: dict | None = None, state: str = STATE_DONE) -> bool:
        """Replace a message's text (an answer as it streams, then finished), in one transaction.
        False when the message is gone (its conversation was deleted meanwhile)."""
        with self._conn:
            cur = self._conn.execute(
                "UPDATE messages SET content = ?, metrics_json = ?, config_json = ?, state = ? WHERE id = ?",
                (content, json.dumps(metrics) if metrics is not None else None,
                 json.dumps(config) if config is not None else None, state, message_id),
            )
        return cur.rowcount == 1

    def delete_message(self, message_id: int) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def mark_interrupted(self) -> int:
        """At start: answers left 'streaming' by a process that died become 'interrupted'."""
        with self._conn:
            cur = self._conn.execute("UPDATE messages SET state = ? WHERE state = ?",
                                     (STATE_INTERRUPTED, STATE_STREAMING))
        return cur.rowcount

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self._conn.execute(
            "SELECT id, conversation_id, role, content, created, metrics_json, config_json, state "
            "FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        return [Message(r[0], r[1], r[2], r[3], r[4], _loads(r[5]), _loads(r[6]), r[7]) for r in rows]

    def message_count(self, conversation_id: int) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                                 (conversation_id,)).fetchone()
        return int(row[0])

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
