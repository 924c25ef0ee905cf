"""The serial trigger: a sensor's pulse heard on the serial link picks the frame closest in time.

The link (``station.reject.serial_link``, which also parses the trigger lines) calls
``on_trigger`` with the pulse's time; this module only chooses the frame.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from station.trigger.base import FrameProvider, PartCounter, Trigger

log = logging.getLogger(__name__)


class SerialTrigger(Trigger):
    """A sensor's pulse over the serial link: the frame closest in time to the pulse.

    The link's listener only debounces and queues the time, so the serial thread never
    waits; a worker waits up to ``wait_s`` for a frame at or after the pulse and then picks
    the nearest.
    """

    name = "serial"

    def __init__(
        self,
        link: Any,
        frames: FrameProvider,
        counter: PartCounter | None = None,
        wait_s: float = 0.1,
        debounce_ms: float = 0.0,
    ) -> None:
        super().__init__(counter, debounce_ms)
        self.frames = frames
        self.wait_s = wait_s
        self._pending: queue.Queue[float | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="serial-trigger", daemon=True)
        self._worker.start()
        link.add_trigger_listener(self.on_trigger)

    def on_trigger(self, t: float) -> None:
        """The serial link saw a trigger at monotonic time ``t``."""
        if not self._closed and self._accept(t):
            self._pending.put(t)

    def _run(self) -> None:
        while True:
            t = self._pending.get()
            if t is None:
                return
            try:
                self._emit(t, self.frames.closest(t, self.wait_s))
            except Exception:
                log.exception("serial trigger at %.3f failed", t)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.put(None)
            self._worker.join(2.0)
