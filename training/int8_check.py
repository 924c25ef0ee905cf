"""The int8 rule on the evaluated images: a copy is kept only when it does what its float
model does.

Training already checks each int8 copy on its own check crops; this is the check on the
held-out images ``station evaluate`` scores. An ``*.int8.onnx`` copy passes when, on the
same crops as its float model,

* its image AUROC differs from the float model's by at most ``INT8_MAX_AUROC_CHANGE``, and
* it flips no verdict: neither the model's own (normalized score >= 1.0) nor the station's
  fused one with this copy in place of its float model.

A copy that fails is deleted, so a recipe that names it is refused rather than run a copy
that changes verdicts (the line runs the float model); ``--keep-int8`` keeps it for study,
and the report says it failed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import roc_auc

INT8_MAX_AUROC_CHANGE = 0.005
KINDS = ("autoencoder", "classifier")


def int8_paths(models_dir: Path) -> dict[str, Path]:
    """The folder's int8 copies, by model kind (only those that exist)."""
    paths = {k: models_dir / f"{k}.int8.onnx" for k in KINDS}
    return {k: p for k, p in paths.items() if p.is_file()}


def _verdicts(norm: np.ndarray) -> np.ndarray:
    """Each image's reject verdict by one model (no score: no verdict either way)."""
    norm = np.asarray(norm, np.float64)
    return np.where(np.isnan(norm), False, norm >= 1.0)


def compare(float_norm: np.ndarray, int8_norm: np.ndarray, labels: np.ndarray,
            fused_float: np.ndarray, fused_int8: np.ndarray, names: list[str]) -> dict[str, Any]:
    """One int8 copy against its float model on the same crops: AUROC change, flipped verdicts
    (the model's own and the fused ones, listed by image), and whether it passes the rule."""
    a_f, a_q = roc_auc(float_norm, labels), roc_auc(int8_norm, labels)
    change = a_q - a_f
    own = np.nonzero(_verdicts(float_norm) != _verdicts(int8_norm))[0]
    fused = np.nonzero(np.asarray(fused_float) != np.asarray(fused_int8))[0]
    flipped = sorted(set(own.tolist()) | set(fused.tolist()))
    moved = np.abs(np.asarray(int8_norm, np.float64) - np.asarray(float_norm, np.float64))
    auroc_ok = math.isnan(change) or abs(change) <= INT8_MAX_AUROC_CHANGE
    return {
        "image_auroc_float": a_f, "image_auroc_int8": a_q, "auroc_change": change,
        "auroc_measured": not math.isnan(change),
        "max_abs_change_normalized": float(np.nanmax(moved)) if np.isfinite(moved).any() else 0.0,
        "verdicts_flipped": int(len(own)), "fused_verdicts_flipped": int(len(fused)),
        "flipped_images": [names[i] for i in flipped],
        "limit_auroc_change": INT8_MAX_AUROC_CHANGE,
        "passes": bool(auroc_ok and not flipped),
    }


def apply_rule(checks: dict[str, dict[str, Any]], paths: dict[str, Path],
               prune: bool) -> list[str]:
    """Delete the failing copies when ``prune`` (``station evaluate``'s default); record the
    action in each check and return one line per copy saying what happened and why."""
    lines = []
    for kind, check in checks.items():
        path = paths[kind]
        check["file"] = str(path)
        why = (f"image AUROC {_signed(check['auroc_change'])} (limit "
               f"{INT8_MAX_AUROC_CHANGE}), {check['verdicts_flipped']} own and "
               f"{check['fused_verdicts_flipped']} fused verdict(s) flipped")
        if check["passes"]:
            check["action"] = "kept"
        elif prune:
            path.unlink(missing_ok=True)
            check["action"] = "pruned"
        else:
            check["action"] = "fails (kept by --keep-int8: do not put it on the line)"
        said = check["action"] + (" (deleted, on these images: the line runs the float "
                                  "model; --keep-int8 keeps a failing copy)"
                                  if check["action"] == "pruned" else "")
        lines.append(f"int8 {kind}: {said}: {why}")
    return lines


def _signed(v: float) -> str:
    return "not measurable (one class only)" if math.isnan(v) else f"{v:+.4f}"
