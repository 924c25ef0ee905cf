"""The alarm book: what the banner shows until the operator acknowledges it.

One alarm per kind while it is open: a condition that persists (a lost camera) updates its
alarm instead of piling up new ones. Alarms are stored in the records (their id is the
records' id) unless the records themselves are the fault, or the station keeps none.

Acknowledging says "I saw it", not "it is over": an alarm of a lasting kind (a lost camera,
a dead reject output: the engine reports their end) stays in the book, marked acknowledged,
until its cause is gone, so a window can keep showing it, quieter, while it lasts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from station.records import Records

log = logging.getLogger(__name__)

# Alarm kinds the banner shows.
ALARM_CAMERA = "camera_lost"
ALARM_SERIAL = "serial_lost"
ALARM_STREAK = "reject_streak"
ALARM_MODEL = "model_error"
ALARM_QUALITY = "image_quality"
ALARM_RECORDS = "records"
ALARM_OVERLOAD = "overload"
ALARM_TRIGGER = "trigger"
ALARM_REJECT_OUTPUT = "reject_output"  # a reject output was attempted and not delivered
# The MQTT broker cannot be reached (or the publish buffer dropped results): the line is
# inspected and protected as before, so this one never makes the line "not inspecting".
ALARM_MQTT = "mqtt"
# Alarms whose cause means the line is not being inspected (or not protected) while they last.
NOT_INSPECTING_KINDS = frozenset({ALARM_CAMERA, ALARM_TRIGGER, ALARM_SERIAL, ALARM_REJECT_OUTPUT})
# Kinds whose end the engine reports (clear_condition): acknowledged, they stay until it does.
# The others (a model error, a streak of rejects) are events with no end to wait for.
LASTING_KINDS = NOT_INSPECTING_KINDS | {ALARM_QUALITY, ALARM_OVERLOAD, ALARM_MQTT}
# The engine's own kinds: the records echo every alarm they store, and these are not theirs.
ENGINE_ALARMS = (ALARM_CAMERA, ALARM_SERIAL, ALARM_STREAK, ALARM_MODEL, ALARM_QUALITY,
                 ALARM_OVERLOAD, ALARM_TRIGGER, ALARM_REJECT_OUTPUT, ALARM_MQTT)


@dataclass(frozen=True)
class Alarm:
    """One alarm in the banner until the operator acknowledges it."""

    id: int
    kind: str
    message: str
    time: float = field(default_factory=time.time)
    active: bool = True  # the condition still holds (camera still lost, …)
    acknowledged_by: str = ""  # seen by this person; still shown while ``active``


class AlarmBook:
    """Raise, clear and acknowledge alarms; thread-safe (engine threads raise, the GUI acks).

    ``raised``/``cleared`` are called (outside the book's lock) when an alarm is new (or
    holds again) or its condition went away; the engine hands them its typed events.
    Listeners added with :meth:`add_change_listener` hear every change, acknowledgements
    included (the line state follows the book through them).
    """

    def __init__(self, records: Records | None, raised: Callable[[Alarm], None],
                 cleared: Callable[[Alarm], None]) -> None:
        self.records = records
        self._raised = raised
        self._cleared = cleared
        self._lock = threading.RLock()
        self._alarms: dict[int, Alarm] = {}
        self._seq = 0  # ids of alarms the records do not hold: negative, counting down
        self._open_by_kind: dict[str, int] = {}
        self._listeners: list[Callable[[], object]] = []

    def add_change_listener(self, cb: Callable[[], object]) -> None:
        """``cb()`` after any change of the book (outside its lock)."""
        self._listeners.append(cb)

    def _changed(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:
                log.exception("alarm book listener failed")

    def raise_alarm(self, kind: str, message: str) -> Alarm:
        """Show an alarm (one per kind while it is open) and record it."""
        with self._lock:
            open_id = self._open_by_kind.get(kind)
            known = self._alarms.get(open_id) if open_id is not None else None
            if known is not None:
                alarm = replace(known, message=message, active=True)
                self._alarms[alarm.id] = alarm
        if known is not None:
            if not known.active:  # it had cleared and holds again: the window must hear of it
                self._raised(alarm)
                self._changed()
            return alarm
        alarm_id = None
        if self.records is not None and kind != ALARM_RECORDS:
            try:
                alarm_id = self.records.raise_alarm(kind, message)
            except Exception:
                log.exception("could not record alarm %s", kind)
        with self._lock:
            if alarm_id is None:
                self._seq -= 1
                alarm_id = self._seq
            alarm = Alarm(alarm_id, kind, message)
            self._alarms[alarm_id] = alarm
            self._open_by_kind[kind] = alarm_id
        log.info("alarm %s: %s", kind, message)
        self._raised(alarm)
        self._changed()
        return alarm

    def clear_condition(self, kind: str, message: str = "") -> None:
        """The condition behind an alarm is gone; it stays shown until acknowledged
        (one acknowledged already leaves now)."""
        with self._lock:
            alarm_id = self._open_by_kind.get(kind)
            if alarm_id is None or alarm_id not in self._alarms:
                return
            old = self._alarms[alarm_id]
            if not old.active:
                return
            alarm = replace(old, active=False, message=message or old.message)
            if alarm.acknowledged_by:
                del self._alarms[alarm_id]
                del self._open_by_kind[kind]
            else:
                self._alarms[alarm_id] = alarm
        self._cleared(alarm)
        self._changed()

    def alarms(self) -> list[Alarm]:
        """Alarms to show, oldest first: not yet acknowledged, or acknowledged and lasting."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda a: a.time)

    def not_inspecting(self) -> list[Alarm]:
        """The conditions, still holding, under which parts pass unjudged or unprotected."""
        with self._lock:
            return sorted((a for a in self._alarms.values()
                           if a.active and a.kind in NOT_INSPECTING_KINDS),
                          key=lambda a: a.time)

    def acknowledge(self, alarm_id: int, who: str = "operator") -> None:
        """The operator saw it (acknowledged in the records). It leaves the book unless its
        cause still holds and is of a lasting kind: then it stays, marked acknowledged,
        until :meth:`clear_condition`."""
        with self._lock:
            alarm = self._alarms.get(alarm_id)
            if alarm is None or alarm.acknowledged_by:
                return
            if alarm.active and alarm.kind in LASTING_KINDS:
                self._alarms[alarm_id] = replace(alarm, acknowledged_by=who or "operator")
            else:
                del self._alarms[alarm_id]
                if self._open_by_kind.get(alarm.kind) == alarm_id:
                    del self._open_by_kind[alarm.kind]
        if self.records is not None and alarm_id > 0:
            self.records.acknowledge_alarm(alarm_id, who)
        self._changed()
