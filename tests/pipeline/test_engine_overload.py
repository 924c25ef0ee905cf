"""The engine under a bouncing sensor, a trigger burst, overload, a missing port, a bad ROI.

What the line relies on: one part per real part (a bounce is no part); when triggers come
faster than the station inspects, the surplus is shed explicitly (counted, alarmed, the
fail-safe at the reject point, an ERROR record); every part gets its row; faults present
at start-up are alarmed like faults later on.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from station.config import load_recipe
from station.pipeline import ALARM_OVERLOAD, ALARM_SERIAL, ALARM_TRIGGER, Engine
from station.pipeline import RowFeeder as _RowFeeder
from station.records import PartRecord, Records
from tests.e2e.test_engine import PlcPeer, part_frames, wait_for, write_recipe


def rows(tmp_path: Path, sql: str = "SELECT count(*) FROM parts") -> list[tuple]:
    with sqlite3.connect(tmp_path / "records" / "station.sqlite") as db:
        return db.execute(sql).fetchall()


def test_bouncing_serial_sensor_gives_one_part_per_part(tiny_models: Path, tmp_path: Path):
    """The audit's case: TRIG twice 5 ms apart per part, debounce 50 ms: 14 parts, not 28,
    and 14 rows."""
    peer = PlcPeer()
    frames = part_frames(tmp_path / "frames", 4)
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models,
        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 30\nloop = true',
        trigger='mode = "serial"\ndebounce_ms = 50',
        reject=f'enabled = false\nport = "{peer.port}"'))
    engine = Engine(recipe)
    try:
        assert engine.link is not None and engine.link.wait_connected(5.0)
        engine.start()
        time.sleep(0.3)
        for _ in range(14):
            os.write(peer.master, b"TRIG\n")
            time.sleep(0.005)
            os.write(peer.master, b"TRIG\n")
            time.sleep(0.12)
        assert wait_for(lambda: len(engine.results()) >= 14, 20.0)
        time.sleep(0.3)
        engine.stop()
        stats = engine.stats()
    finally:
        engine.close()
        peer.close()
    assert stats.parts == 14 and stats.debounced == 14 and stats.shed == 0
    assert rows(tmp_path) == [(14,)]


def test_a_trigger_burst_is_debounced_shed_explicitly_and_fully_recorded(tiny_models: Path,
                                                                         tmp_path: Path):
    """The audit's burst: 2,000 TRIG lines in about a second. Debounced to at most one part
    per 20 ms; what the station cannot inspect is shed with the fail-safe; every part has a
    row; the reject outputs stay on time."""
    peer = PlcPeer()
    frames = part_frames(tmp_path / "frames", 4)
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models,
        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 30\nloop = true',
        trigger='mode = "serial"\ndebounce_ms = 20',
        reject=f'enabled = true\nport = "{peer.port}"\nmode = "message"\ndelay_ms = 300'))
    engine = Engine(recipe, queue_size=2)
    try:
        assert engine.link is not None and engine.link.wait_connected(5.0)
        engine.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        for _ in range(100):
            os.write(peer.master, b"TRIG\n" * 20)
            time.sleep(0.01)
        burst_s = time.monotonic() - t0
        time.sleep(1.0)
        engine.stop()
        time.sleep(0.5)
        stats = engine.stats()
        timing = engine.scheduler.timing_stats()
        shed_alarms = [a for a in engine.alarms() if a.kind == ALARM_OVERLOAD]
    finally:
        engine.close()
        peer.close()
    assert 10 <= stats.parts <= burst_s / 0.020 + 2, (stats.parts, burst_s)
    assert stats.debounced == 2000 - stats.parts
    assert rows(tmp_path) == [(stats.parts,)], "every part, inspected or shed, has its row"
    shed = rows(tmp_path, "SELECT verdict, reject_action, reject_reason, latency_ms FROM parts "
                          "WHERE error LIKE 'overload: shed%'")
    # whether this machine kept up with ~50 parts/s or not, the books balance
    assert len(shed) == stats.shed
    assert all(v == "ERROR" and a == "reject" and r.startswith("fail-safe reject: overload: shed")
               for v, a, r, _ in shed)
    assert all(ms is not None and ms > 0 for *_, ms in shed), "a shed part keeps its latency"
    if stats.shed:
        assert shed_alarms and f"{stats.shed} part(s) shed" in shed_alarms[0].message
        assert not shed_alarms[0].active, "the condition ended once the station caught up"
    assert timing["count"] >= stats.shed and timing["p99"] < 60.0, timing


def test_overload_from_a_fast_camera_sheds_and_loses_no_row(tiny_models: Path, tmp_path: Path):
    """Every frame a part, up to 1,000 per second (a photo folder read as fast as a camera
    could deliver), far more than any machine judges: parts are shed (counted, fail-safe,
    ERROR rows), the rest inspected, none lost."""
    frames = part_frames(tmp_path / "frames", 6)
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models,
        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 1000\nloop = true',
        reject='enabled = true\nport = "loop://"\nmode = "message"\ndelay_ms = 200'))
    engine = Engine(recipe)
    try:
        engine.start()
        time.sleep(2.0)
        engine.stop()
        stats = engine.stats()
    finally:
        engine.close()
    assert stats.shed > 0 and stats.parts > stats.shed
    assert stats.late == stats.shed and stats.rows_lost == 0
    overload = [a for a in engine.alarms() if a.kind == ALARM_OVERLOAD]
    assert len(overload) == 1 and "shed" in overload[0].message
    assert rows(tmp_path) == [(stats.parts,)]
    n_shed = rows(tmp_path, "SELECT count(*) FROM parts WHERE error LIKE 'overload: shed%'")
    assert n_shed == [(stats.shed,)]
    ids = [int(r[0]) for r in rows(tmp_path, "SELECT part_id FROM parts")]
    assert sorted(ids) == list(range(ids[0], ids[0] + len(ids))), "no part id missing"


def test_rows_wait_for_a_slow_records_writer_instead_of_being_dropped(tmp_path: Path):
    """The records' own queue refuses parts when full; the engine's feeder holds them and
    hands them on at the writer's pace: 500 rows in a burst, 500 rows on disk."""
    records = Records(tmp_path / "r.sqlite", tmp_path / "img", queue_size=4)
    alarms: list[str] = []
    feeder = _RowFeeder(records, alarms.append, batch=3, image_backlog=50)
    crop = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    for i in range(500):
        feeder.put(PartRecord(part_id=str(i), verdict="REJECT"), {"crop": crop})
    assert feeder.drain(60.0)
    feeder.close()
    records.close()
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        ids = [int(r[0]) for r in db.execute("SELECT part_id FROM parts ORDER BY id")]
        images = db.execute("SELECT count(*) FROM images").fetchone()[0]
    assert ids == list(range(500)), "every row, in order"
    assert records.dropped == 0 and feeder.lost == 0 and alarms == []
    assert 0 < images <= 500 and images + feeder.images_left_out == 500


def test_a_serial_port_missing_at_start_raises_the_alarm(tiny_models: Path, tmp_path: Path):
    """The first open fails while the link is built, before the engine listens: the alarm
    is raised all the same (banner and records), and cleared when the port appears."""
    frames = part_frames(tmp_path / "frames", 2)
    port = tmp_path / "ttyUSB9"
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models, camera=f'source = "folder"\ndevice = "{frames}"',
        reject=f'enabled = true\nport = "{port}"\nmode = "message"\n'
                                        'allow_url_ports = true'))
    engine = Engine(recipe)
    peer = None
    try:
        alarms = [a for a in engine.alarms() if a.kind == ALARM_SERIAL]
        assert len(alarms) == 1 and alarms[0].active
        assert "could not open" in alarms[0].message and str(port) in alarms[0].message
        time.sleep(0.5)  # retries end in the same state: still one alarm
        assert len([a for a in engine.alarms() if a.kind == ALARM_SERIAL]) == 1
        peer = PlcPeer()
        port.symlink_to(peer.port)
        assert wait_for(lambda: not next(a for a in engine.alarms()
                                         if a.kind == ALARM_SERIAL).active, 10.0)
    finally:
        engine.close()
        if peer is not None:
            peer.close()
    assert rows(tmp_path, "SELECT kind FROM alarms") == [(ALARM_SERIAL,)]


def test_a_free_run_roi_outside_the_frame_is_an_alarm_the_operator_sees(tiny_models: Path,
                                                                        tmp_path: Path):
    """The audit's case: 0 parts, exit 0 and nothing said. Now the trigger alarm is in the
    engine's alarms, in the records and on the headless terminal; nothing crashes."""
    frames = part_frames(tmp_path / "frames", 4)
    path = write_recipe(
        tmp_path, tiny_models,
        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 20\nloop = true',
        trigger='mode = "free_run"', extra="[localize]\nroi = [700, 500, 100, 100]")
    engine = Engine(load_recipe(path))
    try:
        engine.start()
        assert wait_for(lambda: any(a.kind == ALARM_TRIGGER for a in engine.alarms()), 10.0)
    finally:
        engine.close()
    alarm = next(a for a in engine.alarms() if a.kind == ALARM_TRIGGER)
    assert alarm.message.startswith("trigger ROI 700,500,100,100 lies outside the 192x192 frame")
    proc = subprocess.run([sys.executable, "-m", "station", "run", "--recipe", str(path),
                           "--headless", "--seconds", "2", "--quiet"], capture_output=True,
                          text=True, timeout=120)
    assert "ALARM trigger: trigger ROI 700,500,100,100 lies outside the 192x192 frame" \
        in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "ZeroDivisionError" not in proc.stderr
