"""Is the line being inspected? One answer, from the engine's state, for every view.

The verdict tile, the status bar, the alarm list and the terminal must not each guess from
the last verdict whether the station still protects the line: a lost camera leaves the last
PASS on the tile, a dead reject output leaves an ordinary red REJECT. :class:`LineWatch`
derives the one :class:`LineStatus` from the running flag and the alarm book (acknowledged
or not: an acknowledged fault still holds) and emits it as the engine's ``line`` event
whenever it changes. It also turns the stages' fault callbacks (camera, trigger, serial
link, reject outputs) into alarms, so the engine keeps only the wiring.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

from station.pipeline.alarms import (
    ALARM_CAMERA,
    ALARM_REJECT_OUTPUT,
    ALARM_SERIAL,
    ALARM_TRIGGER,
    Alarm,
    AlarmBook,
)
from station.records import Records
from station.sources import CAMERA_LOST, CAMERA_RESTORED, SOURCE_ENDED

# notify(event name, payload): the engine emits its typed event of that name (events.py)
Notify = Callable[[str, Any], None]


class EngineState(StrEnum):
    """Where the engine is: the ``state`` event's payload (equal to its plain string)."""

    RUNNING = "running"
    STOPPED = "stopped"
    ENDED = "ended"  # a finite source (file, folder) has no more frames


class LineState(StrEnum):
    """What the station does for the line now (the ``line`` event's state)."""

    INSPECTING = "inspecting"
    STOPPED = "stopped"
    NOT_INSPECTING = "not_inspecting"  # no frames, or a trigger that cannot see parts
    REJECT_OUTPUT_DOWN = "reject_output_down"  # judged, but a REJECT cannot leave the line


TITLES = {LineState.INSPECTING: "INSPECTING", LineState.STOPPED: "STOPPED",
          LineState.NOT_INSPECTING: "NOT INSPECTING",
          LineState.REJECT_OUTPUT_DOWN: "REJECT OUTPUT DOWN"}


@dataclass(frozen=True)
class LineStatus:
    """The line state, why (the alarms' messages, and ``summary``: their first clauses, for
    a tile read from afar), and the alarms behind it (ids and kinds)."""

    state: LineState
    reason: str = ""
    alarm_ids: tuple[int, ...] = ()
    kinds: tuple[str, ...] = ()
    summary: str = ""

    @property
    def title(self) -> str:
        """The words the tile shows: "NOT INSPECTING", "REJECT OUTPUT DOWN", "STOPPED"."""
        return TITLES[self.state]

    @property
    def inspecting(self) -> bool:
        return self.state == LineState.INSPECTING


def _status(state: LineState, alarms: list[Alarm], extra: str = "") -> LineStatus:
    messages = [a.message for a in alarms] + ([extra] if extra else [])
    return LineStatus(state, "; ".join(messages), tuple(a.id for a in alarms),
                      tuple(a.kind for a in alarms),
                      "; ".join(m.split(":", 1)[0] for m in messages))


def derive_status(running: bool, ended: str, alarms: list[Alarm], *, reject_enabled: bool,
                  serial_trigger: bool) -> LineStatus:
    """The line state from the running flag, a finished source and the alarms that hold.

    Stopped first (nothing is inspected, whatever else is wrong), then anything that keeps
    parts from being judged, then a reject output that cannot act on the verdicts.
    """
    if not running:
        return LineStatus(LineState.STOPPED, "press START (F5) to inspect",
                          summary="press START (F5) to inspect")
    holding = [a for a in alarms if a.active]
    blind = [a for a in holding if a.kind in (ALARM_CAMERA, ALARM_TRIGGER)
             or (a.kind == ALARM_SERIAL and serial_trigger)]
    if blind or ended:
        return _status(LineState.NOT_INSPECTING, blind, ended)
    down = [a for a in holding if a.kind == ALARM_REJECT_OUTPUT
            or (a.kind == ALARM_SERIAL and reject_enabled)]
    if down:
        return _status(LineState.REJECT_OUTPUT_DOWN, down)
    return LineStatus(LineState.INSPECTING)


class LineWatch:
    """The engine's alarm book, the stages' fault callbacks, and the line state over them.

    ``notify(name, payload)`` emits the engine's typed event ``name`` (``alarm``,
    ``alarm_cleared``, ``state``, ``line``); ``running`` reads the engine's flag; the engine calls :meth:`refresh` when it starts or
    stops, the book calls it on every change. Thread-safe: callbacks come from the
    acquisition, trigger, serial and reject threads.
    """

    def __init__(self, records: Records | None, notify: Notify,
                 running: Callable[[], bool]) -> None:
        self._notify = notify
        self.book = AlarmBook(records, raised=partial(notify, "alarm"),
                              cleared=partial(notify, "alarm_cleared"))
        self._running = running
        self.reject_enabled = False
        self.serial_trigger = False
        self.closing = False  # the port closing on purpose is not a lost link
        self.ended = ""  # why a finite source has no more frames ("" while it has)
        self._lock = threading.Lock()
        self._last = self.status()
        self.book.add_change_listener(self.refresh)

    def status(self) -> LineStatus:
        return derive_status(self._running(), self.ended, self.book.alarms(),
                             reject_enabled=self.reject_enabled,
                             serial_trigger=self.serial_trigger)

    def refresh(self) -> LineStatus:
        """Recompute; emit the ``line`` event if it changed (under the lock: in order)."""
        with self._lock:
            status = self.status()
            if status != self._last:
                self._last = status
                self._notify("line", status)
        return status

    def started(self) -> None:
        self.ended = ""
        self.refresh()

    # -- the stages' callbacks ---------------------------------------------------------------
    def on_source(self, kind: str, message: str) -> None:
        """The acquisition: camera lost / restored, or a finite source ended."""
        if kind == CAMERA_LOST:
            self.book.raise_alarm(ALARM_CAMERA, f"camera lost: {message}")
        elif kind == CAMERA_RESTORED:
            self.book.clear_condition(ALARM_CAMERA, f"camera lost, now restored: {message}")
        elif kind == SOURCE_ENDED:
            self.ended = f"the camera source ended: {message}"
            self._notify("state", EngineState.ENDED)
            self.refresh()

    def on_trigger(self, message: str) -> None:
        """The trigger cannot work as configured (an ROI outside the frame), or works again."""
        if message:
            self.book.raise_alarm(ALARM_TRIGGER, message)
        else:
            self.book.clear_condition(ALARM_TRIGGER)

    def on_serial_state(self, state: str, message: str) -> None:
        if self.closing:
            return
        if state == "connected":
            self.book.clear_condition(ALARM_SERIAL, f"serial link lost, now back: {message}")
            self.book.clear_condition(ALARM_REJECT_OUTPUT, f"serial link back: {message}")
        else:
            self.book.raise_alarm(ALARM_SERIAL, f"serial link {state}: {message}")

    def on_fired(self, part_id: str, action: str, scheduled: float, actual: float | None,
                 reason: str) -> None:
        """The reject scheduler's outcome of one part: a failed output is an alarm that
        holds until an output gets through again (or the link comes back)."""
        if action == "reject_failed":
            self.book.raise_alarm(ALARM_REJECT_OUTPUT,
                                  f"reject output failed for part {part_id}: {reason}")
        elif action == "reject":
            self.book.clear_condition(ALARM_REJECT_OUTPUT,
                                      f"reject output works again (part {part_id})")
