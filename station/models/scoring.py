"""Score normalization: the ONE place a raw model score becomes the number a person sees.

Every score shown (UI, records' normalized column, evaluation) is on a scale where 1.0 is
exactly the model's stored threshold, whatever the model's raw scale is. A model file says
which of two maps it uses (``score_normalization.method`` in its metadata):

* ``ratio``: ``raw / threshold``, for scores with no upper bound (the autoencoder's);
* ``odds``: ``odds(raw) / odds(threshold)`` with ``odds(p) = p / (1 - p)``, for a
  probability (the classifier's ``p_defect``). A probability ratio squeezes every confident
  part into ``1 / threshold`` (1.0013 for a threshold of 0.9987), so when two models are
  fused by the larger of their scores, a classifier that is sure of a defect ranks below an
  autoencoder that is a little over its limit, and a good part the classifier gives 0.9
  ranks above a defect the autoencoder scores 0.8. The odds ratio is the exponential of the
  margin in logits, the scale the network computes in, so both ends keep their spread.
  Measured with ``station evaluate`` on the same models, 3-fold (docs/results.md, "The
  classifier's score as an odds ratio"): fused AUROC on the tiles 0.938 -> 0.965, on the
  screws 0.995 -> 0.996, with the two averaged networks station train writes (one
  over-confident network on the screws lost: 0.977 -> 0.966). No verdict changes: both maps
  send the threshold to 1.0.

Raw values stay in the records so a threshold change can be replayed.

>>> normalize(6.0, 4.0)
1.5
>>> round(normalize(0.9, 0.5, ODDS), 6), normalize(0.5, 0.5, ODDS)
(9.0, 1.0)
>>> round(denormalize(9.0, 0.5, ODDS), 6)
0.9
"""

from __future__ import annotations

import numpy as np

#: ``raw / threshold``
RATIO = "ratio"
#: ``odds(raw) / odds(threshold)`` for a probability
ODDS = "odds"
#: The normalization methods a model file may declare in ``score_normalization``.
METHODS = (RATIO, ODDS)
#: Probabilities are clipped to ``[P_CLIP, 1 - P_CLIP]`` before their odds are taken: a
#: float32 sigmoid reaches exactly 0.0 and 1.0, and a score must stay finite. Below any
#: float32 step next to 1 (6e-8), so that only 0.0 and 1.0 themselves are moved; a threshold
#: must lie strictly inside, so the clip never puts a part on the other side of it.
P_CLIP = 1e-12


#: ``score_normalization["evidence_spread"]``: how widely the log of this model's normalized
#: score spreads over good parts (station train measures it on its threshold's good images).
#: Dividing by it puts two models' scores in one unit, so the ``sum`` fusion rule can add them.
EVIDENCE_SPREAD = "evidence_spread"
#: ``score_normalization["evidence_offset"]``: this model's share of the pair's sum threshold
#: (half of it each, in evidence units, stamped by station train once both models exist), so
#: that the recipe's ``decision.sum_threshold = 0`` is the one chosen at training, as 1.0 is
#: each model's own threshold.
EVIDENCE_OFFSET = "evidence_offset"
#: The largest offset a model file may carry (evidence units).
MAX_EVIDENCE_OFFSET = 100.0
#: The smallest spread a model file may carry (one good part scoring like every other would
#: otherwise make a hair's difference count as a defect).
MIN_EVIDENCE_SPREAD = 0.05


def evidence_spread(normalized_good) -> float:
    """The spread of ``log(normalized score)`` over good parts, robust to a few outliers: the
    10 %-90 % range over 2.563 (a standard deviation for a normal spread), at least
    :data:`MIN_EVIDENCE_SPREAD`. A standard deviation let one good part the autoencoder scores
    near 0 (its log far below every other) triple a screw fold's spread.

    >>> round(evidence_spread(np.exp(np.linspace(-1.6018, 1.6018, 101))), 3)  # 10-90 %: 2.563
    1.0
    """
    logs = np.log(np.maximum(np.asarray(normalized_good, np.float64).ravel(), 1e-12))
    logs = logs[np.isfinite(logs)]
    if len(logs) < 2:
        return 1.0
    q10, q90 = np.quantile(logs, [0.1, 0.9])
    return float(max((q90 - q10) / 2.563, MIN_EVIDENCE_SPREAD))


def check_threshold(threshold: float, method: str = RATIO) -> float:
    """The threshold as a float, or a ``ValueError`` saying why it cannot be one."""
    threshold = float(threshold)
    if method not in METHODS:
        raise ValueError(f"unknown score normalization {method!r}; expected one of "
                         f"{', '.join(METHODS)}")
    if not np.isfinite(threshold) or threshold <= 0.0:
        raise ValueError(f"score threshold must be a positive finite number, got {threshold!r}")
    if method == ODDS and not P_CLIP < threshold < 1.0 - P_CLIP:
        raise ValueError(f"a probability's threshold must be above {P_CLIP:g} and below "
                         f"1 - {P_CLIP:g}, got {threshold!r}")
    return threshold


def _odds(p):
    p = np.clip(np.asarray(p, dtype=np.float64), P_CLIP, 1.0 - P_CLIP)
    return p / (1.0 - p)


def normalize(raw, threshold: float, method: str = RATIO):
    """Map raw score(s) so that the threshold lands on 1.0 (scalar in, scalar out; arrays too)."""
    threshold = check_threshold(threshold, method)
    if method == ODDS:
        out = _odds(raw) / _odds(threshold)
    else:
        out = np.asarray(raw, dtype=np.float64) / threshold
    return float(out) if np.isscalar(raw) else out


def denormalize(normalized, threshold: float, method: str = RATIO):
    """Inverse of :func:`normalize`: the raw score a normalized value stands for."""
    threshold = check_threshold(threshold, method)
    n = np.asarray(normalized, dtype=np.float64)
    if method == ODDS:
        odds = n * _odds(threshold)
        out = odds / (1.0 + odds)
    else:
        out = n * threshold
    return float(out) if np.isscalar(normalized) else out
