"""Engine events to the GUI thread: the one place the engine's typed events meet Qt.

The engine emits its events (:class:`station.pipeline.EngineEvents`) from its own threads
(acquisition, inspection, serial); Qt widgets may only be touched from the GUI thread.
Events go into a thread-safe queue that a QTimer drains on the GUI thread, so a burst of
parts never floods the event loop and an engine that was replaced (recipe switch) cannot
reach the window any more.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, SignalInstance

from station.pipeline import Engine

# One queued event: the engine generation it came from, the Qt signal to emit, its payload.
_Queued = tuple[int, SignalInstance, Any]


class EngineBridge(QObject):
    """Re-emits the current engine's events as Qt signals (same names) on the GUI thread."""

    part = Signal(object)  # PartResult
    alarm = Signal(object)  # Alarm
    alarm_cleared = Signal(object)  # Alarm
    state = Signal(str)  # EngineState: "running" | "stopped" | "ended"
    line = Signal(object)  # LineStatus: inspecting, stopped, not inspecting, output down

    def __init__(self, parent: QObject | None = None, interval_ms: int = 20) -> None:
        super().__init__(parent)
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._generation = 0
        self._connected: list[tuple[Any, Callable[[Any], None]]] = []
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.drain)
        self._timer.start(interval_ms)

    def attach(self, engine: Engine) -> None:
        """Follow ``engine``; events of engines attached before are dropped from now on."""
        self._disconnect()
        self._generation += 1
        events = engine.events
        for source, target in ((events.part, self.part), (events.alarm, self.alarm),
                               (events.alarm_cleared, self.alarm_cleared),
                               (events.state, self.state), (events.line, self.line)):
            relay = self._relay(self._generation, target)
            source.connect(relay)
            self._connected.append((source, relay))

    def _relay(self, generation: int, target: SignalInstance) -> Callable[[Any], None]:
        """An engine-thread callback that queues the payload for ``target``."""
        def relay(payload: Any) -> None:
            self._queue.put((generation, target, payload))
        return relay

    def _disconnect(self) -> None:
        for source, relay in self._connected:
            source.disconnect(relay, missing_ok=True)
        self._connected.clear()

    def detach(self) -> None:
        """Stop delivering: the window is closing."""
        self._disconnect()
        self._generation += 1
        self._timer.stop()

    def drain(self) -> None:
        """Deliver queued events (GUI thread). Bounded per call so drawing keeps its pace."""
        for _ in range(200):
            try:
                generation, signal, payload = self._queue.get_nowait()
            except queue.Empty:
                return
            if generation == self._generation:
                signal.emit(payload)
