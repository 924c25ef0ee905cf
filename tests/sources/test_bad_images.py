"""Broken image files in a folder or a replayed data set: skipped, reported, and the run ends.

Each kind of broken file the audit used (zero bytes, a JPEG cut short, text named .png, a
PNG with a flipped bit, a float32 TIFF) once made a folder source or ``station replay``
reopen the source and start over from the first image forever. Every test here is bounded
in time so a hang fails fast instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.sources import (
    CAMERA_LOST,
    CAMERA_RESTORED,
    IMAGE_SKIPPED,
    SOURCE_ENDED,
    Acquisition,
    BadImage,
    EndOfStream,
    FolderSource,
    VideoFileSource,
)
from station.sources.dataset import SampleSource
from station.sources.datasets import DatasetError, load_image, read_dataset
from tests.sources.test_sources import AlarmLog  # acquisition alarms, in order, with a wait

W, H = 64, 48


def _image(level: int = 90) -> np.ndarray:
    rng = np.random.default_rng(level)
    return np.clip(np.full((H, W, 3), level) + rng.integers(-5, 6, (H, W, 3)), 0, 255).astype(
        np.uint8)


def zero_bytes(stem: Path) -> Path:
    path = stem.with_suffix(".png")
    path.write_bytes(b"")
    return path


def truncated_jpeg(stem: Path) -> Path:
    data = cv2.imencode(".jpg", _image())[1].tobytes()
    path = stem.with_suffix(".jpg")
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def text_named_png(stem: Path) -> Path:
    path = stem.with_suffix(".png")
    path.write_text("this is a text file that someone named .png\n")
    return path


def bit_flipped_png(stem: Path) -> Path:
    data = bytearray(cv2.imencode(".png", _image())[1].tobytes())
    data[len(data) // 2] ^= 0x10
    path = stem.with_suffix(".png")
    path.write_bytes(bytes(data))
    return path


def float32_tiff(stem: Path) -> Path:
    path = stem.with_suffix(".tiff")
    assert cv2.imwrite(str(path), np.full((H, W), 0.5, np.float32))
    return path


def fifo_named_png(stem: Path) -> Path:
    """A named pipe: reading it blocks until someone writes (calibrate hung on one)."""
    path = stem.with_suffix(".png")
    os.mkfifo(path)
    return path


def link_to_dev_zero(stem: Path) -> Path:
    """An endless file: reading it filled the memory."""
    path = stem.with_suffix(".png")
    path.symlink_to("/dev/zero")
    return path


# kind -> (how to make it, what the reason says)
BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "zero-byte PNG": (zero_bytes, "empty file (0 bytes)"),
    "truncated JPEG": (truncated_jpeg, "JPEG without its end-of-image marker"),
    "text named .png": (text_named_png, "not a readable image"),
    "bit-flipped PNG": (bit_flipped_png, "fails its CRC check"),
    "float32 TIFF": (float32_tiff, "pixel type float32 not supported"),
    "FIFO named .png": (fifo_named_png, "not a regular file"),
    "link to /dev/zero": (link_to_dev_zero, "not a regular file"),
}


def good_folder(folder: Path, n: int) -> Path:
    """img1 .. imgN, image i at grey level 20 * i (lossless PNG, so the level names it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i + 1}.png"), np.full((H, W, 3), 20 * i, np.uint8))
    return folder


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(BAD))
def test_a_folder_without_loop_skips_a_bad_image_reports_it_and_ends(tmp_path, kind):
    folder = good_folder(tmp_path / "imgs", 4)
    make, reason = BAD[kind]
    bad = make(folder / "img2b")  # sorts between img2 and img3
    heard = AlarmLog()
    acq = Acquisition(FolderSource(folder, fps=200.0, loop=False), backoff_s=0.01)
    acq.add_alarm_listener(heard)
    levels: list[int] = []
    acq.add_frame_listener(lambda f: levels.append(round(float(f.image.mean()) / 20)))
    with acq:
        assert acq.wait_finished(10.0), f"a {kind} made the folder run forever"
    assert levels == [0, 1, 2, 3]  # every good image once, in order, none repeated
    assert heard.kinds() == [IMAGE_SKIPPED, SOURCE_ENDED]  # not a camera loss
    assert str(bad) in heard.events[0][1] and reason in heard.events[0][1]
    skipped = acq.skipped()
    assert [s.path for s in skipped] == [bad] and reason in skipped[0].reason
    assert acq.stats().skipped == 1 and acq.stats().reconnects == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make", [fifo_named_png, link_to_dev_zero])
def test_the_data_sets_fingerprint_names_a_file_that_is_no_image_file(tmp_path, make):
    """Training and evaluation hash every listed image first: a pipe hung them there."""
    from station.sources.datasets import dataset_fingerprint

    good_folder(tmp_path / "set" / "good", 2)
    bad = make(tmp_path / "set" / "good" / "zz")
    with pytest.raises(DatasetError, match=f"{bad}: not a regular file"):
        dataset_fingerprint(read_dataset(tmp_path / "set"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(BAD))
def test_a_replayed_data_set_skips_a_bad_sample_with_its_label_and_ends(tmp_path, kind):
    root = tmp_path / "set"
    good_folder(root / "good", 3)
    (root / "defect").mkdir()
    cv2.imwrite(str(root / "defect" / "d1.png"), _image(200))
    make, reason = BAD[kind]
    bad = make(root / "defect" / "d0")
    samples = read_dataset(root)
    heard = AlarmLog()
    acq = Acquisition(SampleSource(samples, "set"), backoff_s=0.01)
    acq.add_alarm_listener(heard)
    with acq:
        assert acq.wait_finished(10.0), f"a {kind} made the replay run forever"
    assert acq.stats().frames == 4
    [skip] = acq.skipped()
    assert skip.path == bad and reason in skip.reason
    assert skip.truth.label == 1 and skip.truth.defect_type == "defect"  # still accounted for
    assert heard.kinds() == [IMAGE_SKIPPED, SOURCE_ENDED]


def test_a_valid_jpeg_with_trailing_bytes_is_read(tmp_path):
    image = _image(120)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    path = tmp_path / "tail.jpg"
    path.write_bytes(data + bytes(range(100)))
    decoded = load_image(path)
    assert decoded.shape == image.shape
    assert abs(float(decoded.mean()) - float(image.mean())) < 3
    png = tmp_path / "tail.png"  # the same for a PNG with bytes after its IEND chunk
    png.write_bytes(cv2.imencode(".png", image)[1].tobytes() + b"\0" * 100)
    assert np.array_equal(load_image(png), image)


def test_a_thumbnail_end_marker_does_not_hide_a_truncated_jpeg(tmp_path):
    """The old check looked for an end marker anywhere near the end; the segments are
    followed now, so a cut main image is refused even if the cut leaves an FFD9 behind."""
    data = cv2.imencode(".jpg", _image(60))[1].tobytes()
    cut = data[: len(data) // 2] + b"\xff\xd9"  # looks ended, but the scan was cut short
    (tmp_path / "cut.jpg").write_bytes(cut[:-2] + b"\x00" * 10)
    with pytest.raises(DatasetError, match=r"cut\.jpg: JPEG without its end-of-image marker"):
        load_image(tmp_path / "cut.jpg")


def test_reopening_a_folder_after_a_fault_goes_on_where_it_was(tmp_path):
    folder = good_folder(tmp_path / "imgs", 5)
    source = FolderSource(folder, fps=0.0, loop=False)
    source.open()
    first = [source.read() for _ in range(2)]
    source.close()  # what acquisition does on a fault
    source.open()
    rest = []
    with pytest.raises(EndOfStream):
        while True:
            rest.append(source.read())
    assert [round(float(f.image.mean()) / 20) for f in first + rest] == [0, 1, 2, 3, 4]


@pytest.mark.timeout(30)
def test_a_folder_that_vanishes_and_returns_is_not_rewound(tmp_path):
    folder = good_folder(tmp_path / "imgs", 6)
    away = tmp_path / "moved"
    heard = AlarmLog()
    acq = Acquisition(FolderSource(folder, fps=40.0, loop=False), backoff_s=0.02,
                      backoff_max_s=0.1)
    acq.add_alarm_listener(heard)
    levels: list[int] = []
    acq.add_frame_listener(lambda f: levels.append(round(float(f.image.mean()) / 20)))
    with acq:
        deadline = time.monotonic() + 5
        while len(levels) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        folder.rename(away)  # the network share drops out mid-run
        assert heard.wait_for(CAMERA_LOST)
        time.sleep(0.3)
        away.rename(folder)
        assert acq.wait_finished(10.0)
    assert levels == [0, 1, 2, 3, 4, 5]  # each image once: the reopen did not start over
    assert heard.kinds() == [CAMERA_LOST, CAMERA_RESTORED, SOURCE_ENDED]


def test_reopening_a_video_file_goes_on_where_it_was(tmp_path):
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (W, H))
    for i in range(8):
        writer.write(np.full((H, W, 3), 20 * i, np.uint8))
    writer.release()
    source = VideoFileSource(path, paced=False)
    source.open()
    first = [source.read() for _ in range(3)]
    source.close()
    source.open()
    after = source.read()
    source.close()
    assert [round(float(f.image.mean()) / 20) for f in first] == [0, 1, 2]
    assert round(float(after.image.mean()) / 20) == 3


@pytest.mark.timeout(30)
def test_a_looping_folder_of_only_bad_images_is_a_fault_not_a_busy_loop(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    zero_bytes(folder / "a")
    text_named_png(folder / "b")
    heard = AlarmLog()
    acq = Acquisition(FolderSource(folder, fps=0.0, loop=True, paced=False),
                      backoff_s=0.05, backoff_max_s=0.2)
    acq.add_alarm_listener(heard)
    with acq:
        assert heard.wait_for(CAMERA_LOST)
        assert "none of its 2 images can be read" in dict(heard.events)[CAMERA_LOST]
        time.sleep(0.5)
        assert acq.stats().skipped == 2  # each bad file reported once, not once per pass
        cv2.imwrite(str(folder / "c.png"), _image())
        assert heard.wait_for(CAMERA_RESTORED)
        assert acq.get(2.0) is not None  # frames flow again
    assert [k for k in heard.kinds() if k != CAMERA_LOST] == [IMAGE_SKIPPED, IMAGE_SKIPPED,
                                                               CAMERA_RESTORED]


def test_bad_image_names_the_file_and_the_reason(tmp_path):
    source = FolderSource(good_folder(tmp_path / "imgs", 1), fps=0.0)
    bad = zero_bytes(tmp_path / "imgs" / "img0")
    source.open()  # a bad first file does not keep the folder from opening
    with pytest.raises(BadImage) as caught:
        source.read()
    assert caught.value.path == bad and str(caught.value) == f"{bad}: empty file (0 bytes)"
    assert source.read() is not None and source.info.width == W


@pytest.mark.timeout(300)
def test_station_replay_lists_a_bad_image_and_finishes(tiny_models: Path, tmp_path: Path):
    from station.sim import write_mvtec_dataset

    data = write_mvtec_dataset(tmp_path / "set", n_train_good=2, n_test_good=3,
                               n_test_per_defect=1, size=160, seed=5)
    bad = zero_bytes(data / "test" / "good" / "000a")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[product]\nname = "t"\n\n[camera]\nsource = "folder"\n'
                      f'device = "{data}"\n\n[models]\n'
                      f'autoencoder = "{tiny_models / "autoencoder.onnx"}"\n'
                      f'classifier = "{tiny_models / "classifier.onnx"}"\nprovider = "cpu"\n'
                      f'threads = 1\n\n[decision]\nrule = "either"\n\n[trigger]\n'
                      f'mode = "hardware"\n\n[reject]\nenabled = false\n')
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, "-m", "station", "replay", "--recipe", str(recipe),
                           "--data", str(data), "--split", "test", "--json", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert f"SKIPPED {bad}: empty file (0 bytes)" in proc.stderr
    report = json.loads(out.read_text())
    assert report["skipped"] == [{"file": str(bad), "label": 0, "defect_type": "good",
                                  "reason": "empty file (0 bytes)"}]
    assert report["metrics"]["skipped"] == 1
    readable = sorted(str(p) for p in (data / "test").rglob("*.png") if p != bad)
    inspected = sorted(p["file"] for p in report["parts"] if p["file"] != str(bad))
    assert inspected == readable  # every readable sample once: no rewind, no repeat


@pytest.mark.timeout(300)
def test_station_run_on_a_folder_with_a_bad_image_inspects_each_part_once_and_ends(
        tiny_models: Path, tmp_path: Path):
    """The audit's case: a zero-byte PNG in a folder with loop = false once made the line
    'inspect' thousands of parts and never end."""
    import sqlite3

    from station.sim import render_part

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(frames / f"{i:03d}.png"), render_part(rng, size=(192, 192)).image)
    zero_bytes(frames / "001a")
    db = tmp_path / "records" / "station.sqlite"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[product]\nname = "t"\n\n[camera]\nsource = "folder"\n'
                      f'device = "{frames}"\nfps = 20\nloop = false\n\n[models]\n'
                      f'autoencoder = "{tiny_models / "autoencoder.onnx"}"\n'
                      f'classifier = "{tiny_models / "classifier.onnx"}"\nprovider = "cpu"\n'
                      f'threads = 1\n\n[decision]\nrule = "either"\n\n[trigger]\n'
                      f'mode = "hardware"\n\n[reject]\nenabled = false\n\n[records]\n'
                      f'database = "{db}"\nimages_dir = "{tmp_path / "records" / "images"}"\n')
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "station", "run", "--recipe", str(recipe),
                           "--headless", "--seconds", "120", "--quiet"],
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 100  # it ended with the folder, not at --seconds
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT verdict, error FROM parts").fetchall()
    good = [r for r in rows if "001a.png" not in (r[1] or "")]
    assert len(good) == 4  # each readable image inspected once: no rewind
    bad = [r for r in rows if "001a.png" in (r[1] or "")]
    assert [v for v, _ in bad] == ["ERROR"]  # the bad file: one ERROR row naming it
    assert bad[0][1].startswith("image skipped: ")
    assert "001a.png" in proc.stderr + proc.stdout  # and it was reported
