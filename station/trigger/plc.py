"""The PLC's trigger: a Modbus coil or an OPC UA method call inspects the latest frame.

Unlike the operator's button (:class:`~station.trigger.software.SoftwareTrigger`), a trigger
within ``debounce_ms`` of the last accepted one is *refused* (``fire`` returns None): the
PLC's handshake (:mod:`station.plant.handshake`) tells the PLC so instead of handing it an
old part's id it would wait on twice. A trigger that comes before the camera's first frame
(the PLC fires right after the station starts) waits up to ``first_frame_s`` for it rather
than failing the part for want of a picture.
"""

from __future__ import annotations

import time

from station.trigger.base import FrameProvider, PartCounter, Trigger, TriggerEvent


class PlcTrigger(Trigger):
    """``fire()`` starts a part on the latest frame, or returns None when debounced."""

    name = "plc"

    def __init__(self, frames: FrameProvider | None = None, counter: PartCounter | None = None,
                 debounce_ms: float = 0.0, first_frame_s: float = 2.0) -> None:
        super().__init__(counter, debounce_ms)
        self.frames = frames
        self.first_frame_s = first_frame_s

    def fire(self) -> TriggerEvent | None:
        t = time.monotonic()
        if not self._accept(t):
            return None
        frame = None
        if self.frames is not None:
            frame = self.frames.latest() or self.frames.closest(t, self.first_frame_s)
        return self._emit(t, frame)
