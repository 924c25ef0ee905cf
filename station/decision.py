"""The fusion rule: normalized model scores -> verdict ``PASS`` / ``REJECT`` / ``ERROR``.

The engine and ``station evaluate``'s ``fused`` verdict both call :func:`decide`, so what the
evaluation measures is what the line does. A score is defective when it is at or above its
(normalized) threshold; 1.0 is the threshold each model was exported with.
"""

from __future__ import annotations

import math
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


# the module-level names other code has always used
PASS = Verdict.PASS
REJECT = Verdict.REJECT
ERROR = Verdict.ERROR
VERDICTS = tuple(Verdict)
RULES = tuple(Rule)


def _usable(score: float | None) -> TypeGuard[float]:
    return score is not None and math.isfinite(float(score))


def decide(
    ae_norm: float | None,
    cls_norm: float | None,
    rule: str,
    ae_threshold: float = 1.0,
    cls_threshold: float = 1.0,
) -> Verdict:
    """Verdict for one part; ``ERROR`` when a score the rule needs is missing or not finite.

    ``ae_threshold``/``cls_threshold`` are on the normalized scale (1.0 = the model's own
    threshold), so a recipe can make the line stricter or looser without re-exporting.
    """
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; expected one of {', '.join(RULES)}")
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
    return REJECT if (ae_bad and cls_bad) else PASS


def fused_score(
    ae_norm: float,
    cls_norm: float,
    rule: str,
    ae_threshold: float = 1.0,
    cls_threshold: float = 1.0,
) -> float:
    """A continuous score whose ``>= 1.0`` is exactly :func:`decide`'s ``REJECT`` (for AUROC).

    either -> max of the threshold-scaled scores, both -> min, single model -> that model's.
    """
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; expected one of {', '.join(RULES)}")
    a = float(ae_norm) / ae_threshold if ae_norm is not None else math.nan
    c = float(cls_norm) / cls_threshold if cls_norm is not None else math.nan
    if rule == Rule.AUTOENCODER:
        return a
    if rule == Rule.CLASSIFIER:
        return c
    return max(a, c) if rule == Rule.EITHER else min(a, c)
