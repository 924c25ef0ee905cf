"""The station's engine end to end: real sources, real models, a real serial peer, real SQLite.

What the line relies on: every part the camera sees is inspected once and judged; its reject
output goes out at trigger time + delay; faults (camera gone, serial port gone, broken model,
bad recipe, a killed process) are reported and lose no record.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from station.config import load_recipe
from station.models.metadata import ModelRefused
from station.pipeline import ALARM_CAMERA, ALARM_SERIAL, Engine
from station.sim import render_part

REPO = Path(__file__).resolve().parents[2]


def write_recipe(folder: Path, models: Path, *, camera: str, trigger: str = 'mode = "hardware"',
                 reject: str = "enabled = false", rule: str = "either", extra: str = "") -> Path:
    """A recipe file for one test: the sections that differ are given as TOML text."""
    text = f"""
[product]
name = "test-part"

[camera]
{camera}

[models]
autoencoder = "{models / 'autoencoder.onnx' if rule != 'classifier' else ''}"
classifier = "{models / 'classifier.onnx' if rule != 'autoencoder' else ''}"
provider = "cpu"
threads = 1

[decision]
rule = "{rule}"

[trigger]
{trigger}

[reject]
{reject}

[records]
database = "{folder / 'records' / 'station.sqlite'}"
images_dir = "{folder / 'records' / 'images'}"
pass_sample_rate = 0.0
{extra}
"""
    path = folder / "recipe.toml"
    path.write_text(text)
    return path


def part_frames(folder: Path, n: int, seed: int = 0) -> Path:
    """A folder of frames, one synthetic part each (a third of them defective)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        part = render_part(rng, size=(192, 192), defect="contamination" if i % 3 == 0 else None)
        cv2.imwrite(str(folder / f"{i:03d}.png"), part.image)
    return folder


class PlcPeer:
    """The PLC's end of a pseudo-terminal pair: timestamps every line it receives."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self.lines: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 256)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.lines.append((now, line.decode()))

    def close(self) -> None:
        """Hang up: the reader stops first, so the master really closes (the port vanishes)."""
        self._stop = True
        self._thread.join(2.0)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- the simulated line into a PLC peer ------------------------------------------------------



def simulated_line(defects: tuple[str, ...] | list[str]) -> str:
    """The ``[camera]`` text of the simulated line the line tests run: 3 parts/s, 40 %
    defective (of ``defects``), seed 11."""
    return f"""source = "simulated"
[camera.simulated]
width = 480
height = 270
fps = 30
speed_px_s = 720
pitch_px = 240
defect_rate = 0.4
seed = 11
defects = {json.dumps(list(defects))}"""

def test_every_defective_part_gets_one_timed_reject(line_models: Path, line_defects: tuple,
                                                    tmp_path: Path) -> None:
    """Free-run trigger on the simulated conveyor with known defective parts; the PLC peer on
    a pty timestamps every reject message.

    Against the conveyor's ground truth: every part that crossed the line is inspected
    exactly once; every defective part gets exactly one reject message and no good part
    gets one, each at trigger + delay within the timing window; the records hold one row
    per part, with its verdict.
    """
    peer = PlcPeer()
    delay_ms = 400.0
    recipe_path = write_recipe(
        tmp_path, line_models, rule="classifier",
        camera=simulated_line(line_defects),
        trigger='mode = "free_run"\nline_frac = 0.5',
        reject=f"""enabled = true
port = "{peer.port}"
mode = "message"
message = "REJECT {{part_id}}\\n"
delay_mode = "time"
delay_ms = {delay_ms}
pulse_ms = 20""")
    recipe = load_recipe(recipe_path)
    engine = Engine(recipe)
    try:
        engine.start()
        time.sleep(8.0)
        engine.stop()
        time.sleep(delay_ms / 1000.0 + 0.3)
        results = engine.results()
        timing = engine.scheduler.timing_stats()
    finally:
        engine.close()
        peer.close()

    assert len(results) >= 18, "the line ran at about 3 parts per second"
    ids = [r.part_id for r in results]
    assert len(ids) == len(set(ids)), "a part was inspected twice"
    # every inspected part is a real part of the conveyor, found where the trigger saw it
    truths = [r.truth for r in results]
    assert all(t is not None for t in truths)
    truth_ids = [t.part_id for t in truths]
    assert len(set(truth_ids)) == len(truth_ids), "one conveyor part triggered twice"
    assert truth_ids == sorted(truth_ids)
    assert truth_ids == list(range(truth_ids[0], truth_ids[-1] + 1)), "a part was skipped"
    labels = [t.label for t in truths]
    assert 0 < sum(labels) < len(labels), "the run should hold both good and defective parts"
    assert {t.defect for t in truths if t.label} <= set(line_defects), "recipe defects ignored"

    sent = {}
    for t, line in peer.lines:
        assert line.startswith("REJECT "), line
        part = line.split()[1]
        assert part not in sent, f"part {part} got two reject messages"
        sent[part] = t
    for r, truth in zip(results, truths, strict=True):
        scores = f"classifier score {r.cls_score:.2f}, truth {truth.defect}"
        if truth.label == 0:
            assert r.verdict == "PASS", f"good part {r.part_id} judged {r.verdict} ({scores})"
            assert r.part_id not in sent, f"good part {r.part_id} got a reject"
        else:
            assert r.verdict == "REJECT", f"defective part {r.part_id} passed ({scores})"
            assert r.part_id in sent, f"defective part {r.part_id} got no reject"
            error_ms = (sent[r.part_id] - r.t_trigger) * 1000.0 - delay_ms
            assert -5.0 <= error_ms <= 60.0, f"part {r.part_id}: reject {error_ms:.1f} ms off"
    assert len(sent) == sum(labels)
    assert timing["count"] == len(sent)

    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    rows = db.execute("SELECT part_id, verdict FROM parts ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == [r.verdict for r in results]


# -- faults ----------------------------------------------------------------------------------


def test_camera_vanishing_mid_run_raises_alarm_and_recovers(tiny_models: Path,
                                                            tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 6)
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models,
        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 20\nloop = true'))
    alarms: list[tuple[str, object]] = []
    engine = Engine(recipe)
    engine.events.alarm.connect(lambda payload: alarms.append(("alarm", payload)))
    engine.events.alarm_cleared.connect(lambda payload: alarms.append(("alarm_cleared", payload)))
    try:
        engine.start()
        assert wait_for(lambda: len(engine.results()) >= 3, 20.0)
        moved = frames.with_name("frames_gone")
        frames.rename(moved)
        assert wait_for(lambda: any(a.kind == ALARM_CAMERA for a in engine.alarms()), 10.0)
        n_during = len(engine.results())
        moved.rename(frames)
        assert wait_for(lambda: any(k == "alarm_cleared" and p.kind == ALARM_CAMERA
                                    for k, p in alarms), 15.0)
        assert wait_for(lambda: len(engine.results()) >= n_during + 3, 20.0), \
            "inspection resumed after the camera came back"
    finally:
        engine.close()
    alarm = next(a for a in engine.alarms() if a.kind == ALARM_CAMERA)
    assert "camera lost" in alarm.message
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    assert db.execute("SELECT count(*) FROM parts").fetchone()[0] == len(engine.results())
    kinds = [r[0] for r in db.execute("SELECT kind FROM alarms")]
    assert ALARM_CAMERA in kinds


def test_serial_port_vanishing_raises_alarm_and_keeps_inspecting(tiny_models: Path,
                                                                 tmp_path: Path) -> None:
    peer = PlcPeer()
    frames = part_frames(tmp_path / "frames", 6)
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models,
        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 15\nloop = true',
        reject=f'enabled = true\nport = "{peer.port}"\nmode = "message"\ndelay_ms = 50'))
    engine = Engine(recipe)
    try:
        engine.start()
        assert wait_for(lambda: len(engine.results()) >= 3, 20.0)
        peer.close()  # the PLC side goes away: the adapter was unplugged
        assert wait_for(lambda: any(a.kind == ALARM_SERIAL for a in engine.alarms()), 10.0)
        n = len(engine.results())
        assert wait_for(lambda: len(engine.results()) >= n + 3, 20.0), \
            "the station keeps inspecting (and recording) while the port is gone"
    finally:
        engine.close()
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    assert db.execute("SELECT count(*) FROM parts").fetchone()[0] == len(engine.results())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_model_file_is_refused_with_its_name(tiny_models: Path, tmp_path: Path,
                                                     damage: str) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    target = models / "autoencoder.onnx"
    data = target.read_bytes()
    target.write_bytes(b"not a model at all" if damage == "garbage" else data[: len(data) // 2])
    frames = part_frames(tmp_path / "frames", 2)
    recipe_path = write_recipe(tmp_path, models,
                               camera=f'source = "folder"\ndevice = "{frames}"')
    with pytest.raises(ModelRefused, match="autoencoder.onnx"):
        Engine(load_recipe(recipe_path))
    proc = subprocess.run([sys.executable, "-m", "station", "run", "--recipe", str(recipe_path),
                           "--headless", "--seconds", "1"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "autoencoder.onnx" in proc.stderr


def test_bad_recipe_is_refused_naming_key_and_line(tiny_models: Path, tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 2)
    path = write_recipe(tmp_path, tiny_models, camera=f'source = "folder"\ndevice = "{frames}"',
                        reject="enabled = false\npulse_ms = -5")
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "pulse_ms" in text)
    proc = subprocess.run([sys.executable, "-m", "station", "run", "--recipe", str(path),
                           "--headless", "--seconds", "1"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert f"recipe.toml:{line}" in proc.stderr and "reject.pulse_ms" in proc.stderr


def _rows(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=1) as db:
            return db.execute("SELECT count(*) FROM parts").fetchone()[0]
    except sqlite3.Error:
        return 0


def _looping_station(tiny_models: Path, tmp_path: Path,
                     **popen: Any) -> tuple[subprocess.Popen, Path]:
    """``station run --headless --quiet`` on a looping folder of parts, and its database."""
    frames = part_frames(tmp_path / "frames", 6)
    path = write_recipe(tmp_path, tiny_models,
                        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 30\nloop = true')
    proc = subprocess.Popen([sys.executable, "-m", "station", "run", "--recipe", str(path),
                             "--headless", "--quiet"], stderr=subprocess.PIPE, **popen)
    return proc, tmp_path / "records" / "station.sqlite"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_headless_station_stops_cleanly_on_sigterm_and_sigint(sig: int, tiny_models: Path,
                                                              tmp_path: Path) -> None:
    """A service manager's SIGTERM, or a SIGINT to a station a script started in the background
    (which inherits SIGINT ignored), stops it as Ctrl-C does: exit 0, every part recorded."""
    proc, db_path = _looping_station(tiny_models, tmp_path, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=_ignore_sigint)
    try:
        assert wait_for(lambda: proc.poll() is not None or _rows(db_path) >= 4, 60.0)
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopping" in out and "Traceback" not in err
    final = [line for line in out.splitlines() if line.startswith("parts ")][-1]
    assert _rows(db_path) == int(final.split()[1])  # the last status line's count, all recorded


def test_killed_process_leaves_complete_records(tiny_models: Path, tmp_path: Path) -> None:
    proc, db_path = _looping_station(tiny_models, tmp_path, stdout=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _rows(db_path) >= 8, 60.0), proc.stderr.read1().decode() if proc.poll() else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    parts = db.execute("SELECT part_id, verdict, ae_score, cls_score, latency_ms FROM parts"
                       ).fetchall()
    assert len(parts) >= 8
    for part_id, verdict, ae, cls, latency in parts:
        assert verdict in ("PASS", "REJECT", "ERROR")
        assert latency is not None
        if verdict != "ERROR":
            assert ae is not None and cls is not None, f"part {part_id} half-written"
    ids = [int(p[0]) for p in parts]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "rows are consecutive, none lost"


# -- replay ----------------------------------------------------------------------------------


def test_replay_reports_verdicts_against_labels(tiny_models: Path, tmp_path: Path) -> None:
    from station.sim import write_mvtec_dataset

    data = write_mvtec_dataset(tmp_path / "set", n_train_good=2, n_test_good=4,
                               n_test_per_defect=1, size=160, seed=5)
    recipe_path = write_recipe(tmp_path, tiny_models,
                               camera=f'source = "folder"\ndevice = "{data / "test" / "good"}"')
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, "-m", "station", "replay", "--recipe", str(recipe_path),
                           "--data", str(data), "--split", "test", "--json", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    n_test = len(list((data / "test").rglob("*.png")))
    assert report["metrics"]["parts"] == n_test
    labels = {Path(p["file"]).parent.name != "good" for p in report["parts"]}
    assert labels == {True, False}
    m = report["metrics"]
    assert m["defects_rejected"] + m["defects_passed"] + m["good_rejected"] + m["good_passed"] \
        == n_test
    assert all(p["verdict"] in ("PASS", "REJECT", "ERROR") for p in report["parts"])
