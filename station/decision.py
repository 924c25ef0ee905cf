"""The fusion rule: normalized model scores -> verdict ``PASS`` / ``REJECT`` / ``ERROR``.

The engine and ``station evaluate``'s ``fused`` verdict both call :func:`decide`, so what the
evaluation measures is what the line does. A score is defective when it is at or above its
(normalized) threshold; 1.0 is the threshold each model was exported with.
"""

from __future__ import annotations

import math

PASS = "PASS"
REJECT = "REJECT"
ERROR = "ERROR"
VERDICTS = (PASS, REJECT, ERROR)

#: either = reject when any model says defective; both = only when both do;
#: autoencoder / classifier = that model alone decides.
RULES = ("either", "both", "autoencoder", "classifier")


def _usable(score: float | None) -> bool:
    return score is not None and math.isfinite(float(score))


def decide(
    ae_norm: float | None,
    cls_norm: float | None,
    rule: str,
    ae_threshold: float = 1.0,
    cls_threshold: float = 1.0,
) -> str:
    """Verdict for one part; ``ERROR`` when a score the rule needs is missing or not finite.

    ``ae_threshold``/``cls_threshold`` are on the normalized scale (1.0 = the model's own
    threshold), so a recipe can make the line stricter or looser without re-exporting.
    """
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; expected one of {', '.join(RULES)}")
    ae_bad = _usable(ae_norm) and float(ae_norm) >= ae_threshold
    cls_bad = _usable(cls_norm) and float(cls_norm) >= cls_threshold
    if rule == "autoencoder":
        if not _usable(ae_norm):
            return ERROR
        return REJECT if ae_bad else PASS
    if rule == "classifier":
        if not _usable(cls_norm):
            return ERROR
        return REJECT if cls_bad else PASS
    if not (_usable(ae_norm) and _usable(cls_norm)):
        return ERROR
    if rule == "either":
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
    if rule == "autoencoder":
        return a
    if rule == "classifier":
        return c
    return max(a, c) if rule == "either" else min(a, c)
