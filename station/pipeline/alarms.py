"""The alarm book: what the banner shows until the operator acknowledges it.

One alarm per kind while it is open: a condition that persists (a lost camera) updates its
alarm instead of piling up new ones. Alarms are stored in the records (their id is the
records' id) unless the records themselves are the fault, or the station keeps none.
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
# Alarms whose cause means the line is not being inspected (or not protected) while they last.
NOT_INSPECTING_KINDS = frozenset({ALARM_CAMERA, ALARM_TRIGGER, ALARM_SERIAL})
# The engine's own kinds: the records echo every alarm they store, and these are not theirs.
ENGINE_ALARMS = (ALARM_CAMERA, ALARM_SERIAL, ALARM_STREAK, ALARM_MODEL, ALARM_QUALITY,
                 ALARM_OVERLOAD, ALARM_TRIGGER)


@dataclass(frozen=True)
class Alarm:
    """One alarm in the banner until the operator acknowledges it."""

    id: int
    kind: str
    message: str
    time: float = field(default_factory=time.time)
    active: bool = True  # the condition still holds (camera still lost, …)


class AlarmBook:
    """Raise, clear and acknowledge alarms; thread-safe (engine threads raise, the GUI acks).

    ``raised``/``cleared`` are called (outside the book's lock) when an alarm is new or its
    condition went away; the engine hands them its typed events.
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

    def raise_alarm(self, kind: str, message: str) -> Alarm:
        """Show an alarm (one per kind while it is open) and record it."""
        with self._lock:
            open_id = self._open_by_kind.get(kind)
            if open_id is not None and open_id in self._alarms:
                alarm = replace(self._alarms[open_id], message=message, active=True)
                self._alarms[open_id] = alarm
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
        return alarm

    def clear_condition(self, kind: str, message: str = "") -> None:
        """The condition behind an alarm is gone; it stays shown until acknowledged."""
        with self._lock:
            alarm_id = self._open_by_kind.get(kind)
            if alarm_id is None or alarm_id not in self._alarms:
                return
            alarm = replace(self._alarms[alarm_id], active=False,
                            message=message or self._alarms[alarm_id].message)
            self._alarms[alarm_id] = alarm
        self._cleared(alarm)

    def alarms(self) -> list[Alarm]:
        """Alarms not yet acknowledged, oldest first."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda a: a.time)

    def not_inspecting(self) -> list[Alarm]:
        """The conditions, still holding, under which parts pass unjudged or unprotected."""
        with self._lock:
            return sorted((a for a in self._alarms.values()
                           if a.active and a.kind in NOT_INSPECTING_KINDS),
                          key=lambda a: a.time)

    def acknowledge(self, alarm_id: int, who: str = "operator") -> None:
        """The operator saw it: off the banner (and acknowledged in the records)."""
        with self._lock:
            alarm = self._alarms.pop(alarm_id, None)
            if alarm is not None and self._open_by_kind.get(alarm.kind) == alarm_id:
                del self._open_by_kind[alarm.kind]
        if alarm is not None and self.records is not None and alarm_id > 0:
            self.records.acknowledge_alarm(alarm_id, who)
