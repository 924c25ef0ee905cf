"""The engine's typed events: what a window or a terminal can follow without polling.

Each event is a psygnal signal with the type it carries, so a listener connects to the one
event it wants (``engine.events.part.connect(show)``) instead of filtering string kinds.
The signals are emitted from the engine's own threads (acquisition, inspection, serial); a
GUI re-posts them to its thread (``station.ui.bridge``). A listener that raises is logged
and never stops the engine.
"""

from __future__ import annotations

import logging
from typing import Any

from psygnal import Signal, SignalGroup, SignalInstance

from station.pipeline.alarms import Alarm
from station.pipeline.inspector import PartResult
from station.pipeline.line_state import EngineState, LineStatus

__all__ = ["EngineEvents", "EngineState", "LineStatus", "emit_safely"]

log = logging.getLogger(__name__)


class EngineEvents(SignalGroup):
    """``part``: a part has its verdict (inspected or shed); ``alarm``: an alarm is new;
    ``alarm_cleared``: its condition went away (it stays shown until acknowledged);
    ``state``: the engine started, stopped, or its source ended; ``line``: whether the line
    is inspected changed (:class:`LineStatus`: inspecting, stopped, not inspecting, reject
    output down, with the reason)."""

    part = Signal(PartResult)
    alarm = Signal(Alarm)
    alarm_cleared = Signal(Alarm)
    state = Signal(EngineState)
    line = Signal(LineStatus)


def emit_safely(signal: SignalInstance, payload: Any) -> None:
    """Emit ``payload``; a listener's exception is logged, not raised into an engine thread."""
    try:
        signal.emit(payload)
    except Exception:
        log.exception("engine listener failed on %s", signal.name)
