"""``station train``: both models from one data set, seeded, on CPU (CUDA when present).

The run: read the data set, split it (:func:`training.data.make_split`, recorded in
``split.json``), make aligned crops with the station's own crop path (cached), train the
autoencoder on good crops and calibrate its scoring head, train the classifier on good,
real and synthesized defects, choose thresholds on validation images only, export one
self-contained ONNX file per model with its metadata (checked against torch), quantize
int8 copies, and write ``recipe_fragment.toml`` and ``train_log.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from station.config.schema import GOOD_TRAIN_SHARE
from station.decision import RULES
from station.models import scoring
from station.models.inference import RETRIEVAL_ARCHITECTURE
from station.models.metadata import ModelMetadata
from station.sources.datasets import dataset_fingerprint, read_dataset
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec, fit_background_value, prepare_batch
from training.autoencoder import (
    AutoencoderOptions,
    neighbour_head,
    part_regions,
    score_batches,
    train_autoencoder,
)
from training.data import (
    CropSet,
    Split,
    SplitOptions,
    compute_crops,
    crop_note,
    crop_spec,
    learned_good,
    make_split,
)
from training.device import pick_device
from training.export import export_onnx, now_iso, over_tolerance, parity
from training.fragment import write_fragment
from training.fusion import fusion_rule, stamp_sum_threshold
from training.int8_copy import head_nodes, int8_sets, keep_int8_copy
from training.registration import learn_registration
from training.thresholds import MAX_FALSE_REJECT, ThresholdChoice, choose_threshold

EXPORT_RESERVE_S = 60.0  # time kept back from the budget for export and quantization


@dataclass
class TrainOptions:
    """Everything ``station train`` can be told (defaults: 2 CPU cores, under 30 minutes)."""

    data: Path
    out: Path
    only: str | None = None  # "autoencoder" | "classifier"
    size: int = 128  # autoencoder crop size
    cls_size: int = 128  # classifier crop size
    epochs: int | None = None  # both models; None = each model's default
    minutes: float = 24.0  # training-loop budget for both models together
    # the autoencoder's share of the budget: it plateaus in minutes, the classifier does not
    ae_share: float = 0.35
    width: float | None = None  # classifier width multiplier (None = the classifier default)
    classifier_members: int | None = None  # networks averaged (None = the classifier default)
    classifier_flips: str = "none"  # the product's mirror images (recipe models.flips)
    classifier_transplant: float | None = None  # real defects moved (None: 0.5 on a surface)
    pretrained: Path | None = None
    folds: int = 0
    fold: int = 0
    seed: int = 0
    rule: str = "auto"  # "auto" = either, unless one model is near chance on validation
    # The largest share of good validation parts each threshold may reject (see
    # training.thresholds.MAX_FALSE_REJECT): tighter on a line with fewer defects (the demo).
    max_false_reject: float = MAX_FALSE_REJECT
    # labeled defects (the other folds') the classifier trains on; the rest choose thresholds
    defect_train_share: float = SplitOptions.defect_train_share
    # labeled good images (the other folds') in the autoencoder's bank and the classifier's
    # good examples; the rest choose thresholds (None: 0.7 for a fixed region, 0 for a part)
    good_train_share: float | None = None
    device: str = "auto"
    cache: Path | None = None
    int8: bool = True
    progress: bool = True
    ae: AutoencoderOptions = field(default_factory=AutoencoderOptions)
    split: SplitOptions | None = None
    # The product's crop (the recipe's [localize], [align] and camera.pixel_format); None =
    # the built-in defaults (a dark elongated part on a light plate, square crops, grey).
    localize: LocalizeParams | None = None
    align: AlignParams | None = None
    pixel_format: str = "mono8"  # "bgr8" = colour models (3 channels, RGB)


CLASSIFIER_MULTIPLE = 32  # VGG16's five 2x2 pools: the classifier crop is a multiple of 32


class TrainLog:
    """``train_log.jsonl``: one JSON object per line, flushed as it goes (also on a crash)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("w")
        self.start = time.monotonic()

    def __call__(self, row: dict[str, Any]) -> None:
        row = {"t": round(time.monotonic() - self.start, 2), **row}
        self.fh.write(json.dumps(row, default=str) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _version(kind: str, fingerprint: str, seed: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    tag = hashlib.sha256(f"{kind}{fingerprint}{seed}{time.time_ns()}".encode()).hexdigest()[:6]
    return f"{kind[:2]}-{stamp}-{tag}"


def _labels(cs: CropSet) -> np.ndarray:
    return np.array([s.label for s in cs.samples], np.int64)


def _ok(cs: CropSet) -> CropSet:
    return cs.select([s for s, k in zip(cs.samples, cs.ok, strict=True) if k])


def _val_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    from training.metrics import binary_stats, roc_auc

    out: dict[str, Any] = {"n_good": int((labels == 0).sum()), "n_defect": int((labels == 1).sum())}
    if 0 < labels.sum() < len(labels):
        out["image_auroc"] = roc_auc(scores, labels)
    stats = binary_stats(scores >= threshold, labels)
    out.update({k: stats[k] for k in ("precision", "recall", "f1", "accuracy")})
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _metadata(kind: str, threshold: ThresholdChoice, spec: PreprocessSpec, loc: LocalizeParams,
              align: AlignParams, fingerprint: str, seed: int, metrics: dict,
              architecture: dict, good_raw: np.ndarray) -> ModelMetadata:
    """``good_raw``: the good validation parts' raw scores, whose spread the ``sum`` rule reads."""
    # the classifier's p_defect is shown as an odds ratio (station.models.scoring says why);
    # a threshold at 1 or above (a classifier that can never reject) has no odds: a ratio
    odds = kind == "classifier" and scoring.P_CLIP < threshold.value < 1.0 - scoring.P_CLIP
    method = scoring.ODDS if odds else scoring.RATIO
    spread = scoring.evidence_spread(scoring.normalize(good_raw, threshold.value, method))
    return ModelMetadata(
        kind=kind, threshold=threshold.value, preprocess=spec.to_metadata(),
        score_normalization={"method": method, scoring.EVIDENCE_SPREAD: spread},
        localize=loc.to_dict(), align=align.to_dict(), version=_version(kind, fingerprint, seed),
        created=now_iso(), data_fingerprint=fingerprint,
        metrics={"validation": metrics, "threshold_rule": threshold.to_dict()},
        architecture=architecture,
    )


def _check_parity(model, path: Path, batch: np.ndarray, log: TrainLog, kind: str) -> dict:
    """torch vs onnxruntime on real crops; float32 rounding scales with the output's size
    (an anomaly map of z-scores reaches tens), so the bound is relative above 1."""
    from training.export import torch_outputs

    diffs = parity(model, path, batch)
    scale = max(1.0, max(float(np.max(np.abs(o))) for o in torch_outputs(model, batch)))
    log({"model": kind, "event": "export_parity", "max_abs_diff": diffs, "output_scale": scale,
         "file": str(path)})
    if over := over_tolerance(diffs, scale):
        raise RuntimeError(f"{path}: ONNX export differs from torch in {', '.join(over)} "
                           f"(output scale {scale:.3g}; bounds in training.export); {diffs}")
    return diffs


def _fit_background(kind: str, good: list[np.ndarray], spec: PreprocessSpec,
                    log: TrainLog) -> PreprocessSpec:
    """The model's crop spec with the background value its good crops leave room for
    (:func:`station.vision.preprocess.fit_background_value`), said when it moved."""
    fitted = fit_background_value(good, spec)
    if fitted != spec:
        print(f"{kind}: background mapped to {fitted.background_value:g} instead of "
              f"{spec.background_value:g}, so what is brighter than the background keeps "
              "its detail (fit_background_value)")
        log({"model": kind, "event": "background_value", "value": fitted.background_value})
    return fitted


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run the whole training; returns a summary (also the last line of the log)."""
    if opts.only not in (None, "autoencoder", "classifier"):
        raise ValueError(f"--only {opts.only!r}: expected autoencoder or classifier")
    if opts.rule not in (*RULES, "auto"):
        raise ValueError(f"--rule {opts.rule!r}: expected auto or one of {', '.join(RULES)}")
    t0 = time.monotonic()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    device = str(pick_device(opts.device))
    torch.manual_seed(opts.seed)
    log = TrainLog(out / "train_log.jsonl")
    try:
        return _train(opts, out, device, log, t0)
    finally:
        log.close()


def _train(opts: TrainOptions, out: Path, device: str, log: TrainLog, t0: float) -> dict[str, Any]:
    samples = read_dataset(opts.data)
    for w in samples.warnings:
        print(f"warning: {w}")
    fingerprint = dataset_fingerprint(samples)
    split_opts = opts.split or SplitOptions(opts.folds, opts.fold, opts.seed,
                                            defect_train_share=opts.defect_train_share,
                                            good_train_share=_good_train_share(opts))
    split: Split = make_split(samples, split_opts)
    (out / "split.json").write_text(json.dumps(
        {"data": str(Path(opts.data).resolve()), "data_fingerprint": fingerprint,
         "options": split_opts.to_dict(), **split.to_json(samples.root)}, indent=1))
    counts = {r: len(v) for r, v in split.roles.items()}
    log({"event": "start", "data": str(opts.data), "device": device, "torch_threads":
         torch.get_num_threads(), "split": counts, "options": {
             k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()
             if k not in ("ae", "split")}, "autoencoder_options": opts.ae.to_dict()})
    print(f"split: {counts}")
    roles = split.roles
    _check_enough(opts, roles)
    used = split.trained()
    loc, align = opts.localize or LocalizeParams(), opts.align or AlignParams()
    cache = opts.cache or out / "cache"
    align, learned = learn_registration(align, loc, learned_good(roles), cache, opts.progress)
    log({"event": "registration", **learned})
    if learned["registration"] == "template":
        print(f"registration: template {learned['template_px'][0]}x{learned['template_px'][1]}"
              f"px from {learned['parts']} good parts; they moved {learned['moved_px_median']:g}"
              f" px (median, 95 %: {learned['moved_px_p95']:g}), {learned['unmatched']} unmatched")
    kinds = [opts.only] if opts.only else ["autoencoder", "classifier"]
    for kind in kinds:  # an int8 copy left by an earlier run is not a copy of the new model
        (out / f"{kind}.int8.onnx").unlink(missing_ok=True)
    budget = opts.minutes * 60.0
    summary: dict[str, Any] = {"models": {}, "split": counts}
    files: dict[str, str] = {}
    fuse_val: dict[str, np.ndarray] = {}
    fuse_samples = roles["thr_good"] + roles["val_labeled"]
    said: set[str] = set()
    multiples = {"autoencoder": 2 ** opts.ae.depth, "classifier": CLASSIFIER_MULTIPLE}
    specs = {kind: crop_spec(opts.size if kind == "autoencoder" else opts.cls_size, align,
                             opts.pixel_format, multiples[kind])
             for kind in kinds}  # both refused here, before any training, when they cannot be

    for kind in kinds:
        spec, multiple = specs[kind], multiples[kind]
        print(crop_note(kind, spec, align, multiple))
        crops = compute_crops(used, loc, align, spec.size, cache, opts.progress,
                              height=spec.crop_height)
        spec = _fit_background(kind, crops.select(roles["train_good"]).good_crops(), spec, log)
        _say_left_out(crops, log, said)
        remaining = budget - (time.monotonic() - t0) - EXPORT_RESERVE_S
        share = opts.ae_share if (kind == "autoencoder" and len(kinds) == 2) else 1.0
        minutes = max(0.2, remaining * share / 60.0)
        path = out / f"{kind}.onnx"
        if kind == "autoencoder":
            info, model, fuse_val[kind] = _train_ae(opts, crops, roles, spec, loc, align,
                                                    fingerprint, minutes, device, path, log,
                                                    fuse_samples)
        else:
            info, model, fuse_val[kind] = _train_cls(opts, crops, roles, spec, loc, align,
                                                     fingerprint, minutes, device, path, log,
                                                     fuse_samples)
        files[kind] = path.name
        summary["models"][kind] = info
        v = info["validation"]  # on this model's threshold images; the decision's n differs
        print(f"{kind}: threshold {info['threshold']:.4g} ({info['threshold_rule']}), on its "
              f"{v.get('n_good', 0) + v.get('n_defect', 0)} threshold images {v}")

    rule, ae_t, cls_t = (opts.rule if opts.rule != "auto" else "either"), 1.0, 1.0
    if len(kinds) == 2:
        d = summary["decision"] = _fusion(opts, out, summary, fuse_val, fuse_samples, log)
        rule, ae_t, cls_t = d["rule"], d["autoencoder_threshold"], d["classifier_threshold"]
    fragment = write_fragment(out, files, rule, ae_t, cls_t, loc, align)
    summary["recipe_fragment"] = str(fragment)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    log({"event": "done", **summary})
    return summary


def _fusion(opts: TrainOptions, out: Path, summary: dict[str, Any],
            fuse_val: dict[str, np.ndarray], fuse_samples: list, log: TrainLog) -> dict[str, Any]:
    """The fusion rule on the images neither model learned from, logged; the sum's threshold
    stamped into both model files (and their int8 copies)."""
    labels = np.array([s.label for s in fuse_samples])
    spreads = (summary["models"]["autoencoder"]["evidence_spread"],
               summary["models"]["classifier"]["evidence_spread"])
    rule, ae_t, cls_t, tuning = fusion_rule(fuse_val["autoencoder"], fuse_val["classifier"],
                                            labels, opts.rule, spreads, opts.max_false_reject)
    decision = {"rule": rule, "autoencoder_threshold": ae_t, "classifier_threshold": cls_t,
                **tuning}
    log({"event": "decision_thresholds", **decision})
    stamp_sum_threshold([out / f"{kind}{suffix}.onnx" for kind in ("autoencoder", "classifier")
                         for suffix in ("", ".int8")], tuning["sum_threshold"])
    return decision


def _check_enough(opts: TrainOptions, roles: dict[str, list]) -> None:
    """Refuse, before any training, a split that leaves a model nothing to learn from or
    nothing to choose its threshold on."""
    if len(roles["train_good"]) < 2:
        raise ValueError(f"{opts.data}: only {len(roles['train_good'])} good training "
                         "images after the split; need more good parts")
    if opts.only != "autoencoder" and not (roles["val_good"] + roles["thr_good"]
                                           + roles["val_labeled"]):
        raise ValueError(f"{opts.data}: too few images to choose the classifier's threshold: "
                         f"the split left none to validate it on ({len(roles['train_good'])} "
                         "good images to learn from); station train needs at least 7 good "
                         "training images, or --only autoencoder")


def _say_left_out(crops: CropSet, log: TrainLog, said: set[str]) -> None:
    """Log every image a model's crops left out, and warn once across the models (each
    crops the images again)."""
    lost = [m for m in crops.messages if m]
    for m in lost:
        log({"event": "part_not_found", "message": m})
    if set(lost) - said:
        print(f"warning: {len(lost)} training image(s) left out (part not found, or the file "
              f"unreadable); first: {lost[0]}")
        said.update(lost)


def _good_train_share(opts: TrainOptions) -> float:
    """The share said, else 0.7 for a fixed region and 0 for a found part (GOOD_TRAIN_SHARE)."""
    if opts.good_train_share is not None:
        return opts.good_train_share
    fixed = opts.localize is not None and opts.localize.method == "fixed"
    return GOOD_TRAIN_SHARE if fixed else 0.0


def _log_threshold_scores(log: TrainLog, model: str, scores: np.ndarray, labels: np.ndarray,
                          samples: list) -> None:
    """The validation scores a threshold was chosen from, in the training log, so an engineer
    can see how close the good and defective parts came, and choose again without training."""
    log({"model": model, "event": "threshold_scores",
         "images": [str(s.path) for s in samples] if len(samples) == len(scores) else [],
         "scores": [float(v) for v in np.ravel(scores)],
         "labels": [int(v) for v in np.ravel(labels)]})


def _fuse_scores(model_norm: np.ndarray, cs_samples: list, fuse_samples: list) -> np.ndarray:
    idx = {s.path: i for i, s in enumerate(cs_samples)}
    return np.array([model_norm[idx[s.path]] if s.path in idx else np.nan for s in fuse_samples])


def _ae_options(opts: TrainOptions, loc: LocalizeParams, minutes: float,
                spec: PreprocessSpec) -> AutoencoderOptions:
    """The autoencoder's options for this product: a fixed region (the crop IS the part) is
    scored edge to edge and, never aligned, gets more jitter (3-fold CV, development tiles at
    256 x 320: AUROC 0.900 at 2 px, 0.908 at 4, 0.919 at 6, 0.912 at 12), one retrieval
    region, its level matched (``photometric``); a found part is cut along its length."""
    ae = AutoencoderOptions(**{**opts.ae.to_dict(), "seed": opts.seed, "minutes": minutes})
    ae.epochs = opts.epochs or ae.epochs
    fixed = loc.method == "fixed"
    if ae.jitter_px < 0:
        ae.jitter_px = 6 if fixed else 1
    if tuple(ae.regions) == (0, 0):
        ae.regions = (1, 1) if fixed else part_regions(spec.crop_height, spec.size)
    ae.whole_region = ae.whole_region or fixed
    ae.photometric = fixed if ae.photometric is None else ae.photometric  # tiles 0.919 -> 0.929
    if ae.reference not in ("neighbours", "network"):
        raise ValueError(f"autoencoder reference {ae.reference!r}: expected neighbours or network")
    return ae


def _train_ae(opts, crops: CropSet, roles, spec, loc, align, fingerprint, minutes, device,
              path: Path, log: TrainLog, fuse_samples):
    ae_opts = _ae_options(opts, loc, minutes, spec)
    train_t = prepare_batch(crops.select(learned_good(roles)).good_crops(), spec)
    val_t = prepare_batch(crops.select(roles["val_good"]).good_crops(), spec)
    network = ae_opts.reference == "network"
    if network and len(val_t) < 2:  # tiny data sets: statistics from the training crops
        val_t = train_t
    print(f"autoencoder ({ae_opts.reference}): "
          + (f"{len(train_t)} good training crops, {len(val_t)} for per-pixel statistics"
             if network else f"{len(train_t) + len(val_t)} good crops in the bank, each "
             "compared with the rest for per-pixel statistics")
          + f", {spec.size}x{spec.crop_height}px"
          + (f", {minutes:.1f} min budget, device {device}" if ae_opts.reference == "network"
             else f", {ae_opts.neighbours} nearest in each of {ae_opts.regions[0]} x "
             f"{ae_opts.regions[1]} regions, jitter {ae_opts.jitter_px} px"))
    if network:
        res = train_autoencoder(train_t, val_t, ae_opts, device=device, progress=opts.progress,
                                log=log)
    else:
        res = neighbour_head(train_t, val_t, ae_opts)
    log({"model": "autoencoder", "event": "calibrated", **res.calibration})
    thr_set = _ok(crops.select(roles["thr_good"] + roles["val_labeled"] + roles["train_defect"]))
    thr_t = prepare_batch(list(thr_set.crops), spec)
    labels = _labels(thr_set)
    if len(thr_t):
        _, raw = score_batches(res.head, thr_t)
    elif res.good_scores is not None:  # no threshold images: the bank's crops, each scored
        thr_t, raw = train_t, res.good_scores  # against the rest (against itself: 0)
        labels = np.zeros(len(raw), np.int64)
    else:  # ... or the network's statistics crops
        thr_t = val_t
        _, raw = score_batches(res.head, thr_t)
        labels = np.zeros(len(raw), np.int64)
    choice = choose_threshold(raw, labels, max_false_reject=opts.max_false_reject)
    _log_threshold_scores(log, "autoencoder", raw, labels, thr_set.samples)
    metrics = _val_metrics(raw, labels, choice.value)
    arch = {"name": "conv_autoencoder_l1_pixelnorm" if ae_opts.reference == "network"
            else RETRIEVAL_ARCHITECTURE, **ae_opts.to_dict(),
            "calibration": res.calibration, "epochs_run": max(
                (h.get("epoch", 0) for h in res.history), default=0)}
    meta = _metadata("autoencoder", choice, spec, loc, align, fingerprint, opts.seed, metrics, arch,
                     raw[labels == 0])
    export_onnx(res.head, path, meta, torch.from_numpy(thr_t[:2]))
    diffs = _check_parity(res.head, path, thr_t[:res.head.batch_limit(8)], log, "autoencoder")
    int8 = None
    if opts.int8 and ae_opts.reference == "network":  # retrieval has no convolutions to speed up
        calib_from = _ok(crops.select(learned_good(roles) + roles["train_defect"]))
        calib, check = int8_sets(calib_from, thr_set, spec, opts.seed)
        int8 = keep_int8_copy("autoencoder", path, meta, calib, check, head_nodes(path), log)
    elif opts.int8:
        log({"model": "autoencoder", "event": "no_int8",
             "reason": "the nearest-good reference has no convolutions to quantize"})
    norm = meta.normalized(raw)
    info = {"file": str(path), "threshold": choice.value, "threshold_rule": choice.rule,
            "validation": metrics, "parity": diffs, "int8": int8,
            "evidence_spread": meta.evidence_spread}
    log({"model": "autoencoder", "event": "exported", **info})
    return info, res.head, _fuse_scores(norm, thr_set.samples, fuse_samples)


def _train_cls(opts, crops: CropSet, roles, spec, loc, align, fingerprint, minutes, device,
               path: Path, log: TrainLog, fuse_samples):
    from training.classifier import ClassifierOptions, train_classifier

    train_set = _ok(crops.select(learned_good(roles) + roles["train_defect"]))
    val_set = _ok(crops.select(roles["val_good"] + roles["thr_good"] + roles["val_labeled"]))
    copts = ClassifierOptions(size=spec.size, height=spec.height, minutes=minutes, seed=opts.seed,
                              pretrained=opts.pretrained, device=device, flips=opts.classifier_flips)
    copts.transplant = 0.5 if loc.method == "fixed" else 0.0  # moved defects: tiles, not screws
    for name, value in (("width", opts.width), ("epochs", opts.epochs or None), ("members",
                        opts.classifier_members), ("transplant", opts.classifier_transplant)):
        if value is not None:  # else the default above, or the classifier's
            setattr(copts, name, value)
    print(f"classifier: {len(train_set.samples)} training crops "
          f"({int(_labels(train_set).sum())} real defects), {len(val_set.samples)} validation, "
          f"{minutes:.1f} min budget, {spec.size}x{spec.crop_height}px, width {copts.width}, "
          f"{copts.members} network(s), flips {copts.flips}, defects moved {copts.transplant:g}")
    masks = train_set.masks() if copts.transplant else None  # read only where they are used
    res = train_classifier(list(train_set.crops), _labels(train_set), list(val_set.crops),
                           _labels(val_set), spec, copts, opts.progress, masks)
    for row in res.history:
        log({"model": "classifier", **row})
    labels = _labels(val_set)
    # the most defects within the budget: the F1 optimum sits just under the few validation ones
    choice = choose_threshold(res.val_p, labels, max_false_reject=opts.max_false_reject,
                              aim="recall")
    _log_threshold_scores(log, "classifier", res.val_p, labels, val_set.samples)
    metrics = _val_metrics(res.val_p, labels, choice.value)
    arch = {"name": "vgg16", "width": copts.width, "size": spec.size, "height": spec.crop_height,
            "pretrained": str(opts.pretrained) if opts.pretrained else None,
            "batch_norm": copts.batch_norm, "epochs_run": len(res.history),
            "members": copts.members, "flips": copts.flips, "transplant": copts.transplant}
    meta = _metadata("classifier", choice, spec, loc, align, fingerprint, opts.seed, metrics, arch,
                     res.val_p[labels == 0])
    x = prepare_batch(list(val_set.crops[:8]), spec)
    # with its Grad-CAM map ``cam``, held to torch by the parity check and kept float in int8
    from training.export import export_classifier, float_nodes

    exported, meta = export_classifier(res.model, path, meta, torch.from_numpy(x[:2]))
    diffs = _check_parity(exported, path, x, log, "classifier")
    int8 = None
    if opts.int8:
        calib, check = int8_sets(train_set, val_set, spec, opts.seed)
        int8 = keep_int8_copy("classifier", path, meta, calib, check, float_nodes(path), log)
    info = {"file": str(path), "threshold": choice.value, "threshold_rule": choice.rule,
            "validation": metrics, "parity": diffs, "int8": int8,
            "evidence_spread": meta.evidence_spread}
    log({"model": "classifier", "event": "exported", **info})
    return info, res.model, _fuse_scores(meta.normalized(res.val_p), val_set.samples, fuse_samples)
