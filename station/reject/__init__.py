"""Pushing the part off: the reject scheduler (time or count, fail-safe) and the serial link."""

from station.reject.scheduler import (  # the package's public names: import them from station.reject
    RejectConfigError,
    RejectScheduler,
    RejectSettings,
)

__all__ = [
    "RejectConfigError",
    "RejectScheduler",
    "RejectSettings",
]
