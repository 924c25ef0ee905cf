"""The MQTT outbox: messages waiting for the broker's acknowledgement, on disk, in order.

SQLite in WAL mode, so a killed station loses none of what it had buffered: a message is
deleted only once the broker acknowledged it (PUBACK). It is bounded: past ``max_messages``
the *oldest result* messages make room (a status is retained anyway, and alarms are few and
matter more); every drop is counted. The last result ``seq`` is kept in the same file, so
the numbering goes on across restarts and a subscriber can check order, spot a re-delivery
(a seq seen before) and a loss (a gap).

One thread uses an outbox (the publisher's); it is not locked.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.plant.payloads import encode

FILE_NAME = "outbox.sqlite"


class OutboxError(OSError):
    """The outbox's folder or file cannot be used (said in the recipe's terms)."""


@dataclass(frozen=True)
class Stored:
    """One buffered message: its row id (the FIFO order), kind, topic and payload bytes."""

    id: int
    kind: str
    topic: str
    payload: bytes


class Outbox:
    """``add`` messages (oldest results dropped past the bound), ``next_batch`` to send,
    ``remove`` what the broker acknowledged."""

    def __init__(self, folder: str | Path, max_messages: int) -> None:
        self.path = Path(folder) / FILE_NAME
        self.max_messages = int(max_messages)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash of the process loses nothing
            self._db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY "
                             "AUTOINCREMENT, kind TEXT NOT NULL, topic TEXT NOT NULL, "
                             "payload BLOB NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                             "value INTEGER NOT NULL)")
            self._count = int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"mqtt.buffer_dir: the outbox {self.path} cannot be opened or "
                              f"created ({exc})") from None
        self.dropped = self._meta("dropped")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (key, value))

    def __len__(self) -> int:
        return self._count

    def last_id(self) -> int:
        """The newest row id (0 when empty): rows after a given id are the ones to send."""
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last result stored (0 before the first)."""
        return self._meta("result_seq")

    def add(self, messages: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
        """Store ``(kind, topic, payload dict)`` messages in one transaction, oldest first; a
        result without a ``seq`` gets the next one. Returns their row ids (past the bound,
        the oldest results are dropped to make room: see :attr:`dropped`)."""
        if not messages:
            return []
        seq = self.last_seq
        ids = []
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for kind, topic, payload in messages:
                    if kind == "result" and payload.get("seq") is None:
                        seq += 1
                        payload = {**payload, "seq": seq}
                    elif kind == "result":
                        seq = max(seq, int(payload["seq"]))
                    cur = self._db.execute("INSERT INTO messages (kind, topic, payload) "
                                           "VALUES (?, ?, ?)", (kind, topic, encode(payload)))
                    ids.append(int(cur.lastrowid or 0))
                self._set_meta("result_seq", seq)
                self._count += len(ids)
                self._make_room()
        except sqlite3.Error:
            self._recount()
            raise
        return ids

    def _make_room(self) -> None:
        """Past the bound: delete the oldest results (the oldest messages if none is left)."""
        excess = self._count - self.max_messages
        if excess <= 0:
            return
        ids = [r[0] for r in self._db.execute(
            "SELECT id FROM messages WHERE kind = 'result' ORDER BY id LIMIT ?", (excess,))]
        if len(ids) < excess:
            ids += [r[0] for r in self._db.execute(
                "SELECT id FROM messages WHERE kind != 'result' ORDER BY id LIMIT ?",
                (excess - len(ids),))]
        self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
        self._count -= len(ids)
        self.dropped += len(ids)
        self._set_meta("dropped", self.dropped)

    def next_batch(self, after_id: int, limit: int) -> list[Stored]:
        """Up to ``limit`` messages after row ``after_id``, oldest first."""
        return [Stored(int(i), k, t, bytes(p)) for i, k, t, p in self._db.execute(
            "SELECT id, kind, topic, payload FROM messages WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit))]

    def remove(self, ids: list[int]) -> None:
        """The broker acknowledged these: they leave the outbox."""
        if not ids:
            return
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.executemany("DELETE FROM messages WHERE id = ?",
                                           [(i,) for i in ids])
                removed = max(0, cur.rowcount)
        except sqlite3.Error:
            self._recount()
            raise
        self._count -= removed

    def _recount(self) -> None:
        self._count = int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])
        self.dropped = self._meta("dropped")

    def pending(self) -> list[dict[str, Any]]:
        """Every buffered message's payload, oldest first (tests, diagnostics)."""
        return [json.loads(p) for (p,) in self._db.execute(
            "SELECT payload FROM messages ORDER BY id")]

    def close(self) -> None:
        self._db.close()
