"""The fusion rule: normalized model scores -> verdict ``PASS`` / ``REJECT`` / ``ERROR``.

The engine and ``station evaluate``'s ``fused`` verdict both call :func:`decide`, so what the
evaluation measures is what the line does. A score is defective when it is at or above its
(normalized) threshold; 1.0 is the threshold each model was exported with.

``sum`` adds the two models' evidence instead of taking either's verdict: each score as
``log(score / threshold) / spread - offset`` (``spread``: how widely that model's log score
spreads over good parts; ``offset``: its half of the sum's threshold chosen at training; both
kept in its file), so a part one model finds a little suspicious and the other finds clean
passes, and one both find a little suspicious is rejected; the recipe's ``sum_threshold``
(0 = as trained) makes the line stricter or looser. With ``either`` each model's false
rejects add up on a line of good parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeGuard


class Verdict(StrEnum):
    """What the station says about one part. A StrEnum, so records, JSON and the serial
    message template see the plain text ("PASS") and comparisons with strings still hold."""

    PASS = "PASS"
    REJECT = "REJECT"
    ERROR = "ERROR"  # the part could not be inspected; decision.on_error says what happens


class Rule(StrEnum):
    """How the two models' verdicts are fused (the recipe's ``decision.rule``)."""

    EITHER = "either"  # reject when any model says defective
    BOTH = "both"  # reject only when both do
    AUTOENCODER = "autoencoder"  # that model alone decides
    CLASSIFIER = "classifier"
    SUM = "sum"  # reject when the two models' evidence, added, reaches decision.sum_threshold


# the module-level names other code has always used
PASS = Verdict.PASS
REJECT = Verdict.REJECT
ERROR = Verdict.ERROR
VERDICTS = tuple(Verdict)
RULES = tuple(Rule)


def _usable(score: float | None) -> TypeGuard[float]:
    return score is not None and math.isfinite(float(score))


def evidence(score: float, threshold: float, spread: float) -> float:
    """A normalized score as evidence of a defect: 0 at ``threshold``, in units of the
    model's spread over good parts (a score of 0 counts as very little evidence, not -inf).

    >>> evidence(1.0, 1.0, 2.0), round(evidence(math.e, 1.0, 2.0), 3)
    (0.0, 0.5)
    """
    return math.log(max(float(score), 1e-12) / threshold) / spread


@dataclass(frozen=True)
class Evidence:
    """What the ``sum`` rule needs beyond the thresholds: each model's spread and offset
    (from its file) and the sum a part must reach (the recipe's ``decision.sum_threshold``)."""

    ae_spread: float
    cls_spread: float
    threshold: float = 0.0
    ae_offset: float = 0.0
    cls_offset: float = 0.0

    def parts(self, ae_norm: float, cls_norm: float, ae_threshold: float = 1.0,
              cls_threshold: float = 1.0) -> tuple[float, float]:
        """Each model's evidence: what it brings to the sum."""
        return (evidence(ae_norm, ae_threshold, self.ae_spread) - self.ae_offset,
                evidence(cls_norm, cls_threshold, self.cls_spread) - self.cls_offset)

    def total(self, ae_norm: float, cls_norm: float, ae_threshold: float = 1.0,
              cls_threshold: float = 1.0) -> float:
        return sum(self.parts(ae_norm, cls_norm, ae_threshold, cls_threshold))


def decide(
    ae_norm: float | None,
    cls_norm: float | None,
    rule: str,
    ae_threshold: float = 1.0,
    cls_threshold: float = 1.0,
    sums: Evidence | None = None,
) -> Verdict:
    """Verdict for one part; ``ERROR`` when a score the rule needs is missing or not finite.

    ``ae_threshold``/``cls_threshold`` are on the normalized scale (1.0 = the model's own
    threshold), so a recipe can make the line stricter or looser without re-exporting.
    ``sums`` is what the ``sum`` rule adds the scores with (required for it).
    """
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; expected one of {', '.join(RULES)}")
    if rule == Rule.SUM and sums is None:
        raise ValueError("the sum rule needs each model's evidence spread (station train "
                         "writes it into the model files)")
    ae_bad = _usable(ae_norm) and float(ae_norm) >= ae_threshold
    cls_bad = _usable(cls_norm) and float(cls_norm) >= cls_threshold
    if rule == Rule.AUTOENCODER:
        if not _usable(ae_norm):
            return ERROR
        return REJECT if ae_bad else PASS
    if rule == Rule.CLASSIFIER:
        if not _usable(cls_norm):
            return ERROR
        return REJECT if cls_bad else PASS
    if not (_usable(ae_norm) and _usable(cls_norm)):
        return ERROR
    if rule == Rule.EITHER:
        return REJECT if (ae_bad or cls_bad) else PASS
    if rule == Rule.SUM:
        assert sums is not None
        total = sums.total(ae_norm, cls_norm, ae_threshold, cls_threshold)
        return REJECT if total >= sums.threshold else PASS
    return REJECT if (ae_bad and cls_bad) else PASS


def fused_score(
    ae_norm: float,
    cls_norm: float,
    rule: str,
    ae_threshold: float = 1.0,
    cls_threshold: float = 1.0,
    sums: Evidence | None = None,
) -> float:
    """A continuous score whose ``>= 1.0`` is exactly :func:`decide`'s ``REJECT`` (for AUROC).

    either -> max of the threshold-scaled scores, both -> min, single model -> that model's,
    sum -> ``exp(total evidence - sum_threshold)``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; expected one of {', '.join(RULES)}")
    if rule == Rule.SUM:
        if sums is None:
            raise ValueError("the sum rule needs each model's evidence spread")
        if ae_norm is None or cls_norm is None:
            return math.nan
        total = sums.total(ae_norm, cls_norm, ae_threshold, cls_threshold)
        return math.exp(min(total - sums.threshold, 700.0)) if math.isfinite(total) else math.nan
    a = float(ae_norm) / ae_threshold if ae_norm is not None else math.nan
    c = float(cls_norm) / cls_threshold if cls_norm is not None else math.nan
    if rule == Rule.AUTOENCODER:
        return a
    if rule == Rule.CLASSIFIER:
        return c
    return max(a, c) if rule == Rule.EITHER else min(a, c)
