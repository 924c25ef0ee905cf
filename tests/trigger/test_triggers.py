"""Triggers: free-run line crossing on the simulated conveyor, serial, software, hardware."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from station.sources import Acquisition, FolderSource, Frame
from station.trigger import (
    FreeRunTrigger,
    HardwareTrigger,
    PartCounter,
    PlcTrigger,
    SerialTrigger,
    SoftwareTrigger,
    TriggerEvent,
    make_trigger,
)


def write_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), np.full((24, 32), 200, np.uint8))
    return folder


# -- free run on the simulated conveyor ----------------------------------------------------


def run_conveyor(direction: str, length_fraction_per_frame: float, parts: int, color: bool):
    """Feed ``parts`` parts' worth of conveyor frames to a free-run trigger; return the
    source, the events, the frame count, the line position (frame x) and the trigger."""
    from station.config import TriggerSection
    from station.sim.source import SimulatedSource
    from station.vision.localize import LocalizeParams

    fps, length, pitch = 30.0, 90.0, 140.0
    speed = length_fraction_per_frame * length * fps
    source = SimulatedSource(
        paced=False, width=320, height=160, fps=fps, speed_px_s=speed, pitch_px=pitch,
        defect_rate=0.3, seed=11, color=color, direction=direction, part_length_px=length,
    )
    # built the way the station builds it: the recipe's [trigger] and [localize] defaults
    trigger = make_trigger(TriggerSection(mode="free_run", line_frac=0.5, direction=direction),
                           localize=LocalizeParams())
    assert isinstance(trigger, FreeRunTrigger)
    n_frames = int((parts * pitch + 320) / (speed / fps))
    events: list[TriggerEvent] = []
    with source:
        for _ in range(n_frames):
            events.extend(trigger.on_frame(source.read()))
    line_x = 0.5 * 320 if direction == "left_to_right" else 320 - 0.5 * 320
    return source, events, n_frames, line_x, trigger


@pytest.mark.parametrize(
    ("direction", "per_frame", "color"),
    [("left_to_right", 0.12, False), ("right_to_left", 0.25, True)],
    ids=["rated-speed", "quarter-length-per-frame"],
)
def test_free_run_triggers_every_crossing_part_exactly_once(direction, per_frame, color):
    source, events, n_frames, line_x, trigger = run_conveyor(direction, per_frame, 100, color)
    assert trigger.unseen == 0 and trigger.problem == ""  # no part crossed between sightings
    conveyor = source.conveyor
    step = conveyor.speed_px_s / conveyor.fps
    sign = 1 if direction == "left_to_right" else -1

    # which part each event shows: the one whose centre has just passed the line
    shown: list[int] = []
    for event in events:
        nearest = min(event.frame.truth.parts, key=lambda p: abs(p.center_xy[0] - line_x))
        past = sign * (nearest.center_xy[0] - line_x)
        # past the line by at most one frame's travel (+ blob centroid vs. truth centre)
        assert -0.2 * conveyor.part_length_px <= past <= step + 0.2 * conveyor.part_length_px
        assert nearest.fully_visible
        shown.append(nearest.part_id)

    last_t = (n_frames - 1) / conveyor.fps
    crossing = {pid: conveyor.crossing_time(pid, line_x) for pid in range(1, 200)}
    must = {pid for pid, t in crossing.items() if 2 / conveyor.fps <= t <= last_t - 2 / conveyor.fps}
    may = {pid for pid, t in crossing.items() if 0 < t <= last_t + 1 / conveyor.fps}
    assert len(must) >= 98
    assert len(shown) == len(set(shown)), "a part was triggered twice"
    assert must <= set(shown), f"parts never triggered: {sorted(must - set(shown))}"
    assert set(shown) <= may, f"extra triggers: {sorted(set(shown) - may)}"
    assert [e.part_id for e in events] == list(range(1, len(events) + 1))
    assert all(e.frame.truth is not None for e in events)


@pytest.mark.parametrize("speed", [3000.0, 10000.0])
def test_free_run_says_when_parts_cross_the_line_between_frames(speed):
    """The simulated line's belt (960 x 540 at 30 frames/s, a part every 480 px) at a belt
    speed the tracker follows, and at 10,000 px/s, where a part moves 333 px between frames:
    parts are first seen already past the line and cannot be inspected. That was silent (a
    reviewer's run inspected 7 of 52 parts with no alarm); now it is an alarm that counts them,
    told again at 1, 2, 5, 10, 20, ... parts. (Parts an exact multiple of a frame's travel
    apart can alias: one part taken for the one before; the count is then low, never zero.)"""
    from station.config import TriggerSection
    from station.sim.source import SimulatedSource
    from station.vision.localize import LocalizeParams

    source = SimulatedSource(paced=False, width=960, height=540, fps=30.0, speed_px_s=speed,
                             pitch_px=480.0, defect_rate=0.2, seed=0)
    trigger = make_trigger(TriggerSection(mode="free_run", line_frac=0.5),
                           localize=LocalizeParams())
    assert isinstance(trigger, FreeRunTrigger)
    heard: list[str] = []
    trigger.add_alarm_listener(heard.append)
    parts = 50
    events = 0
    with source:
        for _ in range(int(parts * 480 / (speed / 30))):
            events += len(trigger.on_frame(source.read()))
    if speed < 5000:
        assert events >= parts - 1 and trigger.unseen == 0 and heard == []
        return
    assert trigger.unseen >= 20
    assert [m.split(": ")[1].split(" part")[0] for m in heard][:5] == ["1", "2", "5", "10", "20"]
    assert heard[0].startswith("parts crossed the trigger line unseen: 1 part(s) since the "
                               "start were first seen past it and not inspected")
    assert "slow the belt, raise the frame rate" in trigger.problem


def test_free_run_does_not_count_a_fired_part_found_again_past_the_line():
    # fired at x = 190, lost for five frames (longer than a track lives), found again further on
    trigger = FreeRunTrigger(line_frac=0.5)
    events = feed(trigger, [[90], [130], [190], [], [], [], [], [], [290]])
    assert sum(len(e) for e in events) == 1
    assert trigger.unseen == 0 and trigger.problem == ""
    # a new part that appears past the line after parts were seen coming in is counted
    events = feed(trigger, [[20], [60], [100], [], [], [], [], [], [250]])
    assert trigger.unseen == 1 and "1 part(s)" in trigger.problem
    # the alarm clears once 20 parts in a row have crossed in view and fired
    one_part = [[20], [60], [100], [140], [180], [220], [260], [], [], [], [], []]
    fired = sum(len(e) for e in feed(trigger, one_part * 19))
    assert fired == 19 and trigger.problem.startswith("parts crossed the trigger line unseen")
    assert sum(len(e) for e in feed(trigger, one_part)) == 1 and trigger.problem == ""
    assert trigger.unseen == 1  # the count stays: it is the run's


# -- free run on hand-drawn frames: the rules one at a time ------------------------------------


def belt(parts_x: list[float], width: int = 320, height: int = 120, length: int = 80,
         seed: int = 0) -> np.ndarray:
    """A light, noisy belt with dark bars (parts) centred at the given x."""
    rng = np.random.default_rng(seed)
    image = (195 + rng.integers(0, 15, (height, width))).astype(np.uint8)
    for x in parts_x:
        x0, x1 = round(x - length / 2), round(x + length / 2)
        image[height // 2 - 10 : height // 2 + 10, max(0, x0) : max(0, x1)] = 60
    return image


def feed(trigger: FreeRunTrigger, positions: list[list[float]]) -> list[list[TriggerEvent]]:
    out = []
    for i, xs in enumerate(positions):
        out.append(trigger.on_frame(Frame(belt(xs, seed=i), i, 100.0 + i / 30, "test")))
    return out


def test_free_run_fires_once_for_a_part_that_jumps_over_the_line():
    trigger = FreeRunTrigger(line_frac=0.5)  # line at x = 160
    events = feed(trigger, [[90], [130], [190], [230], [270]])
    assert [len(e) for e in events] == [0, 0, 1, 0, 0]
    event = events[2][0]
    assert event.frame.seq == 2  # the frame in which it crossed
    assert 100.0 + 1 / 30 < event.t < 100.0 + 2 / 30  # crossing time interpolated
    assert event.source == "free_run"


def test_free_run_waits_until_the_part_is_fully_visible():
    # line at x = 32: at x = 36 the centre is past it but the part (80 px) is still cut by
    # the frame edge; at x = 44 it is whole, and that frame is the one inspected
    trigger = FreeRunTrigger(line_frac=0.1)
    events = feed(trigger, [[-10], [20], [36], [44], [60], [90]])
    assert [len(e) for e in events] == [0, 0, 0, 1, 0, 0]
    assert events[3][0].frame.seq == 3


def test_free_run_ignores_parts_already_past_the_line_and_an_empty_belt():
    trigger = FreeRunTrigger(line_frac=0.5)
    events = feed(trigger, [[200], [230], [], [], [260]])
    assert sum(len(e) for e in events) == 0


def test_free_run_respects_roi_and_direction():
    # ROI = right half; parts travel right to left, so the line sits 0.25 of the ROI in from
    # its right edge, at x = 320 - 40 = 280; at x = 300 the part is still cut by the edge
    trigger = FreeRunTrigger(roi=(160, 0, 160, 120), line_frac=0.25, direction="right_to_left")
    events = feed(trigger, [[300], [270], [230], [190], [150]])
    assert [len(e) for e in events] == [0, 1, 0, 0, 0]
    # the same motion seen left to right never crosses that ROI's line the right way
    trigger = FreeRunTrigger(roi=(160, 0, 160, 120), line_frac=0.25, direction="left_to_right")
    assert sum(len(e) for e in feed(trigger, [[300], [270], [230], [190], [150]])) == 0
    with pytest.raises(ValueError, match="direction 'sideways' is unknown"):
        FreeRunTrigger(direction="sideways")


# -- the other triggers ----------------------------------------------------------------------


def test_software_trigger_takes_the_latest_frame_and_shares_the_counter(tmp_path):
    counter = PartCounter(start=41)
    acq = Acquisition(FolderSource(write_folder(tmp_path / "f", 10), fps=200.0))
    software = SoftwareTrigger(acq, counter)
    hardware = HardwareTrigger(counter)
    heard: list[TriggerEvent] = []
    software.add_listener(heard.append)
    with acq:
        assert acq.wait_finished(3.0)
        event = software.fire()
    assert event.frame is acq.latest() and event.frame.seq == 9
    assert event.part_id == 41 and heard == [event]
    frame = acq.latest()
    assert [e.part_id for e in hardware.on_frame(frame)] == [42]  # same counter
    assert hardware.on_frame(frame)[0].frame is frame and software.fire().part_id == 44


def test_serial_trigger_takes_the_frame_closest_to_the_pulse(tmp_path):
    from station.reject.serial_link import SerialLink

    master, slave = os.openpty()
    link = SerialLink(os.ttyname(slave), 115200, trigger_message="TRIG\n")
    acq = Acquisition(FolderSource(write_folder(tmp_path / "f", 8), fps=50.0, loop=True))
    trigger = SerialTrigger(link, acq, wait_s=0.1)
    got: list[TriggerEvent] = []
    done = threading.Event()

    def heard(event: TriggerEvent) -> None:
        got.append(event)
        if len(got) == 3:
            done.set()

    trigger.add_listener(heard)
    try:
        assert link.wait_connected(3.0)
        with acq:
            time.sleep(0.2)
            for _ in range(3):
                os.write(master, b"TRIG\n")
                time.sleep(0.12)
            assert done.wait(3.0)
    finally:
        trigger.close()
        link.close()
        os.close(master)
        os.close(slave)
    assert [e.part_id for e in got] == [1, 2, 3]
    assert all(e.source == "serial" and e.frame is not None for e in got)
    # the nearest frame of a 50 fps stream is at most half a period (+ scheduling) away
    assert all(abs(e.frame.timestamp - e.t) < 0.5 / 50 + 0.015 for e in got)


def test_plc_trigger_before_the_first_frame_waits_for_it(tmp_path):
    """A PLC that triggers as the station starts gets a picture, not a failed part."""
    acq = Acquisition(FolderSource(write_folder(tmp_path / "f", 4), fps=20.0, loop=True))
    trigger = PlcTrigger(acq, first_frame_s=3.0)
    fired: list[TriggerEvent | None] = []
    worker = threading.Thread(target=lambda: fired.append(trigger.fire()))
    worker.start()
    time.sleep(0.2)  # the PLC's trigger is waiting: no frame yet
    assert not fired
    with acq:
        worker.join(3.0)
        assert fired and fired[0] is not None and fired[0].frame is not None
        assert fired[0].frame.timestamp >= fired[0].t  # the first frame after the trigger
        later = trigger.fire()
    assert later is not None and later.frame is not None and later.part_id == 2
    no_camera = PlcTrigger(None)
    assert no_camera.fire().frame is None  # no camera at all: the part fails at once


def test_make_trigger_from_recipe_sections():
    from station.config import TriggerSection
    from station.vision.localize import LocalizeParams

    trigger = make_trigger(
        TriggerSection(mode="free_run", line_frac=0.4, direction="top_to_bottom"),
        localize=LocalizeParams(roi=(10, 20, 200, 100), polarity="auto"),
    )
    assert isinstance(trigger, FreeRunTrigger)
    assert trigger.roi == (10, 20, 200, 100) and trigger.line_frac == 0.4
    assert trigger.polarity == "dark_on_light"
    assert isinstance(make_trigger(TriggerSection(mode="hardware")), HardwareTrigger)
    with pytest.raises(ValueError, match="serial link"):
        make_trigger(TriggerSection(mode="serial"))


# -- debounce --------------------------------------------------------------------------------


def test_hardware_trigger_drops_a_bouncing_sensors_second_frame():
    """A bouncing sensor fires the camera twice 5 ms apart: one part, the bounce counted."""
    trigger = HardwareTrigger(debounce_ms=50)
    image = np.zeros((8, 8), np.uint8)
    times = [t0 + dt for t0 in (10.0, 10.2, 10.4) for dt in (0.0, 0.005)]
    events = [e for i, t in enumerate(times) for e in trigger.on_frame(Frame(image, i, t, "cam"))]
    assert [e.frame.seq for e in events] == [0, 2, 4]
    assert trigger.fired == 3 and trigger.debounced == 3
    # the window runs from the last accepted trigger: a sensor stuck chattering every 10 ms
    # still gives a part every 50 ms, never none (parts are never let through uninspected)
    chatter = HardwareTrigger(debounce_ms=50)
    fired = [len(chatter.on_frame(Frame(image, i, 20.0 + 0.01 * i, "cam"))) for i in range(20)]
    assert sum(fired) == 4 and chatter.debounced == 16


def test_software_trigger_double_press_is_one_part(tmp_path):
    acq = Acquisition(FolderSource(write_folder(tmp_path / "f", 3), fps=200.0))
    software = SoftwareTrigger(acq, PartCounter(), debounce_ms=200)
    heard: list[TriggerEvent] = []
    software.add_listener(heard.append)
    with acq:
        assert acq.wait_finished(3.0)
        first = software.fire()
        again = software.fire()  # a bouncing key: the same part, nothing new fires
        time.sleep(0.25)
        later = software.fire()
    assert again is first and heard == [first, later]
    assert later.part_id == first.part_id + 1 and software.debounced == 1


def test_serial_trigger_debounces_a_bouncing_sensor(tmp_path):
    """The audit's case: each part's sensor sends TRIG twice, 5 ms apart; debounce 50 ms.
    14 parts, not 28."""
    from station.reject.serial_link import SerialLink

    master, slave = os.openpty()
    link = SerialLink(os.ttyname(slave), 115200, trigger_message="TRIG\n")
    acq = Acquisition(FolderSource(write_folder(tmp_path / "f", 8), fps=50.0, loop=True))
    trigger = make_trigger(SimpleNamespace(mode="serial", debounce_ms=50.0), frames=acq,
                           serial_link=link)
    got: list[TriggerEvent] = []
    trigger.add_listener(got.append)
    try:
        assert link.wait_connected(3.0)
        with acq:
            for _ in range(14):
                os.write(master, b"TRIG\n")
                time.sleep(0.005)
                os.write(master, b"TRIG\n")
                time.sleep(0.1)
            time.sleep(0.3)
    finally:
        trigger.close()
        link.close()
        os.close(master)
        os.close(slave)
    assert len(got) == 14 and trigger.debounced == 14
    assert link.stats.triggers == 28  # the link heard every message; the trigger judged them


def test_debounce_setting_is_checked():
    with pytest.raises(ValueError, match=r"trigger.debounce_ms = -1: expected a time >= 0 ms"):
        HardwareTrigger(debounce_ms=-1)
    with pytest.raises(ValueError, match="trigger.debounce_ms = 'x'"):
        make_trigger(SimpleNamespace(mode="hardware", debounce_ms="x"))
    assert make_trigger(SimpleNamespace(mode="hardware")).debounce_s == pytest.approx(0.02)


# -- settings and ROIs under which free run could never fire --------------------------------


@pytest.mark.parametrize("line_frac", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_free_run_refuses_a_line_on_or_beyond_the_roi_edge(line_frac):
    with pytest.raises(ValueError, match=r"trigger.line_frac = .*strictly between 0 and 1"):
        FreeRunTrigger(line_frac=line_frac)


def test_free_run_refuses_settings_that_find_nothing():
    with pytest.raises(ValueError, match=r"min_area_frac = 0.3 > localize.max_area_frac = 0.1"):
        FreeRunTrigger(min_area_frac=0.3, max_area_frac=0.1)
    with pytest.raises(ValueError, match=r"localize.roi = \(-5, 0, 10, 10\)"):
        FreeRunTrigger(roi=(-5, 0, 10, 10))


def test_free_run_roi_outside_the_frame_raises_an_alarm_not_an_exception():
    """The audit's case: an ROI beyond a 640x480 frame raised ZeroDivisionError on every
    frame (logged, swallowed): no parts and nothing said. Now: no exception, one alarm."""
    trigger = FreeRunTrigger(roi=(700, 500, 100, 100))
    heard: list[str] = []
    trigger.add_alarm_listener(heard.append)
    image = np.full((480, 640), 200, np.uint8)
    for i in range(5):
        assert trigger.on_frame(Frame(image, i, float(i), "cam")) == []
    assert heard == ["trigger ROI 700,500,100,100 lies outside the 640x480 frame: no part can "
                     "be seen (fix localize.roi)"]
    assert trigger.problem == heard[0]
    late: list[str] = []
    trigger.add_alarm_listener(late.append)  # a listener added later hears it too
    assert late == heard


def test_free_run_roi_partly_outside_watches_what_is_inside_and_says_so():
    # ROI = right half, but 40 px wider than the frame: clipped to x 160..320
    trigger = FreeRunTrigger(roi=(160, 0, 200, 120), line_frac=0.25, direction="right_to_left")
    heard: list[str] = []
    trigger.add_alarm_listener(heard.append)
    events = feed(trigger, [[300], [270], [230], [190], [150]])
    assert [len(e) for e in events] == [0, 1, 0, 0, 0]  # as with the ROI inside the frame
    assert heard == ["trigger ROI 160,0,200,120 reaches outside the 320x120 frame: watching "
                     "160,0,160,120 only (fix localize.roi)"]
    # a frame it fits again clears the problem
    trigger.on_frame(Frame(np.full((120, 400), 200, np.uint8), 9, 200.0, "test"))
    assert heard[-1] == "" and trigger.problem == ""
