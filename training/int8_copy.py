"""The int8 copy ``station train`` writes beside each float model, kept only where it pays.

Static QDQ quantization (:mod:`training.quantize`) makes the copy; this module decides
whether it stays: calibrated and checked on crops half good and half defective (ranges set
on good crops alone clip a defect's activations), it must change no verdict and move no
score by more than a quarter of the way to the threshold, and it must be faster on this
CPU (int8 speed differs severalfold between CPUs with and without VNNI). A copy that fails
is deleted and the log says why; the float model is the one that runs. ``station
evaluate`` checks the kept copies once more on evaluated images (:mod:`training.int8_check`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from station.models.inference import load_model
from station.models.metadata import ModelMetadata
from station.vision.preprocess import PreprocessSpec
from training.data import CropSet
from training.export import write_metadata

# An int8 copy pays only if it changes no verdict on the check crops and moves no score, as
# raw / threshold, by more than this: a quarter of the way to the threshold.
INT8_MAX_CHANGE = 0.25
# ... and only if it is faster here: at least this many times the float model's images per
# second. A copy that is slower (a narrow classifier on a CPU without VNNI runs 0.9x) would
# only be a second model that can disagree with the first on a held-out part.
INT8_MIN_SPEEDUP = 1.1


def _good_and_defects(cs: CropSet) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The crops of a set, good ones and defective ones."""
    pairs = list(zip(cs.crops, cs.samples, strict=True))
    return [c for c, s in pairs if not s.label], [c for c, s in pairs if s.label]


def int8_sets(calib_from: CropSet, check_from: CropSet, spec: PreprocessSpec,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 calibration and check tensors, each half good parts and half defects (real,
    else synthesized): ranges set on good crops alone clip a defect's activations, and a
    classifier's every defect then read p = 0.5."""
    from training.classifier import calibration_tensors

    goods, defects = _good_and_defects(calib_from)
    calib = calibration_tensors(goods, spec, defects, n=64, seed=seed)
    check_goods, check_defects = _good_and_defects(check_from)
    if not check_goods:  # tiny data sets: no separate good parts to check on
        check_goods, check_defects = goods, defects
    check = calibration_tensors(check_goods, spec, check_defects, n=16, seed=seed + 1)
    return calib, check


def keep_int8_copy(kind: str, float_path: Path, meta: ModelMetadata, calib: np.ndarray,
                   check: np.ndarray, exclude: list[str], log: Callable[[dict], None]
                   ) -> dict | None:
    """An int8 copy beside the float model, with its measured speed and score change; the
    copy is deleted again (``kept: False``) where it changes a verdict on ``check``, moves a
    score by more than ``INT8_MAX_CHANGE`` of the threshold, or is not ``INT8_MIN_SPEEDUP``
    times faster here. None when quantization itself failed (said, not raised)."""
    from training.quantize import QUANTIZATION_TAG, quantize_static

    out = float_path.with_name(f"{kind}.int8.onnx")
    try:
        quantize_static(float_path, out, calib, nodes_to_exclude=exclude,
                        preprocess=kind != "autoencoder")
    except Exception as exc:  # quantization is an optimization: say why and carry on
        log({"model": kind, "event": "int8_failed", "error": str(exc)})
        print(f"warning: int8 quantization of {kind} failed: {exc}")
        return None
    f32, i8 = load_model(float_path, "cpu"), load_model(out, "cpu")

    def run(m):
        r = m.infer(check)
        return r[1] if kind == "autoencoder" else r

    def timed(m) -> float:
        m.warmup()
        t = time.perf_counter()
        for _ in range(3):
            run(m)
        return (time.perf_counter() - t) / (3 * len(check)) * 1e3

    sf, sq = run(f32), run(i8)
    info = {
        "mode": QUANTIZATION_TAG,
        "calibration_crops": int(len(calib)),
        "ms_per_image_float": round(timed(f32), 3),
        "ms_per_image_int8": round(timed(i8), 3),
        # as a share of the raw threshold whatever the shown scale: odds magnify any change
        # near p = 1 without changing a verdict, and verdicts_changed counts those
        "max_abs_change_of_threshold": float(np.max(np.abs(sf - sq)) / meta.threshold),
        "verdicts_changed": int(np.sum((meta.normalized(sf) >= 1.0) != (meta.normalized(sq) >= 1.0))),
    }
    info["speedup"] = round(info["ms_per_image_float"] / max(info["ms_per_image_int8"], 1e-9), 3)
    if info["verdicts_changed"] or not info["max_abs_change_of_threshold"] <= INT8_MAX_CHANGE:
        reason = (f"it changed {info['verdicts_changed']} of {len(check)} check verdicts and "
                  f"moved a score by {info['max_abs_change_of_threshold']:.3g} of its threshold "
                  f"(limit {INT8_MAX_CHANGE})")
    elif not info["speedup"] >= INT8_MIN_SPEEDUP:
        reason = (f"it is not faster: {info['ms_per_image_int8']} ms per crop against "
                  f"{info['ms_per_image_float']} ms float ({info['speedup']}x, at least "
                  f"{INT8_MIN_SPEEDUP}x needed)")
    else:
        reason = ""
    if reason:
        out.unlink(missing_ok=True)
        log({"model": kind, "event": "int8_rejected", **info, "limit": INT8_MAX_CHANGE,
             "min_speedup": INT8_MIN_SPEEDUP, "reason": reason})
        print(f"note: int8 {kind} dropped: {reason}; the float model is the one to run")
        return {**info, "kept": False}
    q_meta = ModelMetadata(**{**meta.__dict__, "quantization": info})
    write_metadata(out, q_meta)
    log({"model": kind, "event": "int8", **info, "file": str(out)})
    return info


def head_nodes(path: Path) -> list[str]:
    """Scoring-head node names of an exported autoencoder (kept float when quantizing)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if not n.name.startswith("/net/")]
