"""Threshold rules, chosen on validation scores (never on the images a model is judged on).

* defects in validation -> the F1-optimal cut (the autoencoder's), or the recall-optimal
  one (the classifier's: the lowest cut within the false-reject budget), each placed midway
  between the lowest score it rejects and the highest score it passes (a margin on both
  sides, not on a sample);
* good parts only -> a high quantile of the good scores plus a margin proportional to their
  spread, so at most ``1 - quantile`` of good parts fall above it and never all of them.

Scores are "higher = more defective"; a part is rejected when ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: smallest threshold ever returned: model metadata refuses non-positive thresholds.
MIN_THRESHOLD = 1e-6

#: The largest share of good validation parts one model's threshold may reject. F1 alone
#: favours recall when defects outnumber good parts in validation, and with ``either`` the
#: two models' false rejects add up on a line where most parts are good. Screws, 3-fold CV,
#: both thresholds chosen again from the same runs' logged scores: at 20 % per model the
#: fused decision rejected 23 of 147 good parts with the held-aside ones (F1 0.825), at 5 %
#: 3 of 147 (F1 0.933), for test F1 0.957 against 0.959.
MAX_FALSE_REJECT = 0.05


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen raw threshold and how it was chosen (written into the model metadata)."""

    value: float
    rule: str  # "f1_optimal" | "recall_optimal" | "good_quantile"
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(scores, labels=None) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.zeros(len(s), dtype=np.int64) if labels is None else np.asarray(labels).ravel()
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if len(s) == 0:
        raise ValueError("no validation scores to choose a threshold from")
    if not np.all(np.isfinite(s)):
        raise ValueError("validation scores contain NaN or infinite values")
    return s, (y > 0).astype(np.int64)


def _cut(rule: str, value: float, s: np.ndarray, y: np.ndarray, **details: Any
         ) -> ThresholdChoice:
    """A cut on labeled validation scores, with what it rejects there."""
    value = max(float(value), MIN_THRESHOLD)
    pred = s >= value
    return ThresholdChoice(value=value, rule=rule, details={
        **details, "n_good": int((y == 0).sum()), "n_defect": int(y.sum()),
        "tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum())})


def f1_optimal(scores, labels, beta: float = 1.0,
               max_false_reject: float | None = None) -> ThresholdChoice:
    """The cut maximizing F-beta on (scores, labels); needs at least one defect and one good.

    ``max_false_reject`` (a share of the good validation parts) limits the cuts considered:
    when defects outnumber good parts, a weak score's F1 optimum is "reject everything",
    which no line can run; the cap keeps the threshold usable and the metric honest.
    """
    s, y = _clean(scores, labels)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("F1-optimal threshold needs both good and defective validation samples")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    # only cut between distinct scores: index i = last sample rejected
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, fp = tp[last], fp[last]
    cut_scores = s_sorted[last]
    pos = y.sum()
    b2 = beta * beta
    fbeta = (1 + b2) * tp / np.maximum((1 + b2) * tp + b2 * (pos - tp) + fp, 1)
    if max_false_reject is not None:
        allowed = fp <= max_false_reject * (len(y) - pos)
        allowed[0] = True  # the strictest cut is always possible
        fbeta = np.where(allowed, fbeta, -1.0)
    best = int(np.argmax(fbeta))  # first max = highest threshold among ties: fewest rejects
    lowest_rejected = cut_scores[best]
    below = s[s < lowest_rejected]
    if len(below):
        value = 0.5 * (lowest_rejected + below.max())
    else:  # everything rejected is optimal (no good sample scored lower): stay just below
        value = lowest_rejected - 0.5 * abs(lowest_rejected) * 1e-3
    return _cut("f1_optimal", value, s, y, beta=beta, f_beta=float(fbeta[best]),
                max_false_reject=max_false_reject)


def good_quantile(scores, quantile: float = 0.99, margin: float = 0.5) -> ThresholdChoice:
    """``q + margin * (q - median)`` of good scores (q = the quantile), above the median always.

    The margin scales with the spread of good scores, so it is unit-free; when the good
    scores do not spread at all, a relative margin keeps the threshold above them.
    """
    s, _ = _clean(scores)
    if not 0.5 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0.5, 1), got {quantile}")
    q = float(np.quantile(s, quantile))
    med = float(np.median(s))
    spread = q - med
    if spread <= 0:
        spread = max(abs(q), 1.0) * 0.05
    value = max(q + margin * spread, MIN_THRESHOLD)
    return ThresholdChoice(
        value=float(value),
        rule="good_quantile",
        details={
            "quantile": quantile,
            "margin": margin,
            "q": q,
            "median": med,
            "n_good": int(len(s)),
            "good_rejected": int((s >= value).sum()),
        },
    )


def recall_optimal(scores, labels, max_false_reject: float = MAX_FALSE_REJECT
                   ) -> ThresholdChoice:
    """The lowest cut that rejects at most ``max_false_reject`` of the good validation parts:
    as many defects as the false-reject budget buys (a Neyman-Pearson cut).

    It is set by the good parts, the side of validation with the numbers to say where it lies;
    the F1 optimum is set by the defects, and where only a handful of them score (a
    classifier's validation defects, 10 or 11 per fold on the screws) it lands just under
    the lowest of them, above new defects that score a little lower. Placed midway between
    the highest good score it passes and the lowest score it rejects, as the F1 cut is.

    >>> c = recall_optimal([1.0, 2.0, 3.0, 9.0, 10.0], [0, 0, 0, 1, 1])
    >>> c.value, c.details["fp"], c.details["tp"]
    (6.0, 0, 2)
    """
    s, y = _clean(scores, labels)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("a recall-optimal threshold needs both good and defective validation "
                         "samples")
    good = np.sort(s[y == 0])[::-1]
    allowed = int(np.floor(max_false_reject * len(good) + 1e-9))
    highest_passed = good[min(allowed, len(good) - 1)]
    above = s[s > highest_passed]
    if len(above):
        value = 0.5 * (highest_passed + above.min())
    else:  # nothing scores above the goods the budget must pass: just above them, reject none
        value = highest_passed + max(0.5 * abs(highest_passed) * 1e-3, MIN_THRESHOLD)
    return _cut("recall_optimal", value, s, y, max_false_reject=max_false_reject)


def choose_threshold(scores, labels=None, quantile: float = 0.99, margin: float = 0.5,
                     max_false_reject: float = MAX_FALSE_REJECT, aim: str = "f1"
                     ) -> ThresholdChoice:
    """When validation has both classes, the F1-optimal cut (``aim="f1"``) or the
    recall-optimal one (``aim="recall"``), each rejecting at most ``max_false_reject`` of the
    good validation parts; otherwise the good-quantile rule."""
    if aim not in ("f1", "recall"):
        raise ValueError(f"threshold aim {aim!r}: expected f1 or recall")
    s, y = _clean(scores, labels)
    if 0 < y.sum() < len(y):
        if aim == "recall":
            return recall_optimal(s, y, max_false_reject=max_false_reject)
        return f1_optimal(s, y, max_false_reject=max_false_reject)
    if y.sum() == len(y):
        raise ValueError("validation has only defective samples: need good parts for a threshold")
    return good_quantile(s, quantile=quantile, margin=margin)
