"""Engine events to the GUI thread.

The engine calls its listeners from its own threads (acquisition, inspection, serial); Qt
widgets may only be touched from the GUI thread. Events go into a thread-safe queue that a
QTimer drains on the GUI thread, so a burst of parts never floods the event loop and an
engine that was replaced (recipe switch) cannot reach the window any more.
"""

from __future__ import annotations

import queue
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal


class EngineBridge(QObject):
    """Re-emits the current engine's events as Qt signals on the GUI thread."""

    part = Signal(object)  # PartResult
    alarm = Signal(object)  # Alarm
    alarm_cleared = Signal(object)  # Alarm
    state = Signal(str)  # "running" | "stopped" | "ended"

    def __init__(self, parent: QObject | None = None, interval_ms: int = 20) -> None:
        super().__init__(parent)
        self._queue: queue.SimpleQueue[tuple[int, str, Any]] = queue.SimpleQueue()
        self._generation = 0
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.drain)
        self._timer.start(interval_ms)

    def attach(self, engine: Any) -> None:
        """Listen to ``engine``; events of engines attached before are dropped from now on."""
        self._generation += 1
        generation = self._generation

        def listener(kind: str, payload: Any) -> None:
            self._queue.put((generation, kind, payload))

        engine.add_listener(listener)

    def detach(self) -> None:
        """Stop delivering: the window is closing."""
        self._generation += 1
        self._timer.stop()

    def drain(self) -> None:
        """Deliver queued events (GUI thread). Bounded per call so drawing keeps its pace."""
        for _ in range(200):
            try:
                generation, kind, payload = self._queue.get_nowait()
            except queue.Empty:
                return
            if generation != self._generation:
                continue
            signal = {"part": self.part, "alarm": self.alarm,
                      "alarm_cleared": self.alarm_cleared, "state": self.state}.get(kind)
            if signal is not None:
                signal.emit(payload)
