"""Faults nobody can miss: the engine's one line state on the tile, the status bar and the
alarm list, with real widgets offscreen over a real engine.

A lost camera (a folder source whose folder is moved away) and a reject port that does not
exist (``reject.allow_url_ports`` lets the port be a path under ``tmp_path``) must show on
the tile within 2 s and stay there, acknowledged or not, until the cause is gone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QApplication

from station.config import hash_pin
from tests.ui.test_gui import assets, make_window, write_recipe  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def event_loop_runs(qapp) -> None:
    """A test that ran ``run_app`` (``app.exec()``, then ``quit()``) leaves nested event
    loops returning at once (``qtbot.wait`` with them); one more ``exec`` puts that right."""
    loop = QEventLoop()
    QTimer.singleShot(30, loop.quit)
    started = time.monotonic()
    loop.exec()
    if time.monotonic() - started < 0.02:
        QTimer.singleShot(0, QApplication.quit)
        qapp.exec()


def ack_all(qtbot, window) -> None:
    """Press every Acknowledge button the banner shows."""
    for row in list(window.alarms.rows.values()):
        qtbot.wait(50)  # the banner lays itself out again after each acknowledgement
        if row.ack.isVisible():
            qtbot.mouseClick(row.ack, Qt.MouseButton.LeftButton)


def test_a_lost_camera_stays_on_the_tile_acknowledged_or_not(qtbot, assets, tmp_path,  # noqa: F811
                                                             make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.verdict.verdict in ("PASS", "REJECT", "ERROR"), timeout=8000)
    assert window.verdict.word.text() in ("PASS", "REJECT", "ERROR")
    assert window.status.labels["line"].full_text == "INSPECTING"

    (tmp_path / "frames").rename(tmp_path / "unplugged")  # the camera goes away
    lost = time.monotonic()
    qtbot.waitUntil(lambda: window.verdict.word.text() == "NOT INSPECTING", timeout=2000)
    assert time.monotonic() - lost < 2.0
    assert "camera lost" in window.verdict.detail.text()
    assert window.status.labels["line"].full_text.startswith("NOT INSPECTING: camera lost")
    qtbot.waitUntil(lambda: bool(window.alarms.rows), timeout=2000)
    (row,) = window.alarms.rows.values()
    assert row.title.text() == "CAMERA LOST" and "NOT INSPECTING" in row.message.text()
    qtbot.waitUntil(lambda: window.live.stale, timeout=3000)  # the last frame is not live

    qtbot.mouseClick(row.ack, Qt.MouseButton.LeftButton)
    qtbot.wait(600)  # engine events and the banner's blink go round
    assert window.alarms.isVisible() and not row.ack.isVisible()  # quieter, not gone
    assert "acknowledged by operator" in row.message.text()
    assert not window.alarms.active and window.alarms.holding  # steady, no more blinking
    assert window.verdict.word.text() == "NOT INSPECTING"
    assert window.live.stale
    recorded = window.engine.records.alarms()
    assert any(a["kind"] == "camera_lost" and a["acknowledged_by"] == "operator"
               for a in recorded)

    (tmp_path / "unplugged").rename(tmp_path / "frames")  # plugged back in
    qtbot.waitUntil(lambda: window.verdict.word.text() != "NOT INSPECTING", timeout=10000)
    qtbot.waitUntil(lambda: not window.alarms.isVisible(), timeout=2000)  # acked and over
    qtbot.waitUntil(lambda: not window.live.stale, timeout=2000)
    assert window.status.labels["line"].full_text == "INSPECTING"


def _dead_port_recipe(tmp_path: Path, assets: Path, port: Path) -> Path:  # noqa: F811
    path = write_recipe(tmp_path, assets, ae=0.05)  # every part is a REJECT
    text = path.read_text().replace('port = "loop://"',
                                    f'port = "{port}"\nallow_url_ports = true')
    path.write_text(text)
    return path


def test_a_dead_reject_output_is_not_an_ordinary_reject(qtbot, assets, tmp_path,  # noqa: F811
                                                        make_window):  # noqa: F811
    port = tmp_path / "ttyUSB9"  # no such device
    window = make_window(_dead_port_recipe(tmp_path, assets, port))
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    started = time.monotonic()
    qtbot.waitUntil(lambda: window.verdict.word.text() == "REJECT OUTPUT DOWN", timeout=2000)
    assert time.monotonic() - started < 2.0
    assert "serial link disconnected" in window.verdict.detail.text()  # short, read from afar
    assert str(port) in window.verdict.detail.toolTip()  # all of it on hover
    assert window.status.labels["line"].full_text.startswith("REJECT OUTPUT DOWN")
    # parts are judged REJECT and their outputs fail: an alarm of its own, raised and kept
    qtbot.waitUntil(lambda: any(r.alarm.kind == "reject_output"
                                for r in window.alarms.rows.values()), timeout=5000)
    row = next(r for r in window.alarms.rows.values() if r.alarm.kind == "reject_output")
    assert row.title.text() == "REJECT OUTPUT FAILED"
    assert window.verdict.verdict == "REJECT"  # judged so, and still the tile says the fault
    assert window.verdict.word.text() == "REJECT OUTPUT DOWN"
    assert "last part #" in window.verdict.detail.text()

    ack_all(qtbot, window)
    qtbot.wait(700)
    assert window.alarms.isVisible() and window.alarms.rows
    faults = [r for r in window.alarms.rows.values()
              if r.alarm.kind in ("serial_lost", "reject_output")]
    assert len(faults) == 2 and all(r.acknowledged and r.isVisible() for r in faults), [
        (r.alarm.kind, r.alarm.acknowledged_by, r.alarm.active, r.isVisible()) for r in faults]
    assert window.verdict.word.text() == "REJECT OUTPUT DOWN"

    # the rejects browser marks the rows whose output failed
    qtbot.keyClick(window, Qt.Key.Key_F5)  # stop
    qtbot.waitUntil(lambda: window.verdict.word.text() == "STOPPED", timeout=2000)
    window.engine.records.flush(5.0)
    qtbot.mouseClick(window.rejects_button, Qt.MouseButton.LeftButton)
    browser = window.rejects_dialog
    output_col = [browser.table.horizontalHeaderItem(c).text()
                  for c in range(browser.table.columnCount())].index("Output")
    marks = [browser.table.item(i, output_col).text() for i in range(browser.table.rowCount())]
    assert "OUTPUT FAILED" in marks
    failed = marks.index("OUTPUT FAILED")
    browser.table.selectRow(failed)
    assert "REJECT OUTPUT FAILED" in browser.detail.text()
    browser.close()

    # stopped: parts per minute stops counting
    window.refresh_counts()
    assert window.counts.values["ppm"].text() == "0"

    # the port appears (a pty): the fault is over, the tile says so
    master, slave = os.openpty()
    try:
        port.symlink_to(os.ttyname(slave))
        qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.engine.line_state().inspecting, timeout=10000)
        qtbot.waitUntil(lambda: window.verdict.word.text() != "REJECT OUTPUT DOWN", timeout=2000)
        qtbot.waitUntil(lambda: not window.alarms.isVisible(), timeout=2000)
    finally:
        window.shutdown()
        os.close(master)
        os.close(slave)


def test_status_bar_text_is_elided_with_the_full_text_on_hover(qtbot, assets, tmp_path,  # noqa: F811
                                                                make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets, pin_hash=hash_pin("2468")))
    window.resize(1024, 600)
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    window.pin_dialog.first.setText("2468")
    qtbot.mouseClick(window.pin_dialog.ok_button, Qt.MouseButton.LeftButton)
    assert window.engineer_dock.isVisible()  # the dock takes width from the status bar
    window.refresh_stats()
    qtbot.wait(100)
    labels = list(window.status.labels.values())
    models = window.status.labels["models"]
    assert "autoencoder" in models.toolTip() and "classifier" in models.toolTip()
    for label in labels:
        if not label.isVisible():
            continue
        fits = label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()
        assert fits or (label.elided and label.shown_text().endswith("…")
                        and label.toolTip().startswith(label.text())), label.text()
    shown = [lab.geometry() for lab in labels if lab.isVisible()]
    for i, a in enumerate(shown):  # side by side, never one over another
        assert all(not a.intersects(b) for b in shown[i + 1:])
        assert a.right() <= window.status.width()
