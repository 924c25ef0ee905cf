"""``station evaluate``: the exported models, run through ``station.models.inference``, scored honestly.

The scores evaluated are the scores the station shows: the ONNX files run in onnxruntime on
crops made by the station's own crop and preprocessing, normalized by ``station.models.scoring``
and fused by ``station.decision.decide``. Only images the models never trained or chose
thresholds on are used: the held-out fold (``--folds K --fold k``, checked against the
model folder's ``split.json``), or every test image of a data set the models never saw;
with ``--good-from-train`` also the train good images never used (those the split held
aside, or all of them on another data set): the lighting trap, where a brightness-reading
score fails.

Metrics are plain numpy (no scikit-learn): image AUROC, AUPR (average precision), and
precision/recall/F1/F2/accuracy at the stored thresholds; for the autoencoder also pixel
AUROC and AUPRO (FPR <= 0.3, normalized) on the full-image masks, the crop-space map being
warped back onto the image with the crop's ``crop_to_frame``.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station.decision import ERROR, REJECT, RULES, decide, fused_score
from station.models.inference import AutoencoderModel, ClassifierModel, load_model
from station.sources.datasets import (
    DatasetError,
    Sample,
    dataset_fingerprint,
    load_mask,
    read_dataset,
)
from station.vision.align import AlignedCrop, warp_map_to_frame
from station.vision.preprocess import prepare_batch
from training.data import CropSet, SplitOptions, compute_crops, make_split
from training.metrics import aupro, image_metrics, roc_auc

PIXEL_SIDE = 256  # long side (px) the full-image masks and maps are compared at


# --- running the models --------------------------------------------------------------------

@dataclass
class ModelScores:
    """Per-image outputs of one model on the evaluation images."""

    raw: np.ndarray  # [N] (NaN where the part was not found)
    normalized: np.ndarray  # [N]
    maps: np.ndarray | None  # [N, S, S] autoencoder maps (crop space)
    crops: CropSet
    threshold: float  # the model's raw threshold (scales the heatmaps of the report)


def run_model(model: AutoencoderModel | ClassifierModel, samples: list[Sample],
              cache_dir: Path | None, batch: int = 16, progress: bool = True) -> ModelScores:
    """Crop every sample with the model's own parameters and run it through onnxruntime."""
    from tqdm import tqdm

    spec = model.meta.preprocess_spec()
    crops = compute_crops(samples, model.meta.localize_params(), model.meta.align_params(),
                          spec.size, cache_dir, progress, height=spec.crop_height)
    raw = np.full(len(samples), np.nan)
    maps = np.zeros((len(samples), spec.crop_height, spec.size), np.float32) if model.kind == "autoencoder" else None
    ok = np.nonzero(crops.ok)[0]
    for i in tqdm(range(0, len(ok), batch), desc=f"{model.kind} inference", unit="batch",
                  disable=not progress):
        ii = ok[i:i + batch]
        x = prepare_batch([crops.crops[j] for j in ii], spec)
        if isinstance(model, AutoencoderModel):
            m, s = model.infer(x)
            maps[ii] = m
            raw[ii] = s
        else:
            raw[ii] = model.infer(x)
    norm = np.asarray(model.normalized(np.where(np.isnan(raw), 0.0, raw)), np.float64)
    norm[np.isnan(raw)] = np.nan
    return ModelScores(raw=raw, normalized=norm, maps=maps, crops=crops,
                       threshold=model.meta.threshold)


def _small(shape: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    f = PIXEL_SIDE / max(h, w)
    return (max(1, int(round(w * f))), max(1, int(round(h * f)))) if f < 1 else (w, h)


def frame_map(scores: ModelScores, i: int) -> np.ndarray:
    """The crop-space anomaly map of image ``i`` drawn onto its full image (float32 HxW)."""
    cs = scores.crops
    aligned = AlignedCrop(crop=cs.crops[i], frame_to_crop=cs.frame_to_crop[i],
                          crop_to_frame=cs.crop_to_frame[i], localization=None)
    m = scores.maps[i]
    return warp_map_to_frame(m, aligned, tuple(cs.frame_shapes[i]), fill=float(m.min()))


def pixel_metrics(scores: ModelScores, samples: list[Sample], progress: bool = True) -> dict:
    """Pixel AUROC and AUPRO on full-image masks (good images count as all-good masks)."""
    from tqdm import tqdm

    if not any(s.mask_path is not None for s in samples):
        return {}
    maps, masks = [], []
    for i, s in enumerate(tqdm(samples, desc="pixel metrics", unit="img", disable=not progress)):
        if not scores.crops.ok[i] or (s.label == 1 and s.mask_path is None):
            continue
        shape = tuple(int(v) for v in scores.crops.frame_shapes[i])
        gt = (load_mask(s.mask_path, shape, s.path) if s.mask_path is not None
              else np.zeros(shape, bool))
        fm = frame_map(scores, i)
        size = _small(shape)
        maps.append(cv2.resize(fm, size, interpolation=cv2.INTER_AREA))
        masks.append(cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)
    if not maps or not any(m.any() for m in masks):
        return {}
    flat_s = np.concatenate([m.ravel() for m in maps])
    flat_y = np.concatenate([m.ravel() for m in masks])
    return {"pixel_auroc": roc_auc(flat_s, flat_y), "aupro": aupro(maps, masks),
            "pixel_images": len(maps), "pixel_side": PIXEL_SIDE}


# --- which images ------------------------------------------------------------------------------

class EvaluationError(Exception):
    """Evaluation cannot be honest or cannot run; the message says why."""


def _read_fragment(models_dir: Path) -> dict:
    path = models_dir / "recipe_fragment.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EvaluationError(f"{path}: not valid TOML: {exc}") from None


def select_samples(models_dir: Path, samples: list[Sample], folds: int | None, fold: int | None,
                   good_from_train: bool) -> tuple[list[Sample], list[str], dict]:
    """Evaluation samples, their role ("eval" / "holdout_good"), and what was decided."""
    split_path = models_dir / "split.json"
    recorded = json.loads(split_path.read_text()) if split_path.is_file() else None
    # split.json files written before ``train_on_test`` existed held every test image out
    opts = SplitOptions(**{"train_on_test": False, **recorded["options"]}) if recorded \
        else SplitOptions(train_on_test=False)
    same_data = bool(recorded) and recorded.get("data_fingerprint") == dataset_fingerprint(samples)
    if folds is not None:
        opts = SplitOptions(**{**opts.to_dict(), "folds": folds, "fold": fold or 0})
    elif same_data and recorded["options"]["folds"]:
        pass  # the training run's own held-out fold
    elif same_data and opts.train_on_test:
        raise EvaluationError(
            f"the models in {models_dir} were trained without --folds, on every labeled image "
            f"of {getattr(samples, 'root', 'this data set')} (its defects taught the classifier "
            "and chose the thresholds): evaluate them on another data set, or train with "
            "--folds K --fold k and evaluate that fold")
    elif not same_data:
        opts = SplitOptions(**{**opts.to_dict(), "folds": 0, "fold": 0, "train_on_test": False})
    split = make_split(samples, opts)
    chosen = list(split.roles["eval"])
    roles = ["eval"] * len(chosen)
    note = {"folds": opts.folds, "fold": opts.fold, "same_data_as_training": same_data,
            "split_json": str(split_path) if recorded else None}
    root = Path(samples.root) if hasattr(samples, "root") else None
    if same_data:
        used = set()
        for role in ("train_good", "val_good", "thr_good", "train_defect", "val_labeled"):
            used.update(recorded["roles"].get(role, []))
        rel = [_rel(s.path, root) for s in chosen]
        overlap = sorted(set(rel) & used)
        if overlap:
            raise EvaluationError(
                f"{len(overlap)} evaluation image(s) were used in training or thresholding "
                f"(e.g. {overlap[0]}); the models in {models_dir} were trained with --folds "
                f"{recorded['options']['folds']} --fold {recorded['options']['fold']}: evaluate "
                "with those, so only held-out images are scored")
    if good_from_train:
        if same_data:  # only the train good images the training run held aside
            held = set(recorded["roles"].get("holdout_good", []))
            extra = [s for s in samples if _rel(s.path, root) in held]
        else:  # another data set: none of its images was seen, so all its train good count
            seen = {s.path for s in chosen}
            extra = [s for s in samples
                     if s.split != "test" and s.label == 0 and s.path not in seen]
        chosen += extra
        roles += ["holdout_good"] * len(extra)
        note["holdout_good"] = len(extra)
    return chosen, roles, note


def _rel(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


# --- the command ---------------------------------------------------------------------------

def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def per_type(labels: np.ndarray, types: list[str], scores: np.ndarray, predicted: np.ndarray) -> dict:
    """Per defect type: count, AUROC of that type against all good images, recall."""
    out = {}
    good = labels == 0
    for t in sorted(set(types) - {"good"}):
        m = np.array([x == t for x in types])
        yy = np.r_[np.zeros(good.sum()), np.ones(m.sum())]
        out[t] = {"n": int(m.sum()), "image_auroc": roc_auc(np.r_[scores[good], scores[m]], yy),
                  "recall": float(predicted[m].mean()) if m.any() else float("nan")}
    if good.any():
        out["good"] = {"n": int(good.sum()), "false_reject_rate": float(predicted[good].mean())}
    return out


def _load_models(models_dir: Path, variant: str, provider: str,
                 threads: int) -> dict[str, AutoencoderModel | ClassifierModel]:
    """The folder's models of the variant asked for, each checked to be the kind it is named."""
    suffix = ".int8.onnx" if variant == "int8" else ".onnx"
    models: dict[str, AutoencoderModel | ClassifierModel] = {}
    for kind in ("autoencoder", "classifier"):
        path = models_dir / f"{kind}{suffix}"
        if not path.is_file() and variant == "int8":
            path = models_dir / f"{kind}.onnx"  # no int8 copy (it did not pay): the float one runs
        if path.is_file():
            models[kind] = load_model(path, provider, threads)
            if models[kind].kind != kind:
                raise EvaluationError(f"{path}: metadata kind is {models[kind].kind!r}, "
                                      f"expected {kind!r} from the file name")
    if not models:
        raise EvaluationError(f"{models_dir}: no autoencoder{suffix} or classifier{suffix}")
    return models


@dataclass
class _Decision:
    """The fusion the recipe fragment (or the caller) asks for."""

    rule: str
    ae_t: float
    cls_t: float
    on_error: str

    @classmethod
    def read(cls, models_dir: Path, rule: str | None, kinds: list[str]) -> _Decision:
        decision = _read_fragment(models_dir).get("decision", {})
        rule = rule or decision.get("rule") or ("either" if len(kinds) == 2 else kinds[0])
        if rule not in RULES:
            raise EvaluationError(f"decision rule {rule!r}: expected one of {', '.join(RULES)}")
        return cls(rule, float(decision.get("autoencoder_threshold", 1.0)),
                   float(decision.get("classifier_threshold", 1.0)),
                   decision.get("on_error", "reject"))


def _model_block(kind: str, model: AutoencoderModel | ClassifierModel, sc: ModelScores,
                 chosen: list[Sample], labels: np.ndarray, types: list[str], on_error: str,
                 progress: bool) -> dict[str, Any]:
    """One model's metrics at its stored threshold (and its pixel metrics, autoencoder)."""
    pred = np.where(np.isnan(sc.normalized), on_error == "reject", sc.normalized >= 1.0)
    block = image_metrics(sc.normalized, labels, pred)
    block["threshold_raw"] = model.meta.threshold
    block["not_found"] = int((~sc.crops.ok).sum())
    if kind == "autoencoder":
        block.update(pixel_metrics(sc, chosen, progress))
    block["per_defect_type"] = per_type(labels, types, sc.normalized, pred)
    return block


def _fuse(scores: dict[str, ModelScores], n: int, d: _Decision
          ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The station's verdicts on each image, their fused scores, and which were rejected."""
    ae, cl = scores.get("autoencoder"), scores.get("classifier")
    verdicts, fused = [], []
    for i in range(n):
        a = float(ae.normalized[i]) if ae is not None else None
        c = float(cl.normalized[i]) if cl is not None else None
        verdicts.append(decide(a, c, d.rule, d.ae_t, d.cls_t))
        fused.append(fused_score(a, c, d.rule, d.ae_t, d.cls_t))
    fpred = np.array([v == REJECT or (v == ERROR and d.on_error == "reject") for v in verdicts])
    return verdicts, np.asarray(fused, np.float64), fpred


def _per_image(chosen: list[Sample], roles: list[str], root: Path | None,
               scores: dict[str, ModelScores], fused: np.ndarray,
               verdicts: list[str]) -> list[dict[str, Any]]:
    ae, cl = scores.get("autoencoder"), scores.get("classifier")
    return [
        {"path": _rel(s.path, root), "label": int(s.label),
         "defect_type": s.defect_type, "role": role,
         "autoencoder": float(ae.normalized[i]) if ae is not None else None,
         "classifier": float(cl.normalized[i]) if cl is not None else None,
         "fused": float(fused[i]), "verdict": verdicts[i]}
        for i, (s, role) in enumerate(zip(chosen, roles, strict=True))
    ]


def evaluate(models_dir: Path | str, data: Path | str, folds: int | None = None,
             fold: int | None = None, good_from_train: bool = False, variant: str = "float",
             rule: str | None = None, provider: str = "auto", threads: int = 0,
             cache_dir: Path | None = None, report_dir: Path | None = None,
             progress: bool = True) -> dict:
    """Evaluate the model folder's ONNX models on a data set; returns the JSON-ready dict."""
    models_dir, data = Path(models_dir), Path(data)
    if not models_dir.is_dir():
        raise EvaluationError(f"{models_dir}: model folder not found")
    try:
        samples = read_dataset(data)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from None
    models = _load_models(models_dir, variant, provider, threads)
    chosen, roles, note = select_samples(models_dir, samples, folds, fold, good_from_train)
    labels = np.array([s.label for s in chosen])
    if len(chosen) == 0:
        raise EvaluationError(f"{data}: no evaluation images")
    types = [s.defect_type for s in chosen]
    d = _Decision.read(models_dir, rule, list(models))
    cache_dir = cache_dir or models_dir / "cache"

    result: dict[str, Any] = {"autoencoder": None, "classifier": None, "fused": None}
    scores: dict[str, ModelScores] = {}
    for kind, model in models.items():
        scores[kind] = run_model(model, chosen, cache_dir, progress=progress)
        result[kind] = _model_block(kind, model, scores[kind], chosen, labels, types,
                                    d.on_error, progress)
    verdicts, fused, fpred = _fuse(scores, len(chosen), d)
    fblock = image_metrics(fused, labels, fpred)
    fblock["rule"] = d.rule
    fblock["autoencoder_threshold"], fblock["classifier_threshold"] = d.ae_t, d.cls_t
    fblock["errors"] = int(sum(v == ERROR for v in verdicts))
    fblock["per_defect_type"] = per_type(labels, types, fused, fpred)
    result["fused"] = fblock
    result["per_image"] = _per_image(chosen, roles, getattr(samples, "root", None), scores,
                                     fused, verdicts)
    counts = {r: int(sum(1 for x in roles if x == r)) for r in sorted(set(roles))}
    result["meta"] = {
        "models": str(models_dir), "data": str(data), "variant": variant,
        "good_from_train": good_from_train, "images": len(chosen), "by_role": counts,
        "n_good": int((labels == 0).sum()), "n_defect": int((labels == 1).sum()),
        "model_versions": {k: m.meta.version for k, m in models.items()}, **note,
    }
    if report_dir is not None:
        from training.report import write_report

        result["meta"]["report"] = [str(p) for p in write_report(
            Path(report_dir), chosen, labels, scores, fused, fpred, d.rule)]
    return _clean(result)
