"""The hardware trigger: a GenICam camera in trigger mode, so each delivered frame is a part."""

from __future__ import annotations

from station.sources.base import Frame
from station.trigger.base import PartCounter, Trigger, TriggerEvent


class HardwareTrigger(Trigger):
    """A GenICam camera in trigger mode: the sensor fired the camera, so each frame is a part.

    A bouncing sensor fires the camera twice: a frame within ``debounce_ms`` of the last
    accepted one is dropped as a bounce (counted in ``debounced``).
    """

    name = "hardware"

    def __init__(self, counter: PartCounter | None = None, debounce_ms: float = 0.0) -> None:
        super().__init__(counter, debounce_ms)

    def on_frame(self, frame: Frame) -> list[TriggerEvent]:
        if not self._accept(frame.timestamp):
            return []
        return [self._emit(frame.timestamp, frame)]
