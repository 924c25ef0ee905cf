"""Record images: written beside the rows within a disk budget, never into the rows' reserve.

A row is committed first; its images are optional and attached after. Images stop while the
disk's free space is under ``min_free_mb`` (a reserve kept for the rows) or the image budget is
spent (the oldest PASS images go first, then the oldest reject/error images). An image that
cannot be written raises the disk alarm once per episode and leaves the row as it is. Files are
written under a temporary name, then renamed, so a crash never leaves a half PNG under a real
name; the temporary files a killed process left are swept at start.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from station.records.rows import PartRecord
from station.records.schema import rollback

log = logging.getLogger(__name__)


class ImageStore:
    """The images of the records: which to keep, writing them, the budget and the reserve.

    Used by the records' writer thread only. ``alarm(kind, message)`` raises a station alarm.
    """

    def __init__(self, images_dir: str | Path, disk_budget_mb: float, min_free_mb: float,
                 pass_sample_rate: float, save_rejects: bool,
                 alarm: Callable[[str, str], None]) -> None:
        self.images_dir = Path(images_dir)
        self.disk_budget_bytes = int(disk_budget_mb * 1024 * 1024)
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.pass_sample_rate = float(pass_sample_rate)
        self.save_rejects = bool(save_rejects)
        self.failures = 0  # images not saved (disk full, reserve reached, encoding refused)
        self._alarm = alarm
        self._passes_seen = 0
        self._disk_fault = False
        self._name_seq = itertools.count()

    def wanted(self, row: PartRecord) -> bool:
        """Whether this part's images are kept: every ERROR's (its frame is the only way to
        see why the part could not be inspected), rejects unless ``save_rejects`` is off,
        and a sampled share of passes."""
        if self.disk_budget_bytes <= 0:
            return False
        if row.verdict == "ERROR":
            return True
        if row.verdict != "PASS":
            return self.save_rejects
        if self.pass_sample_rate <= 0:
            return False
        # deterministic sampling: exactly the chosen share, spread evenly over the passes
        before = int(self._passes_seen * self.pass_sample_rate)
        self._passes_seen += 1
        return int(self._passes_seen * self.pass_sample_rate) > before

    def attach(self, conn: sqlite3.Connection, row_id: int, row: PartRecord,
               images: dict[str, np.ndarray]) -> None:
        """Write the images and link them to the committed row; a failure costs images only."""
        written = 0
        for kind, path, size in self._write_files(row, images):
            try:
                conn.execute(
                    "INSERT INTO images (part_row, kind, path, bytes, verdict, time_epoch) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (row_id, kind, path, size, row.verdict,
                                                  row.time_epoch))
                written += 1
            except sqlite3.Error as exc:  # no row for it: do not leave an orphan file
                rollback(conn)
                self.failures += 1
                (self.images_dir / path).unlink(missing_ok=True)
                self._disk_alarm(f"cannot record image {path} of part {row.part_id}: {exc}")
        if written:
            try:
                self._enforce_budget(conn)
            except sqlite3.Error as exc:
                rollback(conn)
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

    def _write_files(self, row: PartRecord, images: dict[str, np.ndarray]) -> list:
        """Encode and write each image; (kind, relative path, bytes) of those written."""
        day = datetime.fromtimestamp(row.time_epoch).strftime("%Y-%m-%d")
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", row.part_id)[:64]
        stamp = f"{int(row.time_epoch * 1000)}_{next(self._name_seq) % 1000:03d}"
        written = []
        for kind, image in images.items():
            rel = f"{day}/{stamp}_{safe_id}_{re.sub(r'[^A-Za-z0-9_-]', '_', kind)}.png"
            size = self._write_file(row, kind, image, self.images_dir / rel)
            if size is not None:
                written.append((kind, rel, size))
        if written and self._disk_fault:
            self._disk_fault = False
            log.info("record images are being written again")
        return written

    def _write_file(self, row: PartRecord, kind: str, image: np.ndarray,
                    target: Path) -> int | None:
        """One PNG under a temporary name, then renamed; its size, or None (counted, alarmed)."""
        tmp = target.with_name(target.name + ".tmp")
        try:
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
            if not ok:
                raise ValueError("cv2.imencode refused the image")
            no_room = self._room_for(len(buf))
            if no_room:
                self.failures += 1
                self._disk_alarm(f"record images paused: {no_room}")
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
            os.replace(tmp, target)
            return len(buf)
        except OSError as exc:  # ENOSPC, EFBIG, unwritable or vanished folder: keep the row
            self.failures += 1
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._disk_alarm(f"cannot write record images to {self.images_dir}: {exc}")
        except (ValueError, cv2.error) as exc:
            self.failures += 1
            log.error("part %s image %s not saved: %s", row.part_id, kind, exc)
        return None

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

    def sweep_temp_files(self) -> None:
        """Remove half-written images a killed process left behind."""
        try:
            leftovers = list(self.images_dir.glob("*/*.png.tmp")) if self.images_dir.is_dir() else []
        except OSError as exc:  # an unreadable image folder: the first image write says so
            log.warning("cannot look for half-written images in %s: %s", self.images_dir, exc)
            return
        for tmp in leftovers:
            with contextlib.suppress(OSError):
                tmp.unlink()

