"""The engine's typed events: what a window or a terminal can follow without polling.

Each event is a psygnal signal with the type it carries, so a listener connects to the one
event it wants (``engine.events.part.connect(show)``) instead of filtering string kinds.
The signals are emitted from the engine's own threads (acquisition, inspection, serial); a
GUI re-posts them to its thread (``station.ui.bridge``). A listener that raises is logged
and never stops the engine.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from psygnal import Signal, SignalGroup, SignalInstance

from station.pipeline.alarms import Alarm
from station.pipeline.inspector import PartResult

log = logging.getLogger(__name__)


class EngineState(StrEnum):
    """Where the engine is: the ``state`` event's payload (equal to its plain string)."""

    RUNNING = "running"
    STOPPED = "stopped"
    ENDED = "ended"  # a finite source (file, folder) has no more frames


class EngineEvents(SignalGroup):
    """``part``: a part has its verdict (inspected or shed); ``alarm``: an alarm is new;
    ``alarm_cleared``: its condition went away (it stays shown until acknowledged);
    ``state``: the engine started, stopped, or its source ended."""

    part = Signal(PartResult)
    alarm = Signal(Alarm)
    alarm_cleared = Signal(Alarm)
    state = Signal(EngineState)


def emit_safely(signal: SignalInstance, payload: Any) -> None:
    """Emit ``payload``; a listener's exception is logged, not raised into an engine thread."""
    try:
        signal.emit(payload)
    except Exception:
        log.exception("engine listener failed on %s", signal.name)
