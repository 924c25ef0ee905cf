"""The trigger source column and ERROR frames in the records (issue 14, item 7): a database
made before the column existed stays readable (opened by the station: migrated; exported
read-only: the column reads ''), and every ERROR row keeps its images, even with
``save_rejects`` off."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np

from station.decision import Verdict
from station.pipeline.inspector import PartResult, review_copy
from station.pipeline.rows import MANUAL_TRIGGER, part_images, part_row
from station.records import PartRecord, Records, export_csv

OLD_PARTS = """
CREATE TABLE parts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, part_id TEXT NOT NULL, time_iso TEXT NOT NULL,
    time_epoch REAL NOT NULL, recipe TEXT NOT NULL DEFAULT '',
    model_versions TEXT NOT NULL DEFAULT '{}', ae_score_raw REAL, ae_score REAL,
    cls_score_raw REAL, cls_score REAL,
    verdict TEXT NOT NULL CHECK (verdict IN ('PASS', 'REJECT', 'ERROR')),
    reasons TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '', latency_ms REAL,
    reject_sent INTEGER, reject_action TEXT, reject_reason TEXT, reject_timing_ms REAL);
CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, part_row INTEGER NOT NULL,
    kind TEXT NOT NULL, path TEXT NOT NULL, bytes INTEGER NOT NULL, verdict TEXT NOT NULL,
    time_epoch REAL NOT NULL, deleted_at REAL);
INSERT INTO parts (part_id, time_iso, time_epoch, verdict)
    VALUES ('old-1', '2026-01-01T00:00:00+00:00', 1767225600.0, 'PASS');
"""


def _old_database(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(OLD_PARTS)
    return path


def test_an_old_database_exports_read_only_with_an_empty_trigger_column(tmp_path: Path):
    db = _old_database(tmp_path / "old.sqlite")
    out = tmp_path / "parts.csv"
    assert export_csv(db, out) == 1
    row = next(csv.DictReader(out.open(encoding="utf-8")))
    assert row["part_id"] == "old-1" and row["trigger_source"] == ""
    with sqlite3.connect(db) as conn:  # exporting did not change the file
        assert "trigger_source" not in {r[1] for r in conn.execute("PRAGMA table_info(parts)")}


def test_an_old_database_is_migrated_and_keeps_its_rows(tmp_path: Path):
    db = _old_database(tmp_path / "old.sqlite")
    with Records(db, tmp_path / "images", disk_budget_mb=10) as records:
        assert records.get("old-1")["trigger_source"] == ""
        records.submit(PartRecord(part_id="new-1", verdict="PASS", trigger_source="serial"))
        assert records.flush()
        assert records.get("new-1")["trigger_source"] == "serial"
        assert records.counts()["inspected"] == 2
    with Records(db, tmp_path / "images", disk_budget_mb=10) as again:  # idempotent
        assert again.get("new-1")["trigger_source"] == "serial"


def test_a_manual_part_row_says_so_and_that_the_reject_was_not_fired(tmp_path: Path):
    from station.config import DecisionSection

    result = PartResult(part_id="9", verdict=Verdict.ERROR, error="part several: 2 blobs",
                        trigger=MANUAL_TRIGGER,
                        frame=review_copy(np.full((1200, 1600), 90, np.uint8)))
    row = part_row(result, "screw", {}, DecisionSection())
    assert (row.trigger_source, row.reject_sent, row.reject_action) == ("manual", 0,
                                                                        "not_fired")
    images = part_images(result)
    assert list(images) == ["frame"] and max(images["frame"].shape) == 800  # downscaled
    with Records(tmp_path / "r.sqlite", tmp_path / "images", disk_budget_mb=10,
                 save_rejects=False) as records:  # reject images off: an ERROR's are kept
        records.submit(row, images)
        assert records.flush()
        stored = records.get("9")
    assert stored["reject_action"] == "not_fired" and stored["reject_sent"] == 0
    assert [i["kind"] for i in stored["images"]] == ["frame"]
    assert Path(stored["images"][0]["path"]).is_file()
