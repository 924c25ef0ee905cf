"""The PLC's Reject bit as a reject output (``reject.output = "plc"``).

The reject scheduler (:class:`station.reject.RejectScheduler`) drives it exactly as it drives a
serial modem line: ``pulse_async`` at the part's reject point, so the fail-safe and the timing
error are measured by the one scheduler. The bit is held ``pulse_ms`` (a timer drops it) and
the Modbus / OPC UA servers show it; it outlives engine changeovers (the host owns it).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from psygnal import Signal

from station.reject.messages import SendResult


class RejectPulse:
    """The Reject bit: ``active`` while a pulse is held; ``changed(active)`` on each edge
    (emitted from the scheduler's timer thread or the falling-edge timer). ``pulses`` counts
    the pulses sent."""

    changed = Signal(bool)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False
        self._high = False  # the last edge emitted was a rise
        self.pulses = 0
        self.last_at: float | None = None

    @property
    def active(self) -> bool:
        with self._lock:
            return time.monotonic() < self._until

    def pulse_async(self, line: str, width_ms: float, direct: bool = False) -> Future:
        """Raise the bit now, drop it ``width_ms`` later; the future holds when it rose."""
        future: Future = Future()
        if width_ms <= 0:
            future.set_result(SendResult(False, None, error=f"pulse width {width_ms} ms: "
                                         "expected more than 0 ms"))
            return future
        with self._lock:
            if self._closed:
                future.set_result(SendResult(False, None, error="PLC interface is closed"))
                return future
            now = time.monotonic()
            # a fall the (late) timer has not emitted yet is emitted first: edges alternate
            fall_first = self._high and now >= self._until
            rising = fall_first or not self._high
            self._high = True
            self._until = max(self._until, now + width_ms / 1000.0)
            self.pulses += 1
            self.last_at = now
            self._arm(self._until - now)
        if fall_first:
            self.changed.emit(False)
        if rising:  # before the future's callbacks: the served bit rises at the reject point
            self.changed.emit(True)
        future.set_result(SendResult(True, now))
        return future

    def _arm(self, delay_s: float) -> None:
        """(Re)start the falling-edge timer; the caller holds the lock."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(delay_s, self._fall)
        self._timer.daemon = True
        self._timer.start()

    def _fall(self) -> None:
        """Drop the bit, unless this timer was replaced (the pulse was extended) or woke
        early: then the current timer, or a re-armed one, drops it, so no rise is left
        without its fall."""
        with self._lock:
            if self._closed or threading.current_thread() is not self._timer:
                return
            remaining = self._until - time.monotonic()
            if remaining > 0.0005:
                self._arm(remaining)
                return
            self._timer = None
            self._until = 0.0
            was, self._high = self._high, False
        if was:
            self.changed.emit(False)

    def close(self) -> None:
        """Drop the bit and stop the timer (the station shuts down)."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            was, self._high = self._high, False
            self._until = 0.0
        if timer is not None:
            timer.cancel()
            timer.join(1.0)
        if was:
            self.changed.emit(False)
