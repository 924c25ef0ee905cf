"""The engine's numbers: counts, latencies and rates of the parts it finished.

:class:`PartTally` keeps them as parts finish; :class:`EngineStats` is the snapshot the
status bar and the headless printout show.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from station.decision import PASS, REJECT
from station.pipeline.inspector import PartResult

COUNT_KEYS = ("parts", "passed", "rejected", "errors", "late", "shed")


@dataclass(frozen=True)
class EngineStats:
    """What the status bar and the headless printout show."""

    running: bool
    source: str
    camera_fps: float
    frames: int
    dropped_frames: int  # frames missing from the camera's nominal rate (gaps); every frame
    # that arrives goes through the trigger, so none are dropped after acquisition
    inspect_fps: float
    parts: int
    passed: int
    rejected: int
    errors: int
    late: int  # parts the queue could not take in time: the shed ones (the status bar's name)
    latency_p50_ms: float
    latency_p99_ms: float
    serial_state: str
    reject_timing: dict[str, float]
    models: dict[str, str]
    shed: int = 0  # parts not inspected under overload: fail-safe action, ERROR record
    debounced: int = 0  # triggers ignored as bounces of the one before (not parts)
    unseen: int = 0  # parts that crossed the free-run trigger's line unseen: not inspected
    rows_waiting: int = 0  # rows in the engine's backlog, not yet handed to the records
    rows_lost: int = 0  # rows that could not be recorded at all (alarmed); 0 unless broken


class PartTally:
    """Counts, recent results and latencies of finished parts.

    Not locked itself: the engine updates and reads it under its own lock, so a part's
    count, its result and its record row go out together.
    """

    def __init__(self, results: int = 500, latencies: int = 1000, times: int = 240) -> None:
        self.results: deque[PartResult] = deque(maxlen=results)
        self.latencies: deque[float] = deque(maxlen=latencies)
        self.done_times: deque[float] = deque(maxlen=times)  # monotonic, inspected parts only
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.streak = 0  # rejects (or errors) in a row among inspected parts
        self.last: PartResult | None = None

    def note(self, result: PartResult, shed: bool, now: float) -> int:
        """Count a finished part; returns the reject streak it leaves."""
        self.last = result
        self.results.append(result)
        if not shed:
            self.latencies.append(result.latency_ms)
            self.done_times.append(now)
        c = self.counts
        c["parts"] += 1
        c["late"] += int(shed)
        c["shed"] += int(shed)
        if result.verdict == PASS:
            c["passed"] += 1
            self.streak = 0
        else:
            c["rejected" if result.verdict == REJECT else "errors"] += 1
            self.streak += int(not shed)  # a shed part says nothing about the line
        return self.streak

    def reset_counts(self) -> None:
        """A new shift: the counts start again (results and latencies stay)."""
        self.counts = dict.fromkeys(self.counts, 0)


def inspect_rate(done_times: list[float], now: float, window_s: float = 5.0) -> float:
    """Parts per second over the last ``window_s`` seconds (0 with fewer than two)."""
    recent = [t for t in done_times if now - t <= window_s]
    return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 else 0.0


def percentile(values: list[float], q: float, empty: float = 0.0) -> float:
    """Nearest-rank quantile of already sorted ``values`` (the status bar's and bench's)."""
    if not values:
        return empty
    return float(values[min(len(values) - 1, int(round(q * (len(values) - 1))))])
