"""The one way the window writes a score or a threshold, so one part never shows two numbers.

``score_text`` is the records' own (``station.pipeline.rows``): the tile, the last-part
panel, the rejects browser and the stored reasons all round the same way (down).
"""

from __future__ import annotations

from station.pipeline.rows import limit_text, score_text

__all__ = ["limit_text", "score_text", "threshold_note"]


def threshold_note(ae: float, cls: float) -> str:
    """The line under the scores: what the numbers are measured against, as in force now."""
    if limit_text(ae) == limit_text(cls):
        if limit_text(ae) == "1.00":
            return "scores: 1.00 = reject threshold"
        return f"scores: reject at {limit_text(ae)} (1.00 = the models' own threshold)"
    return (f"scores: reject at anomaly {limit_text(ae)}, defect {limit_text(cls)} "
            "(1.00 = the models' own threshold)")
