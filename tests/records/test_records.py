"""Records: real SQLite in WAL mode, a killed writer, the image disk budget, a full disk, CSV."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.cli import main as station_main
from station.records import PartRecord, Records, RecordsError


def noise(seed: int, size: int = 48) -> np.ndarray:
    """An image that PNG cannot shrink much, so the budget arithmetic is meaningful."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def part(i: int, verdict: str = "PASS", t: float | None = None) -> PartRecord:
    return PartRecord(
        part_id=f"P{i:05d}", verdict=verdict, recipe="screw-m4",
        model_versions={"autoencoder": "ae-3", "classifier": "vgg-2"},
        ae_score_raw=0.01 * i, ae_score=0.1 * i, cls_score_raw=0.002 * i, cls_score=0.02 * i,
        reasons="" if verdict == "PASS" else "ae_score > 1", latency_ms=12.5,
        time_epoch=time.time() if t is None else t,
    )


@pytest.fixture
def records(tmp_path: Path):
    r = Records(tmp_path / "db" / "station.sqlite", tmp_path / "images", disk_budget_mb=100,
                pass_sample_rate=0.5)
    yield r
    r.close()


def test_wal_mode_and_rows_round_trip(records: Records, tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "db" / "station.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    crop, heat = noise(1), noise(2, 32)[:, :, 0]
    assert records.submit(part(1, "REJECT"), {"crop": crop, "heatmap": heat})
    records.submit(part(2, "PASS"), {"crop": noise(3)})  # 1st pass: not sampled (rate 0.5)
    records.submit(part(3, "PASS"), {"crop": noise(4)})  # 2nd pass: sampled
    records.submit(part(4, "ERROR"))
    assert records.flush()
    row = records.get("P00001")
    assert row["verdict"] == "REJECT" and row["recipe"] == "screw-m4"
    assert row["model_versions"] == {"autoencoder": "ae-3", "classifier": "vgg-2"}
    assert row["ae_score_raw"] == pytest.approx(0.01) and row["cls_score"] == pytest.approx(0.02)
    assert row["latency_ms"] == 12.5 and row["reasons"] == "ae_score > 1"
    assert row["time_iso"].endswith("+00:00") and row["reject_sent"] is None
    images = {i["kind"]: i["path"] for i in row["images"]}
    assert set(images) == {"crop", "heatmap"}
    assert np.array_equal(cv2.imread(images["crop"]), crop)  # lossless, exact pixels
    assert np.array_equal(cv2.imread(images["heatmap"], cv2.IMREAD_UNCHANGED), heat)
    assert records.get("P00002")["images"] == []
    assert len(records.get("P00003")["images"]) == 1
    assert records.counts() == {"inspected": 4, "passed": 2, "rejected": 1, "errors": 1}
    assert [r["part_id"] for r in records.recent(10, verdict="PASS")] == ["P00003", "P00002"]
    assert [r["part_id"] for r in records.recent(2)] == ["P00004", "P00003"]
    assert records.get("nope") is None
    assert not list((tmp_path / "images").rglob("*.tmp"))


def test_reject_sent_is_stored_whether_it_comes_before_or_after_the_row(records: Records):
    records.submit(part(1, "REJECT"))
    records.on_fired("P00001", "reject", 10.0, 10.0004, "verdict REJECT")
    records.on_fired("P00002", "reject", 11.0, 11.0003, "fail-safe reject: no verdict")
    records.submit(part(2, "ERROR"))  # its verdict came after the fail-safe fired
    records.on_fired("P00003", "pass", 12.0, None, "verdict PASS")
    records.submit(part(3))
    assert records.flush()
    one, two, three = (records.get(f"P0000{i}") for i in (1, 2, 3))
    assert one["reject_sent"] is True and one["reject_timing_ms"] == pytest.approx(0.4)
    assert two["reject_sent"] is True and two["reject_reason"].startswith("fail-safe")
    assert three["reject_sent"] is False and three["reject_action"] == "pass"


def test_alarms_and_engineer_events(records: Records):
    heard = []
    records.add_alarm_listener(lambda kind, msg: heard.append((kind, msg)))
    aid = records.raise_alarm("serial", "serial link lost on /dev/ttyUSB0")
    assert heard == [("serial", "serial link lost on /dev/ttyUSB0")]
    assert [a["id"] for a in records.alarms(unacknowledged_only=True)] == [aid]
    records.acknowledge_alarm(aid, "operator anna")
    assert records.alarms(unacknowledged_only=True) == []
    assert records.alarms()[0]["acknowledged_by"] == "operator anna"
    with pytest.raises(ValueError, match="already acknowledged"):
        records.acknowledge_alarm(aid, "bob")
    records.record_event("engineer kim", "thresholds.autoencoder", 1.0, 1.15)
    ev = records.events()[0]
    assert (ev["who"], ev["key"], ev["old"], ev["new"]) == ("engineer kim",
                                                            "thresholds.autoencoder", "1.0", "1.15")


def test_disk_budget_deletes_oldest_passes_first_then_oldest_rejects(tmp_path: Path):
    size = len(cv2.imencode(".png", noise(0))[1])
    budget_mb = 6.5 * size / (1024 * 1024)  # room for six images
    with Records(tmp_path / "r.sqlite", tmp_path / "img", budget_mb, pass_sample_rate=1.0) as rec:
        order = ["PASS", "REJECT", "PASS", "REJECT", "PASS", "PASS", "REJECT", "PASS"]
        for i, verdict in enumerate(order):
            rec.submit(part(i, verdict), {"crop": noise(i)})
        assert rec.flush()
        live = {r["part_id"]: not r["images"][0]["deleted"] for r in rec.recent(20)}
        # eight images, room for six: the two oldest passes went, every reject stayed
        assert [pid for pid, alive in sorted(live.items()) if not alive] == ["P00000", "P00002"]
        assert rec.image_bytes() <= budget_mb * 1024 * 1024
        assert not Path(rec.get("P00000")["images"][0]["path"]).exists()
        assert Path(rec.get("P00001")["images"][0]["path"]).exists()
        for i in range(8, 13):  # five more rejects: all passes go, then the oldest reject
            rec.submit(part(i, "REJECT"), {"crop": noise(i)})
        assert rec.flush()
        alive = sorted(r["part_id"] for r in rec.recent(20) if not r["images"][0]["deleted"])
        assert alive == ["P00006", "P00008", "P00009", "P00010", "P00011", "P00012"]
        assert rec.counts()["inspected"] == 13  # rows are never deleted by the budget


def test_a_full_disk_loses_no_row_and_raises_one_alarm(tmp_path: Path):
    blocked = tmp_path / "images"
    heard = []
    with Records(tmp_path / "r.sqlite", blocked, 10, pass_sample_rate=1.0) as rec:
        blocked.rmdir()  # the folder took files at start; from now on every image write fails
        blocked.write_text("a file where the image folder was")
        rec.add_alarm_listener(lambda kind, msg: heard.append(kind))
        for i in range(5):
            assert rec.submit(part(i, "REJECT"), {"crop": noise(i)})
        assert rec.flush()
        rows = rec.recent(10)
        assert len(rows) == 5 and all(r["images"] == [] for r in rows)
        alarms = rec.alarms()
        assert len(alarms) == 1 and alarms[0]["kind"] == "disk"
        assert str(blocked) in alarms[0]["message"] and "still recorded" in alarms[0]["message"]
        assert heard == ["disk"] and rec.image_failures == 5


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from station.records import PartRecord, Records
    rec = Records(sys.argv[1], sys.argv[2], 50, pass_sample_rate=1.0)
    img = np.full((24, 24), 128, np.uint8)
    i = 0
    while True:
        rec.submit(PartRecord(part_id=f"K{i}", verdict="REJECT" if i % 3 else "PASS",
                              ae_score_raw=float(i), ae_score=i / 10, cls_score_raw=float(-i),
                              reasons=f"reason {i}", latency_ms=float(i)), {"crop": img})
        i += 1
        if i % 20 == 0:
            rec.flush()
            print(i, flush=True)
""")


def test_a_killed_process_leaves_an_intact_database(tmp_path: Path):
    db, images = tmp_path / "k.sqlite", tmp_path / "img"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(images)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if int(line) >= 100:
                break
        time.sleep(0.05)  # kill it mid-stream, not at a flush
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT part_id, verdict, ae_score_raw, ae_score, cls_score_raw, reasons, "
                        "latency_ms FROM parts ORDER BY id").fetchall()
    assert len(rows) >= 100
    for n, (pid, verdict, raw, norm, cls_raw, reasons, latency) in enumerate(rows):
        i = int(pid[1:])
        assert i == n  # no gap: every part before the one in flight is there
        assert verdict == ("REJECT" if i % 3 else "PASS")
        assert (raw, norm, cls_raw, reasons, latency) == (i, pytest.approx(i / 10), -i,
                                                          f"reason {i}", i)
    paths = [p for (p,) in conn.execute("SELECT path FROM images")]
    assert all((images / p).is_file() for p in paths)  # no row points at a missing image
    conn.close()
    with Records(db, images, 50) as again:  # it opens again and keeps recording
        again.submit(part(1))
        assert again.flush()
        assert again.counts()["inspected"] == len(rows) + 1


def test_export_records_to_csv(tmp_path: Path, capsys):
    db = tmp_path / "station.sqlite"
    old = time.time() - 3 * 86400
    with Records(db, tmp_path / "img", 10) as rec:
        rec.submit(part(1, "REJECT", t=old), {"crop": noise(1)})
        rec.submit(part(2, "PASS"))
        rec.on_fired("P00001", "reject", 1.0, 1.001, "verdict REJECT")
        assert rec.flush()
    out = tmp_path / "out" / "parts.csv"
    assert station_main(["export-records", "--db", str(db), "--csv", str(out)]) == 0
    assert "wrote 2 part(s)" in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["part_id"] for r in rows] == ["P00001", "P00002"]
    assert rows[0]["verdict"] == "REJECT" and rows[0]["reject_sent"] == "1"
    assert rows[0]["images"].endswith("_P00001_crop.png") and rows[1]["images"] == ""
    assert float(rows[0]["ae_score_raw"]) == pytest.approx(0.01)
    yesterday = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    assert station_main(["export-records", "--db", str(db), "--csv", str(out),
                         "--since", yesterday]) == 0
    with open(out, newline="") as f:
        assert [r["part_id"] for r in csv.DictReader(f)] == ["P00002"]
    assert station_main(["export-records", "--db", str(db), "--csv", str(out),
                         "--since", "last tuesday"]) == 2
    assert "--since 'last tuesday': expected an ISO date" in capsys.readouterr().err
    assert station_main(["export-records", "--db", str(tmp_path / "none.sqlite"),
                         "--csv", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_settings_are_refused(tmp_path: Path):
    with pytest.raises(RecordsError, match="pass_sample_rate: expected 0..1"):
        Records(tmp_path / "a.sqlite", tmp_path / "i", 10, pass_sample_rate=5)
    with pytest.raises(ValueError, match="verdict 'OK'"):
        PartRecord(part_id="x", verdict="OK")


def test_built_from_a_recipe_file(tmp_path: Path):
    from station.config import load_recipe

    recipe_path = tmp_path / "screw.toml"
    recipe_path.write_text('[product]\nname = "screw"\n\n[records]\ndatabase = "rec/db.sqlite"\n'
                           'images_dir = "rec/img"\npass_sample_rate = 0.0\ndisk_budget_mb = 5\n')
    recipe = load_recipe(recipe_path, check_files=False)
    with Records.from_recipe(recipe) as rec:
        rec.submit(part(1, "PASS"), {"crop": noise(1)})
        rec.submit(part(2, "REJECT"), {"crop": noise(2)})
        assert rec.flush()
        assert rec.get("P00001")["images"] == []  # pass_sample_rate = 0
        assert len(rec.get("P00002")["images"]) == 1
        assert rec.disk_budget_bytes == 5 * 1024 * 1024
    # the recipe's relative paths are the recipe folder's, not the working directory's
    assert Path(rec.database_path).resolve() == (tmp_path / "rec" / "db.sqlite").resolve()
    assert rec.database_path.is_file() and rec.images_dir.is_dir()


def test_submit_never_waits_on_a_stalled_disk(tmp_path: Path):
    db = tmp_path / "s.sqlite"
    heard = []
    with Records(db, tmp_path / "img", 10, queue_size=2) as rec:
        rec.add_alarm_listener(lambda kind, msg: heard.append(msg))
        blocker = sqlite3.connect(db, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        try:
            accepted = []
            for i in range(6):
                t0 = time.perf_counter()
                accepted.append(rec.submit(part(i, "REJECT"), {"crop": noise(i)}))
                assert time.perf_counter() - t0 < 0.05  # the inspection thread did not wait
                time.sleep(0.02)
        finally:
            blocker.rollback()
            blocker.close()
        assert rec.flush()
        # (one in the writer's hands and) two queued, the rest refused with one alarm
        n = sum(accepted)
        assert n in (2, 3) and accepted == [True] * n + [False] * (6 - n)
        assert rec.dropped == 6 - n and len(heard) == 1 and "writer behind" in heard[0]
        assert rec.counts()["inspected"] == n  # every accepted part was written after all
        assert rec.submit(part(9))  # caught up: accepted again


def test_the_recipe_section_is_the_one_schema_of_records(tmp_path: Path, monkeypatch):
    from station.config import RecordsSection

    monkeypatch.chdir(tmp_path)
    with Records.from_section(RecordsSection()) as rec:  # the recipe's defaults, nothing else
        assert rec.database_path == Path("records/records.sqlite")
        assert rec.images_dir == Path("records/images")
        assert rec.disk_budget_bytes == 2000 * 1024 * 1024
        assert rec.min_free_bytes == 100 * 1024 * 1024
    assert (tmp_path / "records" / "records.sqlite").is_file()
