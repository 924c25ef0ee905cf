"""Pushing the part off: the reject scheduler (time or count, fail-safe) and the serial link.

The scheduler takes the recipe's ``[reject]`` section (:class:`station.config.RejectSection`)
as it is: the recipe loader has checked it.
"""

from station.reject.scheduler import (  # the package's public names: import them from station.reject
    PulseOutput,
    RejectConfigError,
    RejectScheduler,
)

__all__ = [
    "PulseOutput",
    "RejectConfigError",
    "RejectScheduler",
]
