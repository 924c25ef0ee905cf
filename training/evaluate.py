"""``station evaluate``: the exported models, run through ``station.models.inference``, scored honestly.

The scores evaluated are the scores the station shows: the ONNX files run in onnxruntime on
crops made by the station's own crop and preprocessing, normalized by ``station.models.scoring``
and fused by ``station.decision.decide``. Only images the models never trained or chose
thresholds on are used: the held-out fold (``--folds K --fold k``, checked against the
model folder's ``split.json``), or every test image of a data set the models never saw;
with ``--good-from-train`` also the train good images never used (those the split held
aside, or all of them on another data set): the lighting trap, where a brightness-reading
score fails.

Metrics are plain numpy (``training.metrics``, no scikit-learn): image AUROC, AUPR (average
precision), and precision/recall/F1/F2/accuracy at the stored thresholds, for each model and
the fused verdict, and per defect type (recall at the threshold, image AUROC of that type
against the good parts). Each model with a map (the autoencoder's anomaly map, the
classifier's class activation map when its graph outputs one) also gets pixel AUROC and
AUPRO (FPR <= 0.3, normalized) on the full-image masks, overall and per type, the crop-space
map being warped back onto the image with the crop's ``crop_to_frame``.

``gallery`` names each type's best- and worst-detected part (highest and lowest fused score;
``best``/``worst`` index ``per_image``). ``int8_check`` compares every ``*.int8.onnx`` copy
with its float model on the same images (``training.int8_check``); ``prune_int8``, the
default, deletes a copy failing the rule.
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

from station.decision import ERROR, REJECT, RULES, Evidence, decide, fused_score
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
from training.data import TRAINED_ROLES, CropSet, SplitOptions, compute_crops, make_split
from training.int8_check import apply_rule, compare, int8_paths
from training.metrics import image_metrics, per_type
from training.metrics import pixel_metrics as pixel_block

AnyModel = AutoencoderModel | ClassifierModel
PIXEL_SIDE = 256  # long side (px) the full-image masks and maps are compared at


# --- running the models --------------------------------------------------------------------

@dataclass
class ModelScores:
    """Per-image outputs of one model on the evaluation images."""

    raw: np.ndarray  # [N] (NaN where the part was not found)
    normalized: np.ndarray  # [N]
    maps: np.ndarray | None  # [N, h, w] crop-space maps (autoencoder; classifier CAM), or None
    crops: CropSet
    threshold: float  # the model's raw threshold (scales the heatmaps of the report)
    kind: str = "autoencoder"
    map_range: tuple[float, float] | None = None  # the report's colour scale for the maps


def _infer(model: AutoencoderModel | ClassifierModel, x: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw scores, maps or None): the autoencoder's anomaly map, the classifier's class
    activation map when its graph has one."""
    if isinstance(model, AutoencoderModel):
        m, s = model.infer(x)
        return s, m
    return model.infer_map(x)  # (p_defect, None) for a file exported without ``cam``


def _map_range(maps: np.ndarray | None, threshold: float) -> tuple[float, float] | None:
    """One colour scale for every map of a model, red at 1.5x its threshold: both models'
    maps are on their score's raw scale (the classifier's peaks at p_defect)."""
    return None if maps is None else (0.0, 1.5 * threshold)


def run_model(model: AutoencoderModel | ClassifierModel, samples: list[Sample],
              cache_dir: Path | None, batch: int = 16, progress: bool = True,
              crops: CropSet | None = None) -> ModelScores:
    """Crop every sample with the model's own parameters (or reuse ``crops`` made with them:
    an int8 copy reads the crops of its float model) and run it through onnxruntime."""
    from station.progress import progress_bar

    spec = model.meta.preprocess_spec()
    if crops is None:
        crops = compute_crops(samples, model.meta.localize_params(), model.meta.align_params(),
                              spec.size, cache_dir, progress, height=spec.crop_height)
    raw = np.full(len(samples), np.nan)
    maps: np.ndarray | None = None
    ok = np.nonzero(crops.ok)[0]
    if isinstance(model, AutoencoderModel):  # a retrieval graph's search grows with the batch
        batch = model.batch_limit(batch)
    for i in progress_bar(range(0, len(ok), batch), desc=f"{model.kind} inference",
                          unit="batch", disable=not progress):
        ii = ok[i:i + batch]
        s, m = _infer(model, prepare_batch([crops.crops[j] for j in ii], spec))
        raw[ii] = np.asarray(s).reshape(-1)
        if m is not None:
            if maps is None:
                maps = np.zeros((len(samples), *np.asarray(m).shape[1:]), np.float32)
            maps[ii] = m
    norm = np.asarray(model.normalized(np.where(np.isnan(raw), 0.0, raw)), np.float64)
    norm[np.isnan(raw)] = np.nan
    return ModelScores(raw=raw, normalized=norm, maps=maps, crops=crops,
                       threshold=model.meta.threshold, kind=model.kind,
                       map_range=_map_range(maps, model.meta.threshold))


def _small(shape: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    f = PIXEL_SIDE / max(h, w)
    return (max(1, int(round(w * f))), max(1, int(round(h * f)))) if f < 1 else (w, h)


def frame_map(scores: ModelScores, i: int) -> np.ndarray:
    """The crop-space map of image ``i`` drawn onto its full image (float32 HxW)."""
    assert scores.maps is not None
    cs = scores.crops
    aligned = AlignedCrop(crop=cs.crops[i], frame_to_crop=cs.frame_to_crop[i],
                          crop_to_frame=cs.crop_to_frame[i], localization=None)
    m = scores.maps[i]
    return warp_map_to_frame(m, aligned, tuple(cs.frame_shapes[i]), fill=float(m.min()))


def pixel_metrics(scores: ModelScores, samples: list[Sample], progress: bool = True) -> dict:
    """Pixel AUROC and AUPRO of a model's maps on full-image masks (good images count as
    all-good masks), overall and per defect type (that type's images and the good ones)."""
    from station.progress import progress_bar

    if scores.maps is None or not any(s.mask_path is not None for s in samples):
        return {}
    maps, masks, types = [], [], []
    for i, s in enumerate(progress_bar(samples, desc=f"{scores.kind} pixel metrics",
                                       unit="img", disable=not progress)):
        if not scores.crops.ok[i] or (s.label == 1 and s.mask_path is None):
            continue
        shape = tuple(int(v) for v in scores.crops.frame_shapes[i])
        gt = (load_mask(s.mask_path, shape, s.path) if s.mask_path is not None
              else np.zeros(shape, bool))
        size = _small(shape)
        maps.append(cv2.resize(frame_map(scores, i), size, interpolation=cv2.INTER_AREA))
        masks.append(cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)
        types.append(s.defect_type if s.label == 1 else "good")
    out: dict[str, Any] = pixel_block(maps, masks)
    if not out:
        return {}
    out.update({"pixel_images": len(maps), "pixel_side": PIXEL_SIDE, "pixel_per_defect_type": {}})
    for t in sorted(set(types) - {"good"}):
        keep = [k for k, x in enumerate(types) if x in (t, "good")]
        out["pixel_per_defect_type"][t] = pixel_block([maps[k] for k in keep],
                                                      [masks[k] for k in keep])
    return out


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
        for role in TRAINED_ROLES:
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


def _load_models(models_dir: Path, provider: str, threads: int
                 ) -> tuple[dict[str, AnyModel], dict[str, AnyModel]]:
    """The folder's float models and their int8 copies, each checked to be the kind its file
    name says."""
    models: dict[str, AnyModel] = {}
    copies: dict[str, AnyModel] = {}
    for kind in ("autoencoder", "classifier"):
        path = models_dir / f"{kind}.onnx"
        if path.is_file():
            models[kind] = _load_kind(path, kind, provider, threads)
    if not models:
        raise EvaluationError(f"{models_dir}: no autoencoder.onnx or classifier.onnx")
    for kind, path in int8_paths(models_dir).items():
        if kind in models:
            copies[kind] = _load_kind(path, kind, provider, threads)
    return models, copies


def _load_kind(path: Path, kind: str, provider: str, threads: int) -> AnyModel:
    model = load_model(path, provider, threads)
    if model.kind != kind:
        raise EvaluationError(f"{path}: metadata kind is {model.kind!r}, "
                              f"expected {kind!r} from the file name")
    return model


@dataclass
class _Decision:
    """The fusion the recipe fragment (or the caller) asks for."""

    rule: str
    ae_t: float
    cls_t: float
    on_error: str
    sums: Evidence | None = None  # the sum rule's: the models' spreads, the fragment's threshold

    @classmethod
    def read(cls, models_dir: Path, rule: str | None, models: dict[str, AnyModel]
             ) -> _Decision:
        decision = _read_fragment(models_dir).get("decision", {})
        kinds = list(models)
        rule = rule or decision.get("rule") or ("either" if len(kinds) == 2 else kinds[0])
        if rule not in RULES:
            raise EvaluationError(f"decision rule {rule!r}: expected one of {', '.join(RULES)}")
        sums = None
        if rule == "sum":
            metas = [m.meta for m in models.values()]
            if len(metas) != 2 or any(m.evidence_spread is None for m in metas):
                raise EvaluationError(
                    f"{models_dir}: the sum rule needs both models with their evidence spread, "
                    "which station train writes into them: train these models again, or give "
                    "--rule either")
            ae, cl = models["autoencoder"].meta, models["classifier"].meta
            sums = Evidence(ae.evidence_spread, cl.evidence_spread,  # type: ignore[arg-type]
                            float(decision.get("sum_threshold", 0.0)), ae.evidence_offset,
                            cl.evidence_offset)
        return cls(rule, float(decision.get("autoencoder_threshold", 1.0)),
                   float(decision.get("classifier_threshold", 1.0)),
                   decision.get("on_error", "reject"), sums)


def _model_block(model: AnyModel, sc: ModelScores, chosen: list[Sample], labels: np.ndarray,
                 types: list[str], on_error: str, progress: bool) -> dict[str, Any]:
    """One model's metrics at its stored threshold, per defect type too, and the pixel metrics
    of its maps (the autoencoder's; the classifier's class activation map when it has one)."""
    pred = np.where(np.isnan(sc.normalized), on_error == "reject", sc.normalized >= 1.0)
    block = image_metrics(sc.normalized, labels, pred)
    block["threshold_raw"] = model.meta.threshold
    block["not_found"] = int((~sc.crops.ok).sum())
    # why, for the first few: the part not found, or the file unreadable (each is the
    # station's ERROR verdict, rejected unless the recipe's on_error says otherwise)
    block["not_found_why"] = [m for m, ok in zip(sc.crops.messages, sc.crops.ok, strict=True)
                              if not ok][:5]
    block["file"] = model.path.name
    block["has_map"] = sc.maps is not None
    pixels = pixel_metrics(sc, chosen, progress)
    by_type = pixels.pop("pixel_per_defect_type", {})
    block.update(pixels)
    block["per_defect_type"] = per_type(labels, types, sc.normalized, pred)
    for t, px in by_type.items():
        block["per_defect_type"][t].update(px)
    return block


def _fuse(scores: dict[str, ModelScores], n: int, d: _Decision
          ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The station's verdicts on each image, their fused scores, and which were rejected."""
    ae, cl = scores.get("autoencoder"), scores.get("classifier")
    verdicts, fused = [], []
    for i in range(n):
        a = float(ae.normalized[i]) if ae is not None else None
        c = float(cl.normalized[i]) if cl is not None else None
        verdicts.append(decide(a, c, d.rule, d.ae_t, d.cls_t, d.sums))
        fused.append(fused_score(a, c, d.rule, d.ae_t, d.cls_t, d.sums))
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


def gallery_rows(chosen: list[Sample], root: Path | None, fused: np.ndarray
                 ) -> list[dict[str, Any]]:
    """Per defect type, its best-detected part (highest fused score) and its worst-detected
    (lowest): the gallery's rows."""
    rows = []
    for t in sorted({s.defect_type for s in chosen if s.label == 1}):
        idx = [i for i, s in enumerate(chosen)
               if s.label == 1 and s.defect_type == t and np.isfinite(fused[i])]
        if not idx:
            continue
        best, worst = max(idx, key=lambda i: fused[i]), min(idx, key=lambda i: fused[i])
        rows.append({"defect_type": t, "best": best, "worst": worst,
                     "best_path": _rel(chosen[best].path, root), "best_fused": fused[best],
                     "worst_path": _rel(chosen[worst].path, root), "worst_fused": fused[worst]})
    return rows


def _int8_check(floats: dict[str, ModelScores], copies: dict[str, ModelScores], labels: np.ndarray,
                names: list[str], d: _Decision, models_dir: Path, prune: bool) -> dict[str, Any]:
    """Each int8 copy against its float model on the evaluated images, and the rule applied."""
    if not copies:
        return {"copies": {}, "summary": [f"int8: no *.int8.onnx copies in {models_dir}"]}
    n = len(labels)
    _, _, f_pred = _fuse(floats, n, d)
    checks = {}
    for kind, sc in copies.items():
        _, _, q_pred = _fuse({**floats, kind: sc}, n, d)
        checks[kind] = compare(floats[kind].normalized, sc.normalized, labels, f_pred, q_pred,
                               names)
    _, _, all_pred = _fuse({**floats, **copies}, n, d)
    summary = apply_rule(checks, {k: models_dir / f"{k}.int8.onnx" for k in checks}, prune)
    return {"copies": checks, "fused_verdicts_flipped_all_int8": int((all_pred != f_pred).sum()),
            "summary": summary}


def _score_all(models: dict[str, AnyModel], copies: dict[str, AnyModel], chosen: list[Sample],
               cache_dir: Path, progress: bool
               ) -> tuple[dict[str, ModelScores], dict[str, ModelScores]]:
    """Every float model and every int8 copy on the evaluation images (a copy on its float
    model's crops)."""
    floats = {k: run_model(m, chosen, cache_dir, progress=progress) for k, m in models.items()}
    ints = {k: run_model(m, chosen, cache_dir, progress=progress, crops=floats[k].crops)
            for k, m in copies.items()}
    return floats, ints


def _fused_block(labels: np.ndarray, types: list[str], fused: np.ndarray, fpred: np.ndarray,
                 verdicts: list[str], d: _Decision) -> dict[str, Any]:
    block = image_metrics(fused, labels, fpred)
    block["rule"] = d.rule
    block["autoencoder_threshold"], block["classifier_threshold"] = d.ae_t, d.cls_t
    if d.sums is not None:
        block["sum_threshold"] = d.sums.threshold
    block["errors"] = int(sum(v == ERROR for v in verdicts))
    block["per_defect_type"] = per_type(labels, types, fused, fpred)
    return block


def evaluate(models_dir: Path | str, data: Path | str, folds: int | None = None,
             fold: int | None = None, good_from_train: bool = False, variant: str = "float",
             rule: str | None = None, provider: str = "auto", threads: int = 0,
             cache_dir: Path | None = None, report_dir: Path | None = None,
             progress: bool = True, prune_int8: bool = True) -> dict:
    """Evaluate the model folder's ONNX models on a data set; returns the JSON-ready dict.

    ``variant`` picks the models the report is about (``int8``: each int8 copy where there
    is one); either way every int8 copy is checked against its float model, and with
    ``prune_int8`` (the default) one failing the rule is deleted.
    """
    models_dir, data = Path(models_dir), Path(data)
    if not models_dir.is_dir():
        raise EvaluationError(f"{models_dir}: model folder not found")
    try:
        samples = read_dataset(data)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from None
    models, copies = _load_models(models_dir, provider, threads)
    chosen, roles, note = select_samples(models_dir, samples, folds, fold, good_from_train)
    labels = np.array([s.label for s in chosen])
    if len(chosen) == 0:
        raise EvaluationError(f"{data}: no evaluation images")
    types = [s.defect_type for s in chosen]
    root = getattr(samples, "root", None)
    d = _Decision.read(models_dir, rule, models)
    floats, ints = _score_all(models, copies, chosen, cache_dir or models_dir / "cache", progress)
    used = {**models, **copies} if variant == "int8" else models
    scores = {**floats, **ints} if variant == "int8" else floats

    result: dict[str, Any] = {"autoencoder": None, "classifier": None, "fused": None}
    for kind, model in used.items():
        result[kind] = _model_block(model, scores[kind], chosen, labels, types, d.on_error,
                                    progress)
    verdicts, fused, fpred = _fuse(scores, len(chosen), d)
    result["fused"] = _fused_block(labels, types, fused, fpred, verdicts, d)
    result["per_image"] = _per_image(chosen, roles, root, scores, fused, verdicts)
    result["gallery"] = gallery_rows(chosen, root, fused)
    names = [_rel(s.path, root) for s in chosen]
    result["int8_check"] = _int8_check(floats, ints, labels, names, d, models_dir, prune_int8)
    counts = {r: int(sum(1 for x in roles if x == r)) for r in sorted(set(roles))}
    result["meta"] = {
        "models": str(models_dir), "data": str(data), "variant": variant,
        "good_from_train": good_from_train, "images": len(chosen), "by_role": counts,
        "n_good": int((labels == 0).sum()), "n_defect": int((labels == 1).sum()),
        "model_versions": {k: m.meta.version for k, m in used.items()}, **note,
    }
    if report_dir is not None:
        from training.report import write_report

        result["meta"]["report"] = [str(p) for p in write_report(
            Path(report_dir), chosen, labels, scores, fused, fpred, d.rule, result)]
    return _clean(result)
