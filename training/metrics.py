"""The one implementation of the detection metrics: ROC, AUROC, average precision, the
binary statistics (precision, recall, F1, F2) and AUPRO. numpy only, so training,
evaluation, reports and calibration all measure the same way.

>>> round(roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 2)
0.75
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

PRO_FPR = 0.3


def _prep(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = (np.asarray(labels).ravel() > 0).astype(np.int64)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    s = np.where(np.isnan(s), np.inf, s)  # no score (part not found) ranks as most defective
    return s, y


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending; starts at (0, 0)."""
    s, y = _prep(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # inf == inf: one group
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    p, n = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fps / n], np.r_[0.0, tps / p], np.r_[np.inf, s[distinct]]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (ties count half); NaN unless both classes are present."""
    s, y = _prep(scores, labels)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    finite = np.where(np.isinf(s), np.finfo(np.float64).max, s)
    order = np.argsort(finite, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = finite[order]
    # average ranks of tied groups
    starts = np.r_[0, np.nonzero(sorted_s[1:] != sorted_s[:-1])[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(scores, labels) -> float:
    """AUPR as average precision (step-wise, no interpolation); NaN without defects."""
    s, y = _prep(scores, labels)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # inf == inf: one group
    tps = np.cumsum(y)[distinct]
    precision = tps / (distinct + 1)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_stats(predicted, labels) -> dict[str, float]:
    """precision, recall, F1, F2, accuracy and the confusion counts."""
    p = np.asarray(predicted, bool).ravel()
    y = np.asarray(labels).ravel() > 0
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else (1.0 if tp + fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else float("nan")

    def fbeta(b: float) -> float:
        den = (1 + b * b) * tp + b * b * fn + fp
        return (1 + b * b) * tp / den if den else float("nan")

    return {"precision": precision, "recall": recall, "f1": fbeta(1.0), "f2": fbeta(2.0),
            "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def aupro(maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float = PRO_FPR,
          steps: int = 300) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr``.

    For each threshold: PRO = mean over connected defect regions of the share of the region
    at or above it; FPR = share of defect-free pixels at or above it. Thresholds are the
    good-pixel quantiles for FPRs 0 .. max_fpr evenly, and one past it; the curve goes
    through the FPR each threshold really gives, so tied map values (a flat or empty map)
    count as a straight line between the points they allow, as ties do in ROC, never as a
    perfect overlap at a small FPR.
    """
    neg, regions = [], []
    for m, gt in zip(maps, masks, strict=True):
        neg.append(m[~gt].ravel())
        if gt.any():
            n, lab = cv2.connectedComponents(gt.astype(np.uint8), connectivity=8)
            for r in range(1, n):
                regions.append(np.sort(m[lab == r].ravel()))
    if not regions:
        return float("nan")
    negs = np.sort(np.concatenate(neg))
    fprs = np.linspace(0.0, max_fpr, steps + 1)
    idx = np.clip(np.ceil((1.0 - fprs) * len(negs)).astype(np.int64), 0, len(negs) - 1)
    thr = negs[idx]
    thr[0] = np.nextafter(negs[-1], np.inf)
    below = np.searchsorted(negs, thr[-1], side="left") - 1
    if below >= 0:  # the next lower good-pixel value: a point past max_fpr to end the curve on
        thr = np.r_[thr, negs[below]]
    fpr = (len(negs) - np.searchsorted(negs, thr, side="left")) / len(negs)
    pro = np.zeros(len(thr))
    for reg in regions:
        pro += (len(reg) - np.searchsorted(reg, thr, side="left")) / len(reg)
    pro /= len(regions)
    inside = fpr < max_fpr
    x = np.r_[fpr[inside], max_fpr]
    y = np.r_[pro[inside], np.interp(max_fpr, fpr, pro)]
    return float(np.trapezoid(y, x) / max_fpr)


def image_metrics(norm_scores, labels, predicted) -> dict[str, Any]:
    """The per-model block of the JSON: ranking metrics and metrics at the stored threshold."""
    out: dict[str, Any] = {"image_auroc": roc_auc(norm_scores, labels),
                           "aupr": average_precision(norm_scores, labels)}
    out.update(binary_stats(predicted, labels))
    y = np.asarray(labels)
    out["n_good"], out["n_defect"] = int((y == 0).sum()), int((y == 1).sum())
    return out


def pixel_metrics(maps: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    """Pixel AUROC over every pixel, and AUPRO, of maps against their boolean masks
    (empty when no mask marks a defect)."""
    if not maps or not any(m.any() for m in masks):
        return {}
    flat_s = np.concatenate([m.ravel() for m in maps])
    flat_y = np.concatenate([m.ravel() for m in masks])
    return {"pixel_auroc": roc_auc(flat_s, flat_y), "aupro": aupro(maps, masks)}


def per_type(labels, types: list[str], scores, predicted) -> dict[str, dict[str, Any]]:
    """Per defect type: its count, its image AUROC against all good images, and its recall at
    the threshold that made ``predicted``; for ``good`` the false reject rate."""
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    predicted = np.asarray(predicted, bool)
    out: dict[str, dict[str, Any]] = {}
    good = labels == 0
    for t in sorted(set(types) - {"good"}):
        m = np.array([x == t for x in types])
        yy = np.r_[np.zeros(good.sum()), np.ones(m.sum())]
        out[t] = {"n": int(m.sum()), "image_auroc": roc_auc(np.r_[scores[good], scores[m]], yy),
                  "recall": float(predicted[m].mean()) if m.any() else float("nan")}
    if good.any():
        out["good"] = {"n": int(good.sum()), "false_reject_rate": float(predicted[good].mean())}
    return out
