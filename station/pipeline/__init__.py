"""One part from frame to verdict (Inspector), and the threads that join the stages (Engine)."""

from station.pipeline.engine import (  # the package's public names: import them from station.pipeline
    ALARM_CAMERA,
    ALARM_OVERLOAD,
    ALARM_SERIAL,
    ALARM_TRIGGER,
    Engine,
    EngineStats,
    _RowFeeder,
    heatmap_overlay,
    percentile,
)

__all__ = [
    "ALARM_CAMERA",
    "ALARM_OVERLOAD",
    "ALARM_SERIAL",
    "ALARM_TRIGGER",
    "Engine",
    "EngineStats",
    "_RowFeeder",
    "heatmap_overlay",
    "percentile",
]
