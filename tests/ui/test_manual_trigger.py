"""A manual trigger inspects and never pushes a part off; every ERROR keeps its frame
(issue 14, item 7).

The line's own trigger here is ``hardware`` (every frame is a part); Space is the operator's
extra, manual trigger. The camera shows two parts at once, so every inspection is an ERROR
("2 part-sized blobs"), which the recipe's ``decision.on_error = reject`` would reject.
Real window, real engine, real keys; the records are read back from the SQLite file.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from station.config import load_recipe
from tests.ui.test_gui import activate, assets, make_window, write_recipe  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def wait_until(condition, timeout_s: float = 8.0) -> None:
    """Run the event loop until ``condition`` holds (``QTest.qWait`` stops delivering timer
    events once a test in this process has run ``run_app``)."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        QApplication.processEvents()
        time.sleep(0.01)


def _two_parts_in_view(folder: Path) -> None:
    """The camera's only picture: two parts side by side."""
    from station.sim import render_part

    frames = folder / "frames"
    shutil.rmtree(frames)
    frames.mkdir()
    rng = np.random.default_rng(5)
    pair = np.concatenate([render_part(rng, (120, 200)).image,
                           render_part(rng, (120, 200)).image], axis=1)
    cv2.imwrite(str(frames / "00.png"), pair)


def _rows(database: Path) -> list[dict]:
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM parts ORDER BY id")]


def test_space_inspects_without_firing_and_the_error_frame_can_be_reviewed(
        qtbot, assets, tmp_path, make_window):  # noqa: F811 (fixtures)
    path = write_recipe(tmp_path, assets)
    _two_parts_in_view(tmp_path)
    window = make_window(path)
    database = load_recipe(path).records.database
    qtbot.keyClick(window, Qt.Key.Key_F5)
    wait_until(lambda: window.engine.stats().parts >= 2)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    wait_until(lambda: any(r["trigger_source"] == "manual" for r in window.engine.records.recent(50)))
    qtbot.keyClick(window, Qt.Key.Key_F5)
    window.engine.counts(wait=True)  # every row written
    time.sleep(1.0)  # the hardware parts' reject points (delay_ms = 300) have passed
    rows = _rows(database)
    manual = [r for r in rows if r["trigger_source"] == "manual"]
    line = [r for r in rows if r["trigger_source"] == "hardware"]
    assert len(manual) == 1 and line
    m = manual[0]
    assert m["verdict"] == "ERROR" and "part-sized blobs" in m["error"]
    # the manual part never reached the reject output, and its row says so
    assert m["reject_sent"] == 0 and m["reject_action"] == "not_fired"
    assert "manual trigger" in m["reject_reason"]
    assert window.engine.scheduler.outcome(m["part_id"]) is None
    # the line's own parts still get the fail-safe side: rejected on ERROR
    assert any(r["reject_action"] == "reject" for r in line)

    # every ERROR row kept its frame: the browser shows it, with the trigger
    images = window.engine.records.get(m["part_id"])["images"]
    assert [i["kind"] for i in images] == ["frame"] and Path(images[0]["path"]).is_file()
    assert all(any(i["kind"] == "frame" for i in window.engine.records.get(r["part_id"])["images"])
               for r in line)
    window.show_rejects()
    browser = window.rejects_dialog
    activate(qtbot, browser)
    qtbot.mouseClick(browser.with_errors, Qt.MouseButton.LeftButton)
    row = next(i for i, r in enumerate(browser.rows) if r["part_id"] == m["part_id"])
    browser.table.selectRow(row)
    assert browser.crop.pixmap() is not None and not browser.crop.pixmap().isNull()
    assert "no image stored" not in browser.crop.text()
    assert "trigger: manual" in browser.detail.text()
