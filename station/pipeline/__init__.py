"""One part from frame to verdict (Inspector), and the threads that join the stages (Engine).

``engine`` the threads and queues, ``alarms`` the alarm book, ``line_state`` whether the
line is inspected, ``events`` the typed events a window or a terminal follows, ``rows`` the records' rows and their feeder, ``stats`` the
numbers, ``overlay`` the heatmap drawn over a crop.
"""

# The package's public names: import them from station.pipeline.
from station.pipeline.alarms import (
    ALARM_CAMERA,
    ALARM_MODEL,
    ALARM_MQTT,
    ALARM_OVERLOAD,
    ALARM_QUALITY,
    ALARM_RECORDS,
    ALARM_REJECT_OUTPUT,
    ALARM_SERIAL,
    ALARM_STREAK,
    ALARM_TRIGGER,
    NOT_INSPECTING_KINDS,
    Alarm,
    AlarmBook,
)
from station.pipeline.engine import Engine
from station.pipeline.events import EngineEvents, EngineState
from station.pipeline.line_state import LineState, LineStatus
from station.pipeline.overlay import heatmap_overlay
from station.pipeline.rows import RowFeeder
from station.pipeline.stats import EngineStats, percentile

__all__ = [
    "ALARM_CAMERA",
    "ALARM_MODEL",
    "ALARM_MQTT",
    "ALARM_OVERLOAD",
    "ALARM_QUALITY",
    "ALARM_RECORDS",
    "ALARM_REJECT_OUTPUT",
    "ALARM_SERIAL",
    "ALARM_STREAK",
    "ALARM_TRIGGER",
    "NOT_INSPECTING_KINDS",
    "Alarm",
    "AlarmBook",
    "Engine",
    "EngineEvents",
    "EngineState",
    "EngineStats",
    "LineState",
    "LineStatus",
    "RowFeeder",
    "heatmap_overlay",
    "percentile",
]
