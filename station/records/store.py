"""Inspection records: one SQLite row per part, committed by a writer thread.

The inspection thread only calls ``submit(row, images)``, which puts the part on a bounded
queue and returns at once; a writer thread commits the part's row in its own transaction, then
hands its images to the image store (``images.py``), so a killed process loses at most the part
in flight.

Durability: WAL mode with ``synchronous=FULL``. In WAL mode NORMAL survives a killed process
but a power cut may roll back every commit since the last checkpoint; FULL syncs the WAL at
each commit, so a power cut loses at most the part in flight too. Parts come at most tens
per second and the sync happens on the writer thread, never the inspection thread, so the
cost (about a millisecond per part on an SSD) buys records of the parts just before a line
stop, the ones people ask about.

A full disk never loses a row. A row whose INSERT fails (the database's disk is full) is kept
in memory, in order, with an alarm, and written as soon as the database takes writes again
(retried every ``retry_s`` and before each new part). One station per database: see
``lock.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np

from station.config import Recipe, RecordsSection
from station.records.images import ImageStore
from station.records.lock import StationLock
from station.records.rows import VERDICTS, PartRecord, RecordsError, iso, parse_since
from station.records.schema import (
    PART_COLUMNS,
    check_database_path,
    check_images_dir,
    checkpoint,
    connect,
    damaged,
    rollback,
)

log = logging.getLogger(__name__)


class Records:
    """The station's records; see the module docstring for the guarantees."""

    def __init__(
        self,
        database_path: str | Path,
        images_dir: str | Path,
        disk_budget_mb: float = 2000.0,
        pass_sample_rate: float = 0.01,
        save_rejects: bool = True,
        *,
        queue_size: int = 256,
        synchronous: str = "FULL",
        min_free_mb: float = 100.0,
        retry_s: float = 2.0,
        max_backlog: int = 100_000,
    ) -> None:
        if not 0.0 <= pass_sample_rate <= 1.0:
            raise RecordsError(f"records.pass_sample_rate: expected 0..1, got {pass_sample_rate!r}")
        if disk_budget_mb < 0:
            raise RecordsError(f"records.disk_budget_mb: expected >= 0, got {disk_budget_mb!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise RecordsError(f"synchronous: expected 'NORMAL' or 'FULL', got {synchronous!r}")
        if min_free_mb < 0:
            raise RecordsError(f"records.min_free_mb: expected >= 0, got {min_free_mb!r}")
        self.database_path = Path(database_path)
        self._images = ImageStore(images_dir, disk_budget_mb, min_free_mb, pass_sample_rate,
                                  save_rejects, self._alarm)
        self.retry_s = float(retry_s)
        self.max_backlog = int(max_backlog)
        check_database_path(self.database_path)
        if disk_budget_mb > 0:  # images are kept: their folder must take them
            check_images_dir(images_dir)
        self._lock = StationLock(self.database_path)
        try:
            self._read = connect(self.database_path, synchronous=synchronous)
            self._write = connect(self.database_path, synchronous=synchronous)
        except RecordsError:
            self._lock.release()
            raise
        self._read_lock = threading.Lock()
        # the bound applies to parts (they carry images); control items are tiny and must
        # never block the serial thread that reports "reject sent"
        self._queue: queue.Queue = queue.Queue()
        self._queue_size = queue_size
        self._parts_queued = 0
        self._count_lock = threading.Lock()
        self._behind = False
        self._alarm_listeners: list[Callable[[str, str], None]] = []
        self._pending_reject: dict[str, tuple] = {}
        self.dropped = 0  # submissions refused because the writer was too far behind
        # writes the database refused (disk full), oldest first, retried in order
        self._backlog: deque[tuple] = deque()
        self._db_fault = False
        self.lost_rows = 0  # rows given up: the backlog overflowed max_backlog, or at close
        self._closed = False
        self._images.sweep_temp_files()
        self._writer = threading.Thread(target=self._writer_loop, name="records-writer",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def from_section(cls, section: RecordsSection, **kwargs) -> Records:
        """The records a recipe's ``[records]`` section asks for (``kwargs``: tuning, tests)."""
        kwargs.setdefault("min_free_mb", section.min_free_mb)
        return cls(section.database, section.images_dir, section.disk_budget_mb,
                   section.pass_sample_rate, section.save_rejects, **kwargs)

    @classmethod
    def from_recipe(cls, recipe: Recipe, **kwargs) -> Records:
        """The records of ``recipe`` (its ``records`` section; paths already resolved)."""
        return cls.from_section(recipe.records, **kwargs)

    # the image store's settings and counter, as the GUI and the tests read them
    @property
    def images_dir(self) -> Path:
        return self._images.images_dir

    @property
    def disk_budget_bytes(self) -> int:
        return self._images.disk_budget_bytes

    @property
    def min_free_bytes(self) -> int:
        return self._images.min_free_bytes

    @property
    def pass_sample_rate(self) -> float:
        return self._images.pass_sample_rate

    @property
    def save_rejects(self) -> bool:
        return self._images.save_rejects

    @property
    def image_failures(self) -> int:
        """Images not saved (disk full, reserve reached, row refused, encoding refused)."""
        return self._images.failures

    def add_alarm_listener(self, cb: Callable[[str, str], None]) -> None:
        """``cb(kind, message)`` for each alarm the records raise (disk full, writer behind)."""
        self._alarm_listeners.append(cb)

    # ------------------------------------------------------------------ inspection thread

    def submit(self, row: PartRecord, images: Mapping[str, np.ndarray] | None = None) -> bool:
        """Queue a part for writing; never blocks. False (and an alarm) if the queue is full."""
        if self._closed:
            raise RecordsError("records are closed")
        with self._count_lock:
            if self._parts_queued < self._queue_size:
                self._parts_queued += 1
                self._queue.put(("part", row, dict(images or {})))
                self._behind = False
                return True
            self.dropped += 1
            first = not self._behind  # one alarm per episode, not one per part
            self._behind = True
        if first:
            self._alarm("records", f"records writer behind (disk stalled?): part {row.part_id} "
                        f"and the parts after it are not recorded until it catches up",
                        to_db=False)
        return False

    def mark_reject(self, part_id: str, action: str, reason: str = "",
                    timing_ms: float | None = None) -> None:
        """Store what the reject scheduler did for a part (``on_fired`` adapter below)."""
        self._put_control(("reject", str(part_id), action, reason, timing_ms))

    def on_fired(self, part_id: str, action: str, scheduled: float, actual: float | None,
                 reason: str) -> None:
        """Matches ``RejectScheduler``'s callback: records "reject sent" for the part."""
        timing = None if actual is None else (actual - scheduled) * 1000.0
        self.mark_reject(part_id, action, reason, timing)

    def _put_control(self, item: tuple) -> None:
        if not self._closed:
            self._queue.put(item)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is on disk; False while rows wait in memory."""
        if self._closed:
            return not self._backlog
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout) and not self._backlog

    @property
    def unwritten(self) -> int:
        """Rows (and reject outcomes) the database refused so far, kept in memory for retry."""
        return len(self._backlog)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("stop",))
        self._writer.join(30.0)
        with self._read_lock:
            self._read.close()
        self._lock.release()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ GUI queries

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The read connection, held; a damaged file is a :class:`RecordsError` that names
        it (the station says so at start, where it said "internal error")."""
        with self._read_lock:
            try:
                yield
            except sqlite3.DatabaseError as exc:
                if not damaged(exc):  # locked, closed, out of room: not the file's fault
                    raise
                raise RecordsError(
                    f"records database {self.database_path}: cannot read it ({exc}); "
                    "move the damaged file aside to start a new one"
                ) from exc

    def recent(self, n: int = 50, verdict: str | None = None) -> list[dict]:
        sql = "SELECT * FROM parts"
        args: list = []
        if verdict is not None:
            if verdict not in VERDICTS:
                raise ValueError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
            sql += " WHERE verdict = ?"
            args.append(verdict)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(int(n))
        with self._reading():
            rows = [self._row_dict(r) for r in self._read.execute(sql, args).fetchall()]
        return rows

    def counts(self, since: str | float | datetime | None = None,
               recipe: str | None = None) -> dict[str, int]:
        """inspected, passed, rejected, errors (since an ISO time / epoch, or all; of one
        product when ``recipe`` names it, as the rows' ``recipe`` column holds it)."""
        t0 = parse_since(since)
        sql = ("SELECT count(*), sum(verdict='PASS'), sum(verdict='REJECT'), sum(verdict='ERROR') "
               "FROM parts WHERE 1")
        args: tuple = ()
        if t0 is not None:
            sql += " AND time_epoch >= ?"
            args = (t0,)
        if recipe is not None:
            sql += " AND recipe = ?"
            args = (*args, recipe)
        with self._reading():
            n, p, r, e = self._read.execute(sql, args).fetchone()
        return {"inspected": n or 0, "passed": p or 0, "rejected": r or 0, "errors": e or 0}

    def get(self, part_id: str) -> dict | None:
        """The latest row for ``part_id`` with its images (absolute paths, deleted ones noted)."""
        with self._reading():
            r = self._read.execute("SELECT * FROM parts WHERE part_id = ? ORDER BY id DESC LIMIT 1",
                                   (str(part_id),)).fetchone()
            return None if r is None else self._row_dict(r)

    def alarms(self, unacknowledged_only: bool = False, n: int = 100) -> list[dict]:
        sql = "SELECT * FROM alarms"
        if unacknowledged_only:
            sql += " WHERE acknowledged_at IS NULL"
        with self._reading():
            return [dict(r) for r in self._read.execute(sql + " ORDER BY id DESC LIMIT ?", (n,))]

    def raise_alarm(self, kind: str, message: str) -> int:
        """Record an alarm (e.g. "serial link lost") and tell the listeners; returns its id."""
        now = time.time()
        with self._read_lock:
            cur = self._read.execute(
                "INSERT INTO alarms (time_iso, time_epoch, kind, message) VALUES (?, ?, ?, ?)",
                (iso(now), now, kind, message))
        for cb in list(self._alarm_listeners):
            try:
                cb(kind, message)
            except Exception:
                log.exception("alarm listener failed")
        return int(cur.lastrowid or 0)  # an INSERT always sets it

    def acknowledge_alarm(self, alarm_id: int, who: str) -> None:
        if not who:
            raise ValueError("acknowledging an alarm needs the name of who acknowledges it")
        with self._read_lock:
            cur = self._read.execute(
                "UPDATE alarms SET acknowledged_at = ?, acknowledged_by = ? "
                "WHERE id = ? AND acknowledged_at IS NULL", (iso(time.time()), who, alarm_id))
        if cur.rowcount == 0:
            raise ValueError(f"alarm {alarm_id} does not exist or is already acknowledged")

    def record_event(self, who: str, key: str, old, new) -> None:
        """A settings change by an engineer (who, which key, old and new value)."""
        now = time.time()
        with self._read_lock:
            self._read.execute(
                "INSERT INTO events (time_iso, time_epoch, who, key, old, new) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (iso(now), now, who, key, None if old is None else str(old),
                 None if new is None else str(new)))

    def events(self, n: int = 100) -> list[dict]:
        with self._reading():
            return [dict(r) for r in self._read.execute(
                "SELECT * FROM events ORDER BY id DESC LIMIT ?", (n,))]

    def image_bytes(self) -> int:
        """Bytes of live (not yet deleted) images, as the budget counts them."""
        with self._reading():
            return int(self._read.execute(
                "SELECT coalesce(sum(bytes), 0) FROM images WHERE deleted_at IS NULL").fetchone()[0])

    def _row_dict(self, r: sqlite3.Row) -> dict:
        d = dict(r)
        d["model_versions"] = json.loads(d["model_versions"] or "{}")
        d["reject_sent"] = None if d["reject_sent"] is None else bool(d["reject_sent"])
        d["images"] = [
            {"kind": i["kind"], "path": str(self.images_dir / i["path"]),
             "deleted": i["deleted_at"] is not None}
            for i in self._read.execute(
                "SELECT kind, path, deleted_at FROM images WHERE part_row = ? ORDER BY id",
                (d["id"],))
        ]
        return d

    # ------------------------------------------------------------------ writer thread

    def _writer_loop(self) -> None:
        conn = self._write
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.retry_s if self._backlog else None)
                except queue.Empty:  # nothing new: try the rows the database refused again
                    self._retry_backlog(conn)
                    continue
                kind = item[0]
                if kind == "stop":
                    self._give_up_backlog(conn)
                    return
                if kind == "flush":
                    self._retry_backlog(conn)
                    item[1].set()
                    continue
                try:
                    self._handle(conn, item)
                except Exception as exc:  # a dead writer would lose every later row silently
                    log.exception("records writer: %s item failed", kind)
                    self._alarm("records", f"records writer error: {type(exc).__name__}: {exc}",
                                to_db=False)
        finally:
            conn.close()

    def _handle(self, conn: sqlite3.Connection, item: tuple) -> None:
        if item[0] == "part":
            with self._count_lock:
                self._parts_queued -= 1
            wanted = bool(item[2]) and self._images.wanted(item[1])
            self._write_item(conn, ("part", item[1]), item[2] if wanted else None)
        elif item[0] == "reject":
            self._write_item(conn, item, None)

    def _write_item(self, conn: sqlite3.Connection, item: tuple,
                    images: dict[str, np.ndarray] | None) -> None:
        """Write a row (or a reject outcome) in order; keep it in memory if the database refuses."""
        if self._backlog and not self._retry_backlog(conn):
            self._keep(item, None)  # behind older rows still waiting: keep the order
            if images:
                self._images.failures += len(images)
            return
        try:
            row_id = self._apply(conn, item)
        except sqlite3.Error as exc:
            rollback(conn)
            try:  # a full disk: the WAL's own space, checkpointed and truncated, may be enough
                checkpoint(conn)
                row_id = self._apply(conn, item)
            except sqlite3.Error:
                rollback(conn)
                self._keep(item, exc)
                if images:
                    self._images.failures += len(images)
                return
        if images and row_id is not None:
            self._images.attach(conn, row_id, item[1], images)

    def _apply(self, conn: sqlite3.Connection, item: tuple) -> int | None:
        if item[0] == "part":
            return self._insert_row(conn, item[1])
        self._write_reject(conn, *item[1:])
        return None

    def _keep(self, item: tuple, exc: sqlite3.Error | None) -> None:
        """Hold a refused write in memory (bounded), with one alarm per episode."""
        self._backlog.append(item)
        if len(self._backlog) > self.max_backlog:
            lost = self._backlog.popleft()
            self.lost_rows += 1
            log.error("records backlog full: %s for part %s given up", lost[0],
                      getattr(lost[1], "part_id", lost[1]))
        if not self._db_fault:
            self._db_fault = True
            hint = ("the file is damaged: stop, move it aside, start again" if damaged(exc)
                    else "free disk space?")
            self._alarm("records", f"records database {self.database_path} refuses writes "
                        f"({exc}); rows are kept in memory and written when it takes writes "
                        f"again ({hint})", to_db=False)

    def _retry_backlog(self, conn: sqlite3.Connection) -> bool:
        """Write the kept rows, oldest first; True once none is left."""
        if self._backlog:
            with contextlib.suppress(sqlite3.Error):
                checkpoint(conn)
        while self._backlog:
            try:
                self._apply(conn, self._backlog[0])
            except sqlite3.Error:
                rollback(conn)
                return False
            self._backlog.popleft()
        if self._db_fault:
            self._db_fault = False
            log.warning("records database %s takes writes again: kept rows written",
                        self.database_path)
        return True

    def _give_up_backlog(self, conn: sqlite3.Connection) -> None:
        """At close: a last try; what still cannot be written is named in the log."""
        if self._retry_backlog(conn):
            return
        parts = [item[1].part_id for item in self._backlog if item[0] == "part"]
        self.lost_rows += len(parts)
        log.critical("records database %s still refuses writes at close: %d row(s) not "
                     "recorded (parts %s)", self.database_path, len(parts), ", ".join(parts))


    def _insert_row(self, conn: sqlite3.Connection, row: PartRecord) -> int:
        """The part's row, committed on its own: nothing about images can hold it back."""
        values = asdict(row)
        values["time_iso"] = iso(row.time_epoch)
        values["model_versions"] = json.dumps(row.model_versions, sort_keys=True)
        pending = self._pending_reject.get(row.part_id)
        if pending is not None:
            action, reason, timing_ms = pending
            values.update(reject_sent=int(action == "reject"), reject_action=action,
                          reject_reason=reason, reject_timing_ms=timing_ms)
        cols = [c for c in PART_COLUMNS if c in values]
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            f"INSERT INTO parts ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [values[c] for c in cols])
        conn.execute("COMMIT")
        self._pending_reject.pop(row.part_id, None)
        return int(cur.lastrowid or 0)  # an INSERT always sets it


    def _write_reject(self, conn: sqlite3.Connection, part_id: str, action: str, reason: str,
                      timing_ms: float | None) -> None:
        cur = conn.execute(
            "UPDATE parts SET reject_sent = ?, reject_action = ?, reject_reason = ?, "
            "reject_timing_ms = ? WHERE id = (SELECT max(id) FROM parts WHERE part_id = ?)",
            (int(action == "reject"), action, reason, timing_ms, part_id))
        if cur.rowcount == 0:  # the fail-safe acted before the part's row arrived
            self._pending_reject[part_id] = (action, reason, timing_ms)
            while len(self._pending_reject) > 10000:
                self._pending_reject.pop(next(iter(self._pending_reject)))

    def _alarm(self, kind: str, message: str, to_db: bool = True) -> None:
        log.error("%s alarm: %s", kind, message)
        if to_db:
            try:
                self.raise_alarm(kind, message)
                return
            except sqlite3.Error as exc:
                log.error("could not record the alarm: %s", exc)
        for cb in list(self._alarm_listeners):
            try:
                cb(kind, message)
            except Exception:
                log.exception("alarm listener failed")
