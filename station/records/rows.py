"""What one part's record is: its fields, the verdicts a row may hold, and time helpers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from station.decision import VERDICTS  # noqa: E402  (the one definition)


class RecordsError(RuntimeError):
    """A records setting or file that cannot be used; the message says which and why."""


@dataclass
class PartRecord:
    """One inspected part, as the engine knows it when the verdict is in."""

    part_id: str
    verdict: str  # "PASS" | "REJECT" | "ERROR"
    recipe: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)
    ae_score_raw: float | None = None
    ae_score: float | None = None  # normalized: 1.0 = threshold
    cls_score_raw: float | None = None
    cls_score: float | None = None
    reasons: str = ""
    error: str = ""
    latency_ms: float | None = None
    time_epoch: float = field(default_factory=time.time)
    trigger_source: str = ""  # what triggered it: manual | serial | free_run | hardware | ...
    # what the reject output did, when known as the row is made (a manual trigger: never
    # fired); otherwise the scheduler's report fills these in (``Records.mark_reject``)
    reject_sent: int | None = None
    reject_action: str | None = None
    reject_reason: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: expected one of {', '.join(VERDICTS)}")
        # sqlite3 binds neither numpy scalars nor None into NOT NULL text: normalize here,
        # on the inspection thread, so the writer never refuses a row
        self.part_id = str(self.part_id)
        for name in ("recipe", "reasons", "error", "trigger_source"):
            setattr(self, name, "" if getattr(self, name) is None else str(getattr(self, name)))
        self.model_versions = {str(k): str(v) for k, v in (self.model_versions or {}).items()}
        for name in ("ae_score_raw", "ae_score", "cls_score_raw", "cls_score", "latency_ms"):
            value = getattr(self, name)
            setattr(self, name, None if value is None else float(value))
        self.time_epoch = float(self.time_epoch)



def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def parse_since(since: str | float | datetime | None) -> float | None:
    """An ISO date/time (naive = local time), a datetime or epoch seconds → epoch seconds."""
    if since is None or since == "":
        return None
    if isinstance(since, int | float):
        return float(since)
    if isinstance(since, datetime):
        return since.timestamp()
    try:
        return datetime.fromisoformat(str(since)).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {since!r}: expected an ISO date or time such as 2026-11-23 or "
            "2026-11-23T06:00:00"
        ) from None

