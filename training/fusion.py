"""How the two models' verdicts are fused, chosen on the images neither model learned from.

Each model's own threshold is chosen first, on its own validation images
(:mod:`training.thresholds`); here the rule the recipe fragment names, and the ``sum``
rule's threshold, which ``station train`` always measures and stamps into both model files
(half each, :func:`stamp_sum_threshold`), so that ``station evaluate --rule sum`` can judge
any new model folder and a recipe's ``decision.sum_threshold = 0`` is the trained one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from station.decision import Evidence, decide
from station.models import scoring
from station.models.metadata import ModelMetadata
from training.metrics import roc_auc
from training.thresholds import MAX_FALSE_REJECT, recall_optimal

#: validation image AUROC a model needs to take part in an ``auto`` rule
MIN_FUSED_AUROC = 0.75


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def stamp_sum_threshold(paths: list[Path], threshold: float) -> None:
    """Write half of the pair's sum threshold into each model file (and its int8 copy) as
    its ``evidence_offset``: the models are exported before the pair's threshold is known."""
    import onnx

    from training.export import write_metadata

    for path in paths:
        if not path.is_file():
            continue
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                 .metadata_props}
        meta = ModelMetadata.from_props(props, path)
        norm = {**meta.score_normalization, scoring.EVIDENCE_OFFSET: threshold / 2.0}
        write_metadata(path, replace(meta, score_normalization=norm))


def sum_threshold(ae: np.ndarray, cl: np.ndarray, labels: np.ndarray, spreads: tuple[float, float],
                  max_false_reject: float = MAX_FALSE_REJECT) -> float:
    """The ``sum`` rule's threshold: the lowest total evidence that rejects at most
    ``max_false_reject`` of the good fusion images (the classifier's recall-optimal cut, on
    the sum); 0 (each model at its own threshold) without labeled defects to set it by.

    >>> sum_threshold(np.array([1.0, 0.5, 4.0]), np.array([0.5, 1.0, 8.0]), np.array([0, 0, 1]),
    ...               (1.0, 1.0)) > 0
    True
    """
    sums = Evidence(*spreads)
    total = np.array([sums.total(a, c) for a, c in zip(ae, cl, strict=True)])
    y = np.asarray(labels) > 0
    ok = np.isfinite(total)
    total, y = total[ok], y[ok]
    if not 0 < y.sum() < len(y):
        return 0.0
    shift = 1.0 - float(total.min())  # the cut rules work on positive scores
    cut = recall_optimal(total + shift, y, max_false_reject).value - shift
    limit = 2 * scoring.MAX_EVIDENCE_OFFSET  # each model file carries half, within its range
    return float(np.clip(cut, -limit, limit))


def fusion_rule(ae: np.ndarray, cl: np.ndarray, labels: np.ndarray, rule: str,
                spreads: tuple[float, float] | None = None,
                max_false_reject: float = MAX_FALSE_REJECT) -> tuple[str, float, float, dict]:
    """The fusion rule and its recipe thresholds (normalized), from validation images.

    Each model's threshold is already chosen on its own validation images (the autoencoder's
    F1-optimal, the classifier's recall-optimal, both within ``TrainOptions.max_false_reject``
    of the good ones), so the recipe keeps both at 1.0: re-tuning the pair jointly on a grid
    fits the few dozen fusion images and not new parts (screws, 3-fold, the same models: pooled
    held-out F1 0.931 tuned against 0.959 at each model's own threshold). ``auto`` is
    ``either``: the two models miss different defects, so a part is rejected when either says
    so. Only a model whose validation AUROC is below ``MIN_FUSED_AUROC`` while the other's is
    not is left out (on real screws a 0.55 autoencoder pulled the fused AUROC from 0.98 to
    0.96). ``auto`` used to pick among ``either`` and each model alone by validation F1, but on
    a few dozen images that choice was noise: on the development screws (3-fold) it picked a
    single model in every fold and pooled held-out F1 0.920, where ``either`` gave 0.984 (fused
    AUROC 0.972 against 0.990); on the tiles it picked the classifier alone (0.914 against
    0.926). ``both`` lets a defect pass when either model misses it (screws, 3-fold: pooled
    fused F1 0.87); a recipe may still ask for it, or for one model alone. With both models'
    ``spreads`` the ``sum`` rule's threshold is chosen too (:func:`sum_threshold`), whichever
    rule is asked for, and returned as ``sum_threshold``.
    """
    y = labels > 0
    tuning: dict[str, Any] = {"tuned": False}
    if spreads is not None:
        tuning["sum_threshold"] = sum_threshold(ae, cl, labels, spreads, max_false_reject)
    elif rule == "sum":
        raise ValueError("the sum rule needs both models' evidence spreads")
    if not 0 < y.sum() < len(y):
        return ("either" if rule == "auto" else rule), 1.0, 1.0, tuning
    aurocs = {"autoencoder": roc_auc(ae, labels), "classifier": roc_auc(cl, labels)}
    chosen = rule
    if rule == "auto":
        weak = [k for k, v in aurocs.items() if not v >= MIN_FUSED_AUROC]
        chosen = next(k for k in aurocs if k not in weak) if len(weak) == 1 else "either"
    sums = Evidence(*spreads, tuning["sum_threshold"]) if spreads is not None else None
    pred = np.array([decide(x, z, chosen, 1.0, 1.0, sums) == "REJECT"
                     for x, z in zip(ae, cl, strict=True)])
    return chosen, 1.0, 1.0, {**tuning, "val_f1": _f1(pred, y),
                              "val_false_reject": float(pred[~y].mean()),
                              "n": int(len(labels)), "val_auroc": aurocs}
