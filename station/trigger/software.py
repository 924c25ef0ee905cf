"""The software trigger: the operator's button inspects the latest frame."""

from __future__ import annotations

import time

from station.trigger.base import FrameProvider, PartCounter, Trigger, TriggerEvent


class SoftwareTrigger(Trigger):
    """The operator's button: inspect the latest frame now.

    A press within ``debounce_ms`` of the last accepted one (a bouncing key, a double
    click) is the same part: ``fire`` returns that part's event and nothing new fires.
    """

    name = "software"

    def __init__(self, frames: FrameProvider | None = None, counter: PartCounter | None = None,
                 debounce_ms: float = 0.0) -> None:
        super().__init__(counter, debounce_ms)
        self.frames = frames

    def fire(self) -> TriggerEvent:
        t = time.monotonic()
        if not self._accept(t) and self._last_event is not None:
            return self._last_event
        frame = self.frames.latest() if self.frames is not None else None
        return self._emit(t, frame)
