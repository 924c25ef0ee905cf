"""GenICam cameras through harvesters, on the simulated 'viky' producer in the genicam wheel."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("harvesters")

from station.sources import Acquisition, GenICamSource, SourceError, make_source  # noqa: E402
from station.sources.genicam import bundled_producer, find_producers, list_devices  # noqa: E402

VIKY = bundled_producer()
pytestmark = pytest.mark.skipif(VIKY is None, reason="the genicam wheel ships no viky.cti")


def read_frames(source, n: int) -> list:
    frames = []
    for _ in range(n * 5):
        frame = source.read(2.0)
        if frame is not None:
            frames.append(frame)
        if len(frames) == n:
            break
    return frames


def test_viky_delivers_real_frames_at_the_configured_size_and_format():
    source = GenICamSource(VIKY, "", width=160, height=120, fps=50.0, pixel_format="Mono8")
    with source:
        assert source.info.resolution == (160, 120)
        assert source.info.fps == pytest.approx(50.0)
        frames = read_frames(source, 4)
    assert len(frames) == 4
    assert all(f.image.shape == (120, 160) and f.image.dtype == np.uint8 for f in frames)
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:], strict=False))
    assert frames[0].image.max() > frames[0].image.min()  # a picture, not an empty buffer
    # buffers were copied out before being requeued: the frames do not share memory
    assert not np.shares_memory(frames[0].image, frames[1].image)


def test_viky_colour_to_bgr_and_device_chosen_by_id():
    source = GenICamSource(VIKY, "VikyTL_DEV_green", width=100, height=100, output="bgr8")
    with source:
        frames = read_frames(source, 2)
    assert frames[0].image.shape == (100, 100, 3)


def test_settings_the_camera_lacks_are_reported_and_a_missing_trigger_refused():
    with GenICamSource(VIKY, 0, width=120, height=100, exposure_us=2000, gain_db=3.0) as cam:
        refused = " ".join(cam.info.unapplied)
        assert read_frames(cam, 1)
    assert "exposure_us" in refused and "ExposureTime" in refused
    assert "gain_db" in refused
    # viky has no TriggerMode node: a hardware-triggered station must not run free
    with pytest.raises(SourceError, match="TriggerMode"):
        GenICamSource(VIKY, 0, trigger="hardware").open()
    with pytest.raises(SourceError, match="not offered"):
        GenICamSource(VIKY, 0, pixel_format="BayerRG12").open()
    with pytest.raises(SourceError, match="not found"):
        GenICamSource(VIKY, "no-such-serial").open()


def test_acquisition_from_viky_and_make_source():
    source = make_source({"source": "genicam", "cti": str(VIKY), "device": "",
                          "width": 128, "height": 104, "fps": 40.0, "pixel_format": "mono8"})
    acq = Acquisition(source, queue_size=2)
    with acq:
        got = [acq.get(3.0) for _ in range(3)]
    assert all(f is not None and f.image.shape == (104, 128) for f in got)
    assert acq.stats().frames >= 3


def test_producers_and_devices_listed():
    assert VIKY in find_producers()
    report = list_devices(VIKY)
    assert not report.error
    assert [d.serial for d in report.devices] == ["0", "1", "2"]
    assert report.devices[0].vendor.startswith("Machine Vision")
    assert report.devices[0].model == "Viky"


def test_station_devices_command_json(capsys):
    from station.cli import main

    assert main(["devices", "--json", "--max-index", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["opencv_cameras"], list)
    assert isinstance(info["serial_ports"], list)
    viky = [p for p in info["genicam"] if p["producer"].endswith("viky.cti")]
    assert viky and viky[0]["devices"][0]["model"] == "Viky"
    assert main(["devices", "--no-genicam", "--max-index", "0"]) == 0
    text = capsys.readouterr().out
    assert "OpenCV cameras" in text and "Serial ports" in text


def test_a_copied_producer_loads_only_from_a_trusted_folder(tmp_path, monkeypatch):
    """The trust rule on the real producer: viky copied to a folder nobody listed is refused
    (never handed to harvesters); once STATION_GENTL_PATH names that folder, it delivers frames
    and is listed."""
    monkeypatch.delenv("STATION_GENTL_PATH", raising=False)
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    copy = tmp_path / "vendor" / "viky.cti"
    copy.parent.mkdir()
    shutil.copy(VIKY, copy)
    with pytest.raises(SourceError, match="STATION_GENTL_PATH"):
        GenICamSource(copy, "", width=96, height=64).open()
    assert "refused" in list_devices(copy).error
    assert copy not in find_producers()
    monkeypatch.setenv("STATION_GENTL_PATH", str(copy.parent))
    with GenICamSource(copy, "", width=160, height=120, pixel_format="Mono8") as source:
        frames = read_frames(source, 2)
    assert len(frames) == 2 and frames[0].image.shape == (120, 160)
    assert copy in find_producers()
