"""What every trigger shares: the event, the part counter, debounce, the listeners.

Debounce (``trigger.debounce_ms``): a serial, software or hardware trigger closer than that
to the last *accepted* one is the same part (a bouncing contact, a chattering sensor, a
double press): it is counted in ``debounced`` and fires nothing. The window runs from the
last accepted trigger, not from the last bounce, so a sensor stuck chattering still yields
one part per window: parts are never let through uninspected, and the engine sheds what it
cannot inspect (fail-safe, recorded). The free-run trigger needs no time debounce: it
tracks each part and fires once per track, and two parts side by side may cross the line in
the same frame.

A trigger that cannot work as configured (a free-run ROI outside the frame) says so to its
alarm listeners instead of failing silently frame after frame.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from station.sources.base import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerEvent:
    """One part: its id, when it was seen (monotonic s), the frame showing it, and by whom."""

    part_id: int
    t: float
    frame: Frame | None
    source: str
    box: tuple[int, int, int, int] | None = None  # where the part is in the frame (x, y, w, h)


class PartCounter:
    """The one source of part ids, shared by all triggers of a station (thread-safe)."""

    def __init__(self, start: int = 1) -> None:
        self._count = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)


class FrameProvider(Protocol):
    """What the event-driven triggers need from acquisition (``Acquisition`` has both)."""

    def latest(self) -> Frame | None: ...

    def closest(self, t: float, wait_s: float = 0.0) -> Frame | None: ...


TriggerListener = Callable[[TriggerEvent], None]
#: ``cb(message)``: why the trigger cannot work as configured; ``""`` = it works again.
TriggerAlarmListener = Callable[[str], None]


def check_debounce_ms(value: Any) -> float:
    """``trigger.debounce_ms`` as a number of milliseconds >= 0 (else a one-line error)."""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        ms = float("nan")
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"trigger.debounce_ms = {value!r}: expected a time >= 0 ms")
    return ms


class Trigger:
    """Common plumbing: the part counter, debounce, and the event and alarm listeners."""

    name = "trigger"

    def __init__(self, counter: PartCounter | None = None, debounce_ms: float = 0.0) -> None:
        self.counter = counter or PartCounter()
        self._listeners: list[TriggerListener] = []
        self._alarm_listeners: list[TriggerAlarmListener] = []
        self.fired = 0
        self.debounced = 0  # triggers ignored as bounces of the one before
        self.unseen = 0  # parts that went by without a trigger (the free-run trigger counts them)
        self.debounce_s = check_debounce_ms(debounce_ms) / 1000.0
        self._last_t: float | None = None
        self._last_event: TriggerEvent | None = None
        self._gate = threading.Lock()
        self._problem = ""

    def add_listener(self, callback: TriggerListener) -> None:
        self._listeners.append(callback)

    def add_alarm_listener(self, callback: TriggerAlarmListener) -> None:
        """``callback(message)`` when the trigger cannot work as configured ("" = fixed).

        A problem that already holds is told to the new listener at once.
        """
        self._alarm_listeners.append(callback)
        if self._problem:
            callback(self._problem)

    @property
    def problem(self) -> str:
        """Why the trigger cannot work as configured now ("" = it works)."""
        return self._problem

    def _report(self, message: str) -> None:
        """Tell the alarm listeners when the problem changes (once, not every frame)."""
        if message == self._problem:
            return
        self._problem = message
        if message:
            log.warning("%s trigger: %s", self.name, message)
        for callback in list(self._alarm_listeners):
            try:
                callback(message)
            except Exception:
                log.exception("trigger alarm listener failed")

    def _accept(self, t: float) -> bool:
        """Debounce: False (and counted) for a trigger within ``debounce_s`` of the last
        accepted one; see the module docstring for why the window starts there."""
        with self._gate:
            if self.debounce_s > 0 and self._last_t is not None and \
                    t - self._last_t < self.debounce_s:
                self.debounced += 1
                return False
            self._last_t = t
            return True

    def on_frame(self, frame: Frame) -> list[TriggerEvent]:
        """Look at one frame; the events it causes (none for event-driven triggers)."""
        return []

    def close(self) -> None:
        """Stop any worker; further triggers are ignored."""

    def _emit(self, t: float, frame: Frame | None,
              box: tuple[int, int, int, int] | None = None) -> TriggerEvent:
        event = TriggerEvent(self.counter.next(), t, frame, self.name, box)
        self.fired += 1
        self._last_event = event
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("trigger listener failed")
        return event
