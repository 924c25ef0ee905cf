"""The engine's one line state and the alarm book under it: an acknowledged fault is kept
while it lasts, and the ``line`` event says when the line stops being inspected."""

from __future__ import annotations

import time
from pathlib import Path

from station.config import load_recipe
from station.pipeline import (
    ALARM_CAMERA,
    ALARM_REJECT_OUTPUT,
    ALARM_SERIAL,
    ALARM_STREAK,
    AlarmBook,
    Engine,
    LineState,
    LineStatus,
)
from station.pipeline.line_state import derive_status
from tests.e2e.test_engine import part_frames, wait_for, write_recipe


def _book() -> tuple[AlarmBook, list[str]]:
    heard: list[str] = []
    book = AlarmBook(None, raised=lambda a: heard.append(f"raised {a.kind}"),
                     cleared=lambda a: heard.append(f"cleared {a.kind}"))
    return book, heard


def test_an_acknowledged_fault_stays_until_its_cause_is_gone():
    book, heard = _book()
    camera = book.raise_alarm(ALARM_CAMERA, "camera lost: gone")
    streak = book.raise_alarm(ALARM_STREAK, "5 rejects in a row")
    book.acknowledge(camera.id, "anna")
    book.acknowledge(streak.id, "anna")  # an event with no end: it leaves at once
    (kept,) = book.alarms()
    assert kept.kind == ALARM_CAMERA and kept.active and kept.acknowledged_by == "anna"
    assert book.not_inspecting() == [kept]
    book.raise_alarm(ALARM_CAMERA, "camera lost: still gone")  # the same outage: same alarm
    assert [a.acknowledged_by for a in book.alarms()] == ["anna"]
    book.clear_condition(ALARM_CAMERA, "restored")
    assert book.alarms() == []  # seen and over
    assert heard == ["raised camera_lost", "raised reject_streak", "cleared camera_lost"]


def test_an_alarm_that_holds_again_is_announced_again():
    book, heard = _book()
    book.raise_alarm(ALARM_SERIAL, "lost")
    book.clear_condition(ALARM_SERIAL)
    book.raise_alarm(ALARM_SERIAL, "lost again")
    assert heard == ["raised serial_lost", "cleared serial_lost", "raised serial_lost"]
    assert [a.active for a in book.alarms()] == [True]


def test_the_line_state_puts_stopped_first_then_blind_then_outputs():
    book, _ = _book()
    serial = book.raise_alarm(ALARM_SERIAL, "serial link disconnected: no port")
    rules = {"reject_enabled": True, "serial_trigger": False}
    assert derive_status(False, "", book.alarms(), **rules).state == LineState.STOPPED
    down = derive_status(True, "", book.alarms(), **rules)
    assert down == LineStatus(LineState.REJECT_OUTPUT_DOWN, serial.message, (serial.id,),
                              (ALARM_SERIAL,), summary="serial link disconnected")
    assert down.title == "REJECT OUTPUT DOWN"
    # the same link as the trigger: parts are not even seen
    blind = derive_status(True, "", book.alarms(), reject_enabled=True, serial_trigger=True)
    assert blind.state == LineState.NOT_INSPECTING
    camera = book.raise_alarm(ALARM_CAMERA, "camera lost")
    book.acknowledge(camera.id)
    assert derive_status(True, "", book.alarms(), **rules).title == "NOT INSPECTING"
    book.clear_condition(ALARM_CAMERA)
    book.clear_condition(ALARM_SERIAL)
    assert derive_status(True, "", book.alarms(), **rules).inspecting
    assert derive_status(True, "source ended", [], **rules).state == LineState.NOT_INSPECTING


def test_a_reject_port_that_does_not_exist_is_reject_output_down(tiny_models: Path,
                                                                 tmp_path: Path):
    frames = part_frames(tmp_path / "frames", 2)
    recipe = load_recipe(write_recipe(
        tmp_path, tiny_models, camera=f'source = "folder"\ndevice = "{frames}"\nloop = true',
        reject=f'enabled = true\nport = "{tmp_path / "ttyUSB9"}"\nmode = "message"\n'
               'delay_ms = 50\nallow_url_ports = true', rule="autoencoder"))
    engine = Engine(recipe)
    engine.set_decision(ae_threshold=0.0001)  # every part a REJECT
    states: list[LineStatus] = []
    engine.events.line.connect(states.append)
    try:
        assert engine.line_state().state == LineState.STOPPED
        engine.start()
        assert states[-1].state == LineState.REJECT_OUTPUT_DOWN
        assert wait_for(lambda: any(a.kind == ALARM_REJECT_OUTPUT for a in engine.alarms()), 10.0)
        alarm = next(a for a in engine.alarms() if a.kind == ALARM_REJECT_OUTPUT)
        assert "reject output failed for part" in alarm.message
        for a in engine.alarms():
            engine.acknowledge(a.id)
        time.sleep(0.2)
        assert engine.line_state().state == LineState.REJECT_OUTPUT_DOWN
        assert {a.kind for a in engine.not_inspecting()} == {ALARM_SERIAL, ALARM_REJECT_OUTPUT}
        engine.stop()
        assert states[-1].state == LineState.STOPPED
    finally:
        engine.close()
