"""The records database: its tables, and opening it (WAL, checked path) with one-line errors."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from station.records.rows import RecordsError

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
    reject_timing_ms REAL,
    trigger_source TEXT NOT NULL DEFAULT ''
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
    "reject_action", "reject_reason", "reject_timing_ms", "trigger_source",
)

# Columns added after the first release, with the definition an older database gets them
# with (``ALTER TABLE``): old rows read '' (not known), and old databases stay readable.
ADDED_PART_COLUMNS = {
    "trigger_source": "TEXT NOT NULL DEFAULT ''",  # manual | serial | free_run | hardware | ...
}


def part_columns(conn: sqlite3.Connection) -> set[str]:
    """The columns this database's ``parts`` table has."""
    return {str(r[1]) for r in conn.execute("PRAGMA table_info(parts)")}


def migrate(conn: sqlite3.Connection) -> None:
    """Give a database made by an older station the columns added since (idempotent)."""
    have = part_columns(conn)
    for name, definition in ADDED_PART_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE parts ADD COLUMN {name} {definition}")


def part_select_list(conn: sqlite3.Connection) -> str:
    """``PART_COLUMNS`` for a SELECT, with '' for any column an older, read-only database
    does not have yet (exporting must not write to the database)."""
    have = part_columns(conn)
    return ", ".join(c if c in have else f"'' AS {c}" for c in PART_COLUMNS)


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def pseudo_filesystem(path: str | Path) -> str | None:
    """The system pseudo-filesystem ``path`` lies on (no file can be made there, whatever
    the permissions say to root), or None.

    >>> pseudo_filesystem("/proc/x.json"), pseudo_filesystem("/tmp/x.json")
    ('/proc', None)
    """
    resolved = Path(path).resolve()
    return next((root for root in _PSEUDO_FILESYSTEMS if resolved.is_relative_to(root)), None)


def damaged(exc: BaseException | None) -> bool:
    """Whether SQLite says the file itself is damaged (not locked, closed or out of room)."""
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def check_images_dir(folder: str | Path) -> Path:
    """Make the images folder now and make sure it takes files; a :class:`RecordsError`
    naming ``records.images_dir`` if not (one on /proc or a read-only disk was accepted at
    start, and every image of the run then failed with an alarm)."""
    path = Path(folder)
    root = pseudo_filesystem(path)
    if root:
        raise RecordsError(f"records.images_dir: {root} is a system pseudo-filesystem, "
                           "not a disk; expected a folder on a disk")
    if path.exists() and not path.is_dir():
        raise RecordsError(f"records.images_dir: {path} is a file; expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecordsError(f"records.images_dir: cannot create {path}: "
                           f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RecordsError(f"records.images_dir: folder {path} is not writable")
    return path


def check_database_path(database: str | Path) -> Path:
    """Make sure the database's folder exists and can hold it; RecordsError saying why not.

    SQLite itself only says "unable to open database file"; this names the path and the
    reason (a folder, a pseudo-filesystem, a folder that cannot be created or written).
    """
    path = Path(database)
    where = f"records database {path}"
    try:
        is_dir, root = path.is_dir(), pseudo_filesystem(path)
    except OSError as exc:  # e.g. a folder on the way that this user may not enter
        raise RecordsError(f"{where}: {exc.strerror or exc}") from None
    if is_dir:
        raise RecordsError(f"{where}: is a folder; expected a file such as "
                           f"{path / 'station.sqlite'}")
    if root:
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
        migrate(conn)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise RecordsError(f"records database {path}: cannot open: {exc}") from exc
    if str(mode).lower() != "wal":
        raise RecordsError(f"records database {path}: WAL mode refused (journal_mode={mode})")
    conn.row_factory = sqlite3.Row
    return conn



def rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction, if one is open; a rollback that fails leaves nothing to undo."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it, giving its disk space back."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
