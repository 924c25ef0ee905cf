"""Inspection records: one SQLite row per part, reject images beside it, a disk budget.

The inspection thread only calls ``submit(row, images)``, which puts the part on a bounded
queue and returns at once; a writer thread encodes images, writes them (temporary name, then
rename, so a crash never leaves a half PNG under a real name) and commits the part's row in
its own transaction, so a killed process loses at most the part in flight.

Durability: WAL mode with ``synchronous=FULL``. In WAL mode NORMAL survives a killed process
but a power cut may roll back every commit since the last checkpoint; FULL syncs the WAL at
each commit, so a power cut loses at most the part in flight too. Parts come at most tens
per second and the sync happens on the writer thread, never the inspection thread, so the
cost (about a millisecond per part on an SSD) buys records of the parts just before a line
stop, the ones people ask about.

A full disk never loses a row. The row is committed first; its images are optional and
attached after. Images stop while the disk's free space is under ``min_free_mb`` (a reserve
kept for the rows) or the image budget is spent; an image that cannot be written raises the
disk alarm once per episode and leaves the row as it is. A row whose INSERT fails (the
database's disk is full) is kept in memory, in order, with an alarm, and written as soon as
the database takes writes again (retried every ``retry_s`` and before each new part).

One station per database: a lock file (``<database>.lock``, held with ``flock``) refuses a
second ``Records`` on the same database with a one-line ``RecordsError``, so two stations
never number parts alike or write reject outcomes onto each other's rows.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import queue
import re
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock; one station per database is then up to the user
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

VERDICTS = ("PASS", "REJECT", "ERROR")

SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    part_id TEXT NOT NULL,
    time_iso TEXT NOT NULL,
    time_epoch REAL NOT NULL,
    recipe TEXT NOT NULL DEFAULT '',
    model_versions TEXT NOT NULL DEFAULT '{}',
    ae_score_raw REAL,
    ae_score REAL,
    cls_score_raw REAL,
    cls_score REAL,
    verdict TEXT NOT NULL CHECK (verdict IN ('PASS', 'REJECT', 'ERROR')),
    reasons TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    latency_ms REAL,
    reject_sent INTEGER,
    reject_action TEXT,
    reject_reason TEXT,
    reject_timing_ms REAL
);
CREATE INDEX IF NOT EXISTS parts_part_id ON parts (part_id);
CREATE INDEX IF NOT EXISTS parts_time ON parts (time_epoch);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    part_row INTEGER NOT NULL REFERENCES parts (id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    time_epoch REAL NOT NULL,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS images_live ON images (deleted_at, verdict, id);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_iso TEXT NOT NULL,
    time_epoch REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_iso TEXT NOT NULL,
    time_epoch REAL NOT NULL,
    who TEXT NOT NULL,
    key TEXT NOT NULL,
    old TEXT,
    new TEXT
);
"""

PART_COLUMNS = (
    "part_id", "time_iso", "time_epoch", "recipe", "model_versions", "ae_score_raw", "ae_score",
    "cls_score_raw", "cls_score", "verdict", "reasons", "error", "latency_ms", "reject_sent",
    "reject_action", "reject_reason", "reject_timing_ms",
)


class RecordsError(RuntimeError):
    """A records setting or file that cannot be used; the message says which and why."""


@dataclass
class PartRecord:
    """One inspected part, as the engine knows it when the verdict is in."""

    part_id: str
    verdict: str  # "PASS" | "REJECT" | "ERROR"
    recipe: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)
    ae_score_raw: float | None = None
    ae_score: float | None = None  # normalized: 1.0 = threshold
    cls_score_raw: float | None = None
    cls_score: float | None = None
    reasons: str = ""
    error: str = ""
    latency_ms: float | None = None
    time_epoch: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: expected one of {', '.join(VERDICTS)}")
        # sqlite3 binds neither numpy scalars nor None into NOT NULL text: normalize here,
        # on the inspection thread, so the writer never refuses a row
        self.part_id = str(self.part_id)
        for name in ("recipe", "reasons", "error"):
            setattr(self, name, "" if getattr(self, name) is None else str(getattr(self, name)))
        self.model_versions = {str(k): str(v) for k, v in (self.model_versions or {}).items()}
        for name in ("ae_score_raw", "ae_score", "cls_score_raw", "cls_score", "latency_ms"):
            value = getattr(self, name)
            setattr(self, name, None if value is None else float(value))
        self.time_epoch = float(self.time_epoch)


@dataclass
class RecordsSettings:
    """The recipe's ``[records]`` section."""

    database: str = "records/station.sqlite"
    images_dir: str = "records/images"
    save_rejects: bool = True
    pass_sample_rate: float = 0.01
    disk_budget_mb: float = 2000.0
    min_free_mb: float = 100.0  # free disk space images never eat into: room for the rows

    @classmethod
    def from_recipe(cls, recipe) -> RecordsSettings:
        r = getattr(recipe, "records", recipe)
        return cls(**{f.name: getattr(r, f.name) for f in fields(cls) if hasattr(r, f.name)})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def parse_since(since: str | float | datetime | None) -> float | None:
    """An ISO date/time (naive = local time), a datetime or epoch seconds → epoch seconds."""
    if since is None or since == "":
        return None
    if isinstance(since, int | float):
        return float(since)
    if isinstance(since, datetime):
        return since.timestamp()
    try:
        return datetime.fromisoformat(str(since)).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {since!r}: expected an ISO date or time such as 2026-11-23 or "
            "2026-11-23T06:00:00"
        ) from None


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def check_database_path(database: str | Path) -> Path:
    """Make sure the database's folder exists and can hold it; RecordsError saying why not.

    SQLite itself only says "unable to open database file"; this names the path and the
    reason (a folder, a pseudo-filesystem, a folder that cannot be created or written).
    """
    path = Path(database)
    where = f"records database {path}"
    try:
        is_dir, resolved = path.is_dir(), path.resolve()
    except OSError as exc:  # e.g. a folder on the way that this user may not enter
        raise RecordsError(f"{where}: {exc.strerror or exc}") from None
    if is_dir:
        raise RecordsError(f"{where}: is a folder; expected a file such as "
                           f"{path / 'station.sqlite'}")
    for root in _PSEUDO_FILESYSTEMS:
        if resolved.is_relative_to(root):
            raise RecordsError(f"{where}: {root} is a system pseudo-filesystem, not a disk; "
                               "expected a path on a disk")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecordsError(f"{where}: cannot create its folder {path.parent}: "
                           f"{exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise RecordsError(f"{where}: folder {path.parent} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise RecordsError(f"{where}: file is not readable and writable")
    return path


def connect(database: str | Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating if needed) a records database in WAL mode with the schema."""
    path = check_database_path(database)
    try:
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False,
                               isolation_level=None)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise RecordsError(f"records database {path}: cannot open: {exc}") from exc
    if str(mode).lower() != "wal":
        raise RecordsError(f"records database {path}: WAL mode refused (journal_mode={mode})")
    conn.row_factory = sqlite3.Row
    return conn


class StationLock:
    """``<database>.lock`` held with ``flock`` while a station records into the database.

    Another process is refused. Within one process the lock is shared (counted), because
    the GUI builds the new engine of a reloaded recipe before it closes the old one: that
    is one station handing over, not two stations. The kernel drops the lock when the
    process ends, even on ``kill -9``, so a crash never leaves a database locked. The file
    holds the holder's pid for the message.
    """

    _held: dict[str, list[int]] = {}  # lock path -> [fd, users] in this process
    _guard = threading.Lock()

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._key = str(self.path.resolve())
        self._holding = False
        if fcntl is None:
            return
        with StationLock._guard:
            held = StationLock._held.get(self._key)
            if held is not None:
                held[1] += 1
            else:
                StationLock._held[self._key] = [self._acquire(database), 1]
            self._holding = True

    def _acquire(self, database: Path) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RecordsError(f"records database {database}: cannot open the lock file "
                               f"{self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RecordsError(
                f"records database {database} is in use by another station (pid {holder}, "
                f"lock {self.path}); give each station its own records.database") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def release(self) -> None:
        if not self._holding:
            return
        self._holding = False
        with StationLock._guard:
            held = StationLock._held[self._key]
            held[1] -= 1
            if held[1] == 0:
                del StationLock._held[self._key]
                os.close(held[0])  # closing drops the flock


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
        self.images_dir = Path(images_dir)
        self.disk_budget_bytes = int(disk_budget_mb * 1024 * 1024)
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.pass_sample_rate = float(pass_sample_rate)
        self.save_rejects = bool(save_rejects)
        self.retry_s = float(retry_s)
        self.max_backlog = int(max_backlog)
        check_database_path(self.database_path)
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
        self._passes_seen = 0
        self._disk_fault = False
        self._name_seq = itertools.count()
        self.dropped = 0  # submissions refused because the writer was too far behind
        self.image_failures = 0
        # writes the database refused (disk full), oldest first, retried in order
        self._backlog: deque[tuple] = deque()
        self._db_fault = False
        self.lost_rows = 0  # rows given up: the backlog overflowed max_backlog, or at close
        self._closed = False
        self._sweep_temp_files()
        self._writer = threading.Thread(target=self._writer_loop, name="records-writer",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def from_recipe(cls, recipe, **kwargs) -> Records:
        s = RecordsSettings.from_recipe(recipe)
        kwargs.setdefault("min_free_mb", s.min_free_mb)
        return cls(s.database, s.images_dir, s.disk_budget_mb, s.pass_sample_rate,
                   s.save_rejects, **kwargs)

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
        with self._read_lock:
            rows = [self._row_dict(r) for r in self._read.execute(sql, args).fetchall()]
        return rows

    def counts(self, since: str | float | datetime | None = None) -> dict[str, int]:
        """inspected, passed, rejected, errors (since an ISO time / epoch, or all)."""
        t0 = parse_since(since)
        sql = ("SELECT count(*), sum(verdict='PASS'), sum(verdict='REJECT'), sum(verdict='ERROR') "
               "FROM parts")
        args: tuple = ()
        if t0 is not None:
            sql += " WHERE time_epoch >= ?"
            args = (t0,)
        with self._read_lock:
            n, p, r, e = self._read.execute(sql, args).fetchone()
        return {"inspected": n or 0, "passed": p or 0, "rejected": r or 0, "errors": e or 0}

    def get(self, part_id: str) -> dict | None:
        """The latest row for ``part_id`` with its images (absolute paths, deleted ones noted)."""
        with self._read_lock:
            r = self._read.execute("SELECT * FROM parts WHERE part_id = ? ORDER BY id DESC LIMIT 1",
                                   (str(part_id),)).fetchone()
            return None if r is None else self._row_dict(r)

    def alarms(self, unacknowledged_only: bool = False, n: int = 100) -> list[dict]:
        sql = "SELECT * FROM alarms"
        if unacknowledged_only:
            sql += " WHERE acknowledged_at IS NULL"
        with self._read_lock:
            return [dict(r) for r in self._read.execute(sql + " ORDER BY id DESC LIMIT ?", (n,))]

    def raise_alarm(self, kind: str, message: str) -> int:
        """Record an alarm (e.g. "serial link lost") and tell the listeners; returns its id."""
        now = time.time()
        with self._read_lock:
            cur = self._read.execute(
                "INSERT INTO alarms (time_iso, time_epoch, kind, message) VALUES (?, ?, ?, ?)",
                (_iso(now), now, kind, message))
        for cb in list(self._alarm_listeners):
            try:
                cb(kind, message)
            except Exception:
                log.exception("alarm listener failed")
        return int(cur.lastrowid)

    def acknowledge_alarm(self, alarm_id: int, who: str) -> None:
        if not who:
            raise ValueError("acknowledging an alarm needs the name of who acknowledges it")
        with self._read_lock:
            cur = self._read.execute(
                "UPDATE alarms SET acknowledged_at = ?, acknowledged_by = ? "
                "WHERE id = ? AND acknowledged_at IS NULL", (_iso(time.time()), who, alarm_id))
        if cur.rowcount == 0:
            raise ValueError(f"alarm {alarm_id} does not exist or is already acknowledged")

    def record_event(self, who: str, key: str, old, new) -> None:
        """A settings change by an engineer (who, which key, old and new value)."""
        now = time.time()
        with self._read_lock:
            self._read.execute(
                "INSERT INTO events (time_iso, time_epoch, who, key, old, new) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_iso(now), now, who, key, None if old is None else str(old),
                 None if new is None else str(new)))

    def events(self, n: int = 100) -> list[dict]:
        with self._read_lock:
            return [dict(r) for r in self._read.execute(
                "SELECT * FROM events ORDER BY id DESC LIMIT ?", (n,))]

    def image_bytes(self) -> int:
        """Bytes of live (not yet deleted) images, as the budget counts them."""
        with self._read_lock:
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
            wanted = bool(item[2]) and self._wants_images(item[1])
            self._write_item(conn, ("part", item[1]), item[2] if wanted else None)
        elif item[0] == "reject":
            self._write_item(conn, item, None)

    def _write_item(self, conn: sqlite3.Connection, item: tuple,
                    images: dict[str, np.ndarray] | None) -> None:
        """Write a row (or a reject outcome) in order; keep it in memory if the database refuses."""
        if self._backlog and not self._retry_backlog(conn):
            self._keep(item, None)  # behind older rows still waiting: keep the order
            if images:
                self.image_failures += len(images)
            return
        try:
            row_id = self._apply(conn, item)
        except sqlite3.Error as exc:
            self._rollback(conn)
            try:  # a full disk: the WAL's own space, checkpointed and truncated, may be enough
                self._checkpoint(conn)
                row_id = self._apply(conn, item)
            except sqlite3.Error:
                self._rollback(conn)
                self._keep(item, exc)
                if images:
                    self.image_failures += len(images)
                return
        if images and row_id is not None:
            self._attach_images(conn, row_id, item[1], images)

    def _apply(self, conn: sqlite3.Connection, item: tuple) -> int | None:
        if item[0] == "part":
            return self._insert_row(conn, item[1])
        self._write_reject(conn, *item[1:])
        return None

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

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
            self._alarm("records", f"records database {self.database_path} refuses writes "
                        f"({exc}); rows are kept in memory and written when it takes writes "
                        "again (free disk space?)", to_db=False)

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database and truncate it, giving its disk space back."""
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _retry_backlog(self, conn: sqlite3.Connection) -> bool:
        """Write the kept rows, oldest first; True once none is left."""
        if self._backlog:
            try:
                self._checkpoint(conn)
            except sqlite3.Error:
                pass
        while self._backlog:
            try:
                self._apply(conn, self._backlog[0])
            except sqlite3.Error:
                self._rollback(conn)
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

    def _wants_images(self, row: PartRecord) -> bool:
        if self.disk_budget_bytes <= 0:
            return False
        if row.verdict != "PASS":
            return self.save_rejects
        if self.pass_sample_rate <= 0:
            return False
        # deterministic sampling: exactly the chosen share, spread evenly over the passes
        before = int(self._passes_seen * self.pass_sample_rate)
        self._passes_seen += 1
        return int(self._passes_seen * self.pass_sample_rate) > before

    def _insert_row(self, conn: sqlite3.Connection, row: PartRecord) -> int:
        """The part's row, committed on its own: nothing about images can hold it back."""
        values = asdict(row)
        values["time_iso"] = _iso(row.time_epoch)
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
        return int(cur.lastrowid)

    def _attach_images(self, conn: sqlite3.Connection, row_id: int, row: PartRecord,
                       images: dict[str, np.ndarray]) -> None:
        """Write the images and link them to the committed row; a failure costs images only."""
        written = 0
        for kind, path, size in self._write_images(row, images):
            try:
                conn.execute(
                    "INSERT INTO images (part_row, kind, path, bytes, verdict, time_epoch) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (row_id, kind, path, size, row.verdict,
                                                  row.time_epoch))
                written += 1
            except sqlite3.Error as exc:  # no row for it: do not leave an orphan file
                self._rollback(conn)
                self.image_failures += 1
                (self.images_dir / path).unlink(missing_ok=True)
                self._disk_alarm(f"cannot record image {path} of part {row.part_id}: {exc}")
        if written:
            try:
                self._enforce_budget(conn)
            except sqlite3.Error as exc:
                self._rollback(conn)
                log.error("image budget not enforced: %s", exc)

    def _room_for(self, size: int) -> str | None:
        """Why an image of ``size`` bytes must not be written now (free-space reserve), or None."""
        folder = self.images_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return None  # the write itself will say what is wrong
        if free - size < self.min_free_bytes:
            return (f"only {free / 1048576:.1f} MB free on the disk of {self.images_dir}, "
                    f"{self.min_free_bytes / 1048576:.0f} MB are kept for the rows "
                    "(records.min_free_mb)")
        return None

    def _disk_alarm(self, message: str) -> None:
        if not self._disk_fault:
            self._disk_fault = True
            self._alarm("disk", f"{message}; parts are still recorded, without images")

    def _write_images(self, row: PartRecord, images: dict[str, np.ndarray]) -> list:
        day = datetime.fromtimestamp(row.time_epoch).strftime("%Y-%m-%d")
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", row.part_id)[:64]
        stamp = f"{int(row.time_epoch * 1000)}_{next(self._name_seq) % 1000:03d}"
        written = []
        for kind, image in images.items():
            rel = f"{day}/{stamp}_{safe_id}_{re.sub(r'[^A-Za-z0-9_-]', '_', kind)}.png"
            target = self.images_dir / rel
            tmp = target.with_name(target.name + ".tmp")
            try:
                ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
                if not ok:
                    raise ValueError("cv2.imencode refused the image")
                no_room = self._room_for(len(buf))
                if no_room:
                    self.image_failures += 1
                    self._disk_alarm(f"record images paused: {no_room}")
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(buf.tobytes())
                os.replace(tmp, target)
                written.append((kind, rel, len(buf)))
            except OSError as exc:  # ENOSPC, EFBIG, unwritable or vanished folder: keep the row
                self.image_failures += 1
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass
                self._disk_alarm(f"cannot write record images to {self.images_dir}: {exc}")
            except (ValueError, cv2.error) as exc:
                self.image_failures += 1
                log.error("part %s image %s not saved: %s", row.part_id, kind, exc)
        if written and self._disk_fault:
            self._disk_fault = False
            log.info("record images are being written again")
        return written

    def _enforce_budget(self, conn: sqlite3.Connection) -> None:
        """Delete the oldest PASS images first, then the oldest reject/error images."""
        total = conn.execute(
            "SELECT coalesce(sum(bytes), 0) FROM images WHERE deleted_at IS NULL").fetchone()[0]
        if total <= self.disk_budget_bytes:
            return
        victims = conn.execute(
            "SELECT id, path, bytes FROM images WHERE deleted_at IS NULL "
            "ORDER BY (verdict != 'PASS'), id").fetchall()
        now = time.time()
        deleted = []
        for image_id, rel, size in victims:
            if total <= self.disk_budget_bytes:
                break
            try:
                (self.images_dir / rel).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete %s for the disk budget: %s", rel, exc)
                continue
            total -= size
            deleted.append((now, image_id))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE images SET deleted_at = ? WHERE id = ?", deleted)
        conn.execute("COMMIT")

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

    def _sweep_temp_files(self) -> None:
        """Remove half-written images a killed process left behind."""
        try:
            leftovers = list(self.images_dir.glob("*/*.png.tmp")) if self.images_dir.is_dir() else []
        except OSError as exc:  # an unreadable image folder: the first image write says so
            log.warning("cannot look for half-written images in %s: %s", self.images_dir, exc)
            return
        for tmp in leftovers:
            try:
                tmp.unlink()
            except OSError:
                pass


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading ``'`` (OWASP rule).

    Product names, reasons and errors come from recipes and models, so ``=HYPERLINK(...)``
    must reach the spreadsheet as text. Numbers stay numbers (-0.5 is not a formula).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_csv(database: str | Path, out: str | Path, since: str | float | None = None) -> int:
    """Write the parts (optionally since a time) to CSV; returns the number of rows.

    Text cells that start like a formula are escaped (:func:`csv_safe`). Problems with the
    database or the output file are one-line ``RecordsError``s naming the file."""
    db = Path(database)
    if db.is_dir():
        raise RecordsError(f"records database {db}: is a folder, not a database file")
    if not db.is_file():
        raise RecordsError(f"records database {db} does not exist")
    t0 = parse_since(since)
    try:  # read-only, so exporting works beside a running station
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)  # as_uri escapes
    except sqlite3.Error as exc:
        raise RecordsError(f"records database {db}: cannot open: {exc}") from None
    try:
        sql = (f"SELECT id, {', '.join(PART_COLUMNS)}, (SELECT group_concat(path, ';') FROM images "
               "WHERE images.part_row = parts.id AND deleted_at IS NULL) AS images FROM parts")
        args: tuple = ()
        if t0 is not None:
            sql += " WHERE time_epoch >= ?"
            args = (t0,)
        try:
            cur = conn.execute(sql + " ORDER BY id", args)
        except sqlite3.DatabaseError as exc:
            raise RecordsError(f"{db} is not a station records database: {exc}") from exc
        return _write_csv(cur, Path(out))
    finally:
        conn.close()


def _write_csv(cur: sqlite3.Cursor, out: Path) -> int:
    header = [d[0] for d in cur.description]
    n = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for row in cur:
                w.writerow([csv_safe(v) for v in row])
                n += 1
    except OSError as exc:
        raise RecordsError(f"{out}: cannot write the CSV: {exc.strerror or exc}") from None
    return n
