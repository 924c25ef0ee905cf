"""Frame sources and the acquisition thread, on real files the tests write."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.sim.source import SimulatedSource
from station.sources import (
    CAMERA_LOST,
    CAMERA_RESTORED,
    SOURCE_ENDED,
    Acquisition,
    EndOfStream,
    FolderSource,
    OpenCVCameraSource,
    SourceError,
    VideoFileSource,
    make_source,
)

W, H = 64, 48


def level_of(image: np.ndarray) -> int:
    """Frame i is written with grey level 20 * i; recover i (MJPG is lossy, so round)."""
    return round(float(image.mean()) / 20.0)


def write_video(path: Path, n: int = 10, fps: float = 50.0, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for i in range(n):
        writer.write(np.full((H, W, 3), 20 * i, np.uint8))
    writer.release()
    return path


def write_folder(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):  # img1 .. imgN: natural order must put img10 after img9
        level = (20 * i) % 240
        cv2.imwrite(str(folder / f"img{i + 1}.png"), np.full((H, W, 3), level, np.uint8))
    return folder


def read_all(source, limit: int = 1000) -> list:
    frames = []
    try:
        while len(frames) < limit:
            frame = source.read(1.0)
            if frame is not None:
                frames.append(frame)
    except EndOfStream:
        pass
    return frames


@pytest.mark.parametrize(("suffix", "fourcc"), [(".avi", "MJPG"), (".mp4", "mp4v")])
def test_video_file_frames_seq_timestamps_and_pacing(tmp_path, suffix, fourcc):
    path = write_video(tmp_path / f"line{suffix}", n=10, fps=50.0, fourcc=fourcc)
    with VideoFileSource(path) as source:
        assert source.info.resolution == (W, H)
        assert source.info.fps == pytest.approx(50.0)
        start = time.monotonic()
        frames = read_all(source)
        elapsed = time.monotonic() - start
    assert [level_of(f.image) for f in frames] == list(range(10))
    assert [f.seq for f in frames] == list(range(10))
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert 9 / 50.0 * 0.8 <= elapsed < 2.0  # paced at the file's 50 fps, not flat out
    assert all(f.image.shape == (H, W, 3) and f.source == source.name for f in frames)


def test_video_file_loops_and_unpaced_runs_flat_out(tmp_path):
    path = write_video(tmp_path / "line.avi", n=6, fps=5.0)
    with VideoFileSource(path, loop=True, paced=False, output="mono8") as source:
        start = time.monotonic()
        frames = [source.read(1.0) for _ in range(15)]
        elapsed = time.monotonic() - start
    assert [level_of(f.image) for f in frames] == [i % 6 for i in range(15)]
    assert [f.seq for f in frames] == list(range(15))  # seq keeps counting across the loop
    assert frames[0].image.shape == (H, W)  # mono8 output
    assert elapsed < 15 / 5.0 / 2  # not held to the file's 5 fps


def test_video_file_missing_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.avi does not exist"):
        VideoFileSource(tmp_path / "nope.avi").open()


def test_folder_source_natural_order_loop_and_pacing(tmp_path):
    folder = write_folder(tmp_path / "imgs", n=12)
    (folder / "notes.txt").write_text("not an image")
    with FolderSource(folder, fps=0, paced=False) as source:
        frames = read_all(source)
    assert [level_of(f.image) for f in frames] == list(range(12))  # img2 before img10
    with FolderSource(folder, fps=40.0, loop=True, output="mono8") as source:
        start = time.monotonic()
        frames = [source.read(1.0) for _ in range(14)]
        elapsed = time.monotonic() - start
    assert [level_of(f.image) for f in frames] == [i % 12 for i in range(14)]
    assert frames[0].image.ndim == 2
    assert 13 / 40.0 * 0.8 <= elapsed < 2.0


def test_folder_source_refuses_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        FolderSource(tmp_path / "empty").open()


def test_simulated_source_paced_and_carries_truth():
    source = SimulatedSource(width=192, height=128, fps=25.0, speed_px_s=400.0, pitch_px=160.0,
                             seed=3)
    with source:
        assert source.info.resolution == (192, 128)
        assert source.info.fps == 25.0
        start = time.monotonic()
        frames = [source.read(1.0) for _ in range(11)]
        elapsed = time.monotonic() - start
    assert 10 / 25.0 * 0.85 <= elapsed <= 10 / 25.0 * 1.5 + 0.1  # real time at 25 fps
    assert [f.seq for f in frames] == list(range(11))
    assert frames[0].image.shape == (128, 192)
    assert [f.truth.seq for f in frames] == list(range(11))
    # the truth moves with the pixels: a part seen in frames 0 and 5 moved 5 * 400 / 25 px
    first = {p.part_id: p.center_xy for p in frames[0].truth.parts}
    later = {p.part_id: p.center_xy for p in frames[5].truth.parts}
    common = set(first) & set(later)
    assert common
    for pid in common:
        assert later[pid][0] - first[pid][0] == pytest.approx(5 * 400 / 25, abs=1.0)
    with pytest.raises(SourceError, match="camera.simulated: .*out of range"):
        SimulatedSource(fps=-1.0)


def test_opencv_camera_reports_settings_the_driver_refused(tmp_path):
    path = write_video(tmp_path / "cam.avi", n=5)
    with pytest.raises(SourceError, match="cannot be opened"):
        OpenCVCameraSource(str(tmp_path / "no-such-camera")).open()
    # a file opened through the camera path: a driver that refuses exposure and gain
    with OpenCVCameraSource(str(path), exposure_us=5000, gain_db=6.0) as camera:
        frame = camera.read()
        assert frame is not None and frame.image.shape == (H, W, 3)
        refused = " ".join(camera.info.unapplied)
    assert "exposure_us" in refused and "gain" in refused


def test_make_source_from_recipe_section(tmp_path):
    from station.config import CameraSection

    path = write_video(tmp_path / "v.avi", n=3)
    source = make_source(CameraSection(source="video", device=str(path), loop=False,
                                       pixel_format="mono8"), paced=False)
    assert isinstance(source, VideoFileSource)
    with source:
        frames = read_all(source)
    assert len(frames) == 3 and frames[0].image.ndim == 2
    assert isinstance(make_source(CameraSection(source="folder", device=str(tmp_path))),
                      FolderSource)
    with pytest.raises(SourceError, match="camera.source 'usb' is unknown"):
        make_source({"source": "usb"})


# -- acquisition ---------------------------------------------------------------------------


class AlarmLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, kind: str, message: str) -> None:
        with self.cond:
            self.events.append((kind, message))
            self.cond.notify_all()

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.kinds().count(kind) >= count, timeout)


def test_acquisition_latest_slot_and_bounded_queue_counts_drops(tmp_path):
    folder = write_folder(tmp_path / "imgs", n=20)
    alarms = AlarmLog()
    acq = Acquisition(FolderSource(folder, fps=400.0), queue_size=3)
    acq.add_alarm_listener(alarms)
    seen: list[int] = []
    acq.add_frame_listener(lambda f: seen.append(f.seq))
    with acq:
        assert acq.wait_finished(5.0)
    stats = acq.stats()
    assert stats.frames == 20
    assert stats.dropped == 17  # nobody consumed: all but the newest 3 were dropped, counted
    assert acq.latest().seq == 19
    assert seen == list(range(20))  # frame listeners see every frame, in order
    assert [acq.get(0.1).seq for _ in range(3)] == [17, 18, 19]
    assert acq.get(0.05) is None
    assert alarms.kinds() == [SOURCE_ENDED]


def test_acquisition_consumer_keeps_up_without_drops(tmp_path):
    folder = write_folder(tmp_path / "imgs", n=15)
    acq = Acquisition(FolderSource(folder, fps=100.0), queue_size=4)
    got = []
    with acq:
        while (frame := acq.get(2.0)) is not None:
            got.append(frame.seq)
    assert got == list(range(15))
    stats = acq.stats()
    assert stats.dropped == 0 and stats.frames == 15
    assert 50 < stats.fps < 160  # measured close to the paced 100 fps


def test_acquisition_survives_a_video_file_that_vanishes_and_returns(tmp_path):
    path = write_video(tmp_path / "line.avi", n=8, fps=100.0)
    away = tmp_path / "moved.avi"
    alarms = AlarmLog()
    acq = Acquisition(VideoFileSource(path, loop=True), backoff_s=0.02, backoff_max_s=0.2)
    acq.add_alarm_listener(alarms)
    with acq:
        deadline = time.monotonic() + 3
        while acq.stats().frames < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert acq.stats().connected
        path.rename(away)  # the file vanishes mid-run
        assert alarms.wait_for(CAMERA_LOST)
        assert not acq.stats().connected
        time.sleep(0.6)  # several failed re-opens, reported once
        frames_while_lost = acq.stats().frames
        time.sleep(0.2)
        assert acq.stats().frames == frames_while_lost
        away.rename(path)
        assert alarms.wait_for(CAMERA_RESTORED)
        before = acq.stats().frames
        time.sleep(0.2)
        assert acq.stats().frames > before  # frames flow again
    assert alarms.kinds() == [CAMERA_LOST, CAMERA_RESTORED]
    assert "line.avi" in alarms.events[0][1]
    stats = acq.stats()
    assert stats.reconnects == 1
    assert "disappeared" in stats.last_error or "does not exist" in stats.last_error


def test_acquisition_retries_a_source_that_cannot_open_with_backoff(tmp_path):
    folder = tmp_path / "later"
    alarms = AlarmLog()
    source = FolderSource(folder, fps=50.0, loop=True)
    opens: list[float] = []
    real_open = source.open

    def counting_open() -> None:
        opens.append(time.monotonic())
        real_open()

    source.open = counting_open  # count attempts on the real source
    acq = Acquisition(source, backoff_s=0.02, backoff_max_s=0.16)
    acq.add_alarm_listener(alarms)
    with acq:
        assert alarms.wait_for(CAMERA_LOST)
        time.sleep(0.7)
        write_folder(folder, n=3)
        assert alarms.wait_for(CAMERA_RESTORED)
        assert acq.get(1.0) is not None
    gaps = np.diff(opens[: min(len(opens), 7)])
    assert len(opens) >= 4
    assert gaps[0] < 0.06 and gaps[-1] >= 0.12  # waits double up to the cap
    assert np.all(np.diff(opens) < 0.4)  # and never beyond the cap (plus slack)
    assert alarms.kinds() == [CAMERA_LOST, CAMERA_RESTORED]


class GoesSilent(FolderSource):
    """A real folder source whose frames stop (no error) while ``silent`` is set, like a
    network camera whose cable was pulled."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.silent = threading.Event()

    def read(self, timeout: float = 1.0):
        if self.silent.is_set():
            time.sleep(min(timeout, 0.05))
            return None
        return super().read(timeout)


def test_acquisition_treats_a_silent_free_running_source_as_lost(tmp_path):
    source = GoesSilent(write_folder(tmp_path / "imgs", n=4), fps=50.0, loop=True)
    alarms = AlarmLog()
    acq = Acquisition(source, stall_s=0.3, backoff_s=0.02, backoff_max_s=0.1)
    acq.add_alarm_listener(alarms)
    with acq:
        assert acq.get(1.0) is not None
        source.silent.set()
        assert alarms.wait_for(CAMERA_LOST, timeout=3.0)
        assert "no frame for" in alarms.events[0][1]
        source.silent.clear()
        assert alarms.wait_for(CAMERA_RESTORED, timeout=3.0)
    assert alarms.kinds() == [CAMERA_LOST, CAMERA_RESTORED]
