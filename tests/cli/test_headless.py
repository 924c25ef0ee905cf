"""The headless terminal line says a part's scores as every screen does."""

from __future__ import annotations

from station.cli.headless import part_line
from station.decision import Verdict
from station.pipeline.inspector import PartResult


def test_a_sure_classifier_reads_as_over_100_and_a_near_pass_is_not_rounded_up():
    """A confident classifier's odds ratio (billions) says no more to an operator than "over
    100 times its threshold", and a 0.998 on a PASS must not read as 1.00 (at the limit)."""
    sure = part_line(PartResult("235", Verdict.REJECT, ae_score=7.28, cls_score=7.98e9,
                                latency_ms=21.1))
    assert "ae  7.28" in sure and "cls  ≥100" in sure and "7977" not in sure
    near = part_line(PartResult("236", Verdict.PASS, ae_score=0.998, cls_score=0.01))
    assert "ae  0.99" in near and "cls  0.01" in near
