"""Score normalization: the ONE place a raw model score becomes the number a person sees.

Every score shown (UI, records' normalized column, evaluation) is ``raw / threshold``, so
1.0 is exactly the model's stored threshold whatever the model's raw scale is. Raw values
stay in the records so a threshold change can be replayed.
"""

from __future__ import annotations

import numpy as np

#: The only normalization method a model file may declare in ``score_normalization``.
RATIO = "ratio"
METHODS = (RATIO,)


def normalize(raw, threshold: float):
    """Map raw score(s) so that the threshold lands on 1.0 (scalar in, scalar out; arrays too)."""
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold <= 0.0:
        raise ValueError(f"score threshold must be a positive finite number, got {threshold!r}")
    if np.isscalar(raw):
        return float(raw) / threshold  # type: ignore[arg-type]  # np.isscalar: a number
    return np.asarray(raw, dtype=np.float64) / threshold


def denormalize(normalized, threshold: float):
    """Inverse of :func:`normalize`: the raw score a normalized value stands for."""
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold <= 0.0:
        raise ValueError(f"score threshold must be a positive finite number, got {threshold!r}")
    if np.isscalar(normalized):
        return float(normalized) * threshold  # type: ignore[arg-type]  # a number
    return np.asarray(normalized, dtype=np.float64) * threshold
