"""One station per database: a lock file beside it, held with ``flock``.

A second ``Records`` on the same database is refused with a one-line ``RecordsError``, so two
stations never number parts alike or write reject outcomes onto each other's rows.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from station.records.rows import RecordsError

try:
    import fcntl
except ImportError:  # Windows: no flock; one station per database is then up to the user
    fcntl = None  # type: ignore[assignment]


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

