"""Crops, tensors and the train/validation/evaluation split over ``station.sources.datasets`` samples.

Crops are made by the station's own ``station.vision.preprocess.crop_for_model`` path
(``find_and_align`` then ``prepare``), never a copy, and cached per data set, crop width and
height and localize/align parameters so a cross-validation run crops each photo once.

The split is a pure function of the sample list and its arguments, so ``station train`` and
``station evaluate`` recompute the same one (and ``split.json`` records it for checking).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.sources.datasets import DatasetError, Sample, load_image, load_mask
from station.vision.align import (
    AlignParams,
    PartNotFound,
    crop_height,
    find_and_align,
    warp_to_crop,
)
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec

CACHE_VERSION = 1


@dataclass
class CropSet:
    """Aligned uint8 crops of some samples; ``ok[i]`` False when the part was not found."""

    samples: list[Sample]
    crops: np.ndarray  # [N, H, W] or [N, H, W, C] uint8 (zeros where not ok)
    crop_to_frame: np.ndarray  # [N, 2, 3] float64
    frame_to_crop: np.ndarray  # [N, 2, 3] float64
    frame_shapes: np.ndarray  # [N, 2] int (height, width)
    ok: np.ndarray  # [N] bool
    messages: list[str]

    def index(self) -> dict[Path, int]:
        return {s.path: i for i, s in enumerate(self.samples)}

    def select(self, samples: Sequence[Sample]) -> CropSet:
        idx = self.index()
        ii = [idx[s.path] for s in samples]
        return CropSet(
            samples=[self.samples[i] for i in ii],
            crops=self.crops[ii], crop_to_frame=self.crop_to_frame[ii],
            frame_to_crop=self.frame_to_crop[ii], frame_shapes=self.frame_shapes[ii],
            ok=self.ok[ii], messages=[self.messages[i] for i in ii],
        )

    def masks(self) -> list[np.ndarray | None]:
        """Each sample's defect mask carried into its crop (bool H x W), resampled as the
        crop was; None where the sample has no mask or its part was not found."""
        h, w = self.crops.shape[1:3]
        out: list[np.ndarray | None] = []
        for s, f2c, shape, ok in zip(self.samples, self.frame_to_crop, self.frame_shapes,
                                     self.ok, strict=True):
            if s.mask_path is None or not ok:
                out.append(None)
                continue
            full = load_mask(s.mask_path, tuple(shape), s.path).astype(np.uint8) * 255
            out.append(warp_to_crop(full, f2c, w, h) >= 64)
        return out

    def good_crops(self) -> list[np.ndarray]:
        """The crops whose part was found (what training can use)."""
        return [c for c, k in zip(self.crops, self.ok, strict=True) if k]


def crop_spec(width: int, align: AlignParams, pixel_format: str, multiple: int) -> PreprocessSpec:
    """The model input a recipe's crop gives at ``width`` px: height = crop_aspect x width,
    rounded up to a whole ``multiple`` (square crops keep the square metadata); colour
    (3 channels, RGB) for ``bgr8``, grey otherwise."""
    if pixel_format not in ("mono8", "bgr8"):
        raise ValueError(f"pixel_format {pixel_format!r}: expected mono8 or bgr8")
    if width % multiple:
        raise ValueError(f"crop width {width} px: expected a multiple of {multiple} "
                         "(the model halves the crop that many times)")
    height = crop_height(width, align, multiple)
    colour = {"channels": 3, "color": "rgb"} if pixel_format == "bgr8" else {}
    return PreprocessSpec(size=width, height=0 if height == width else height, **colour)


def crop_note(kind: str, spec: PreprocessSpec, align: AlignParams, multiple: int) -> str:
    """One line saying the crop a model gets, and when its height was rounded up."""
    exact = float(align.crop_aspect) * spec.size
    rounded = "" if abs(exact - spec.crop_height) < 1e-6 else (
        f" (crop_aspect {align.crop_aspect:g} x {spec.size} = {exact:.1f}, rounded up to a "
        f"multiple of {multiple})")
    colour = "colour" if spec.color == "rgb" else "grey"
    return f"{kind}: crop {spec.size}x{spec.crop_height} px (width x height), {colour}{rounded}"


def _cache_key(samples: Sequence[Sample], loc: LocalizeParams, align: AlignParams, size: int,
               height: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "loc": loc.to_dict(), "align": align.to_dict(),
                         "size": size, "height": height}, sort_keys=True).encode())
    for s in samples:
        st = s.path.stat()
        h.update(f"{s.path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def compute_crops(
    samples: Sequence[Sample],
    localize_params: LocalizeParams,
    align_params: AlignParams,
    size: int,
    cache_dir: Path | None = None,
    progress: bool = True,
    height: int = 0,
) -> CropSet:
    """Aligned crops of ``samples``, ``size`` px wide and ``height`` px high (0 = square),
    cached in ``cache_dir`` when given. Images are read as stored (grey or colour): the
    model's preprocessing spec makes its colour mode, as at the line."""
    from station.progress import progress_bar

    samples = list(samples)
    height = int(height or size)
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(samples, localize_params, align_params, size, height)
        cache_file = Path(cache_dir) / f"crops-{size}x{height}-{key}.npz"
        if cache_file.is_file():
            z = np.load(cache_file, allow_pickle=False)
            return CropSet(samples, z["crops"], z["crop_to_frame"], z["frame_to_crop"],
                           z["frame_shapes"], z["ok"], [str(m) for m in z["messages"]])
    crops: list[np.ndarray | None] = []
    c2f, f2c, shapes, ok, messages = [], [], [], [], []
    for s in progress_bar(samples, desc=f"crops {size}x{height}px", unit="img",
                          disable=not progress):
        aligned, why = None, ""
        try:  # an unreadable image is left out like a part not found (ok False, the reason
            # kept): one bad file does not stop a training, and evaluation counts it an ERROR
            image = load_image(s.path)
            shapes.append(image.shape[:2])
            aligned = find_and_align(image, localize_params, align_params, size, height)
        except DatasetError as exc:
            shapes.append((0, 0))
            why = str(exc)
        except PartNotFound as exc:
            why = f"{s.path}: {exc}"
        if aligned is None:
            crops.append(None)
            c2f.append(np.zeros((2, 3)))
            f2c.append(np.zeros((2, 3)))
            ok.append(False)
            messages.append(why)
            continue
        crops.append(aligned.crop)
        c2f.append(aligned.crop_to_frame)
        f2c.append(aligned.frame_to_crop)
        ok.append(True)
        messages.append("")
    if any(c is not None and c.ndim == 3 for c in crops):  # a data set that stored some
        # images grey and some in colour: grey as colour (lossless); the model's spec makes
        # its colour mode from either, as at the line
        crops = [c if c is None or c.ndim == 3 else cv2.cvtColor(c, cv2.COLOR_GRAY2BGR)
                 for c in crops]
    template = next((c for c in crops if c is not None), np.zeros((height, size), np.uint8))
    stack = np.stack([c if c is not None else np.zeros_like(template) for c in crops])
    result = CropSet(samples, stack, np.asarray(c2f, np.float64), np.asarray(f2c, np.float64),
                     np.asarray(shapes, np.int64), np.asarray(ok, bool), messages)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, crops=result.crops, crop_to_frame=result.crop_to_frame,
                 frame_to_crop=result.frame_to_crop, frame_shapes=result.frame_shapes,
                 ok=result.ok, messages=np.asarray(messages, dtype=str))
        tmp.replace(cache_file)
    return result


# --- the split ------------------------------------------------------------------------------

ROLES = ("train_good", "val_good", "thr_good", "holdout_good", "train_defect", "val_labeled",
         "eval")


@dataclass
class Split:
    """Which samples serve which purpose (paths, sorted); see :func:`make_split`."""

    folds: int
    fold: int
    seed: int
    roles: dict[str, list[Sample]] = field(default_factory=dict)

    def trained(self) -> list[Sample]:
        """Every image a training run learns from or chooses its thresholds with."""
        return [s for r in TRAINED_ROLES for s in self.roles.get(r, [])]

    def paths(self, role: str) -> list[str]:
        return [str(s.path) for s in self.roles[role]]

    def to_json(self, root: Path) -> dict:
        def rel(s: Sample) -> str:
            try:
                return s.path.resolve().relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                return str(s.path)

        return {"folds": self.folds, "fold": self.fold, "seed": self.seed,
                "roles": {r: sorted(rel(s) for s in v) for r, v in self.roles.items()}}


@dataclass(frozen=True)
class SplitOptions:
    folds: int = 0  # 0 = no cross-validation (see ``train_on_test``)
    fold: int = 0
    seed: int = 0
    # with folds: share of train good never used (evaluate --good-from-train); models for the
    # line (no folds) learn from every good image, as nothing could score the held-aside ones
    holdout_good: float = 0.15
    val_good: float = 0.15  # share of the rest: the autoencoder's per-pixel statistics
    thr_good: float = 0.1  # share of the rest: good parts for choosing thresholds
    defect_train_share: float = 0.5  # share of the other folds' defects the classifier trains on
    # share of the other folds' good images both models learn from (the autoencoder's bank,
    # the classifier's good examples); 0 here so a split.json written before it reads as it was
    good_train_share: float = 0.0
    # Without folds: True (training a station's models) puts every labeled test image to work
    # (classifier defects, thresholds), so they must be evaluated on another data set; False
    # (scoring a data set the models never saw) makes every test image evaluation data.
    train_on_test: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _shuffled(items: list[Sample], seed: int, salt: str) -> list[Sample]:
    items = sorted(items, key=lambda s: str(s.path))
    key = int(hashlib.sha256(f"{seed}:{salt}".encode()).hexdigest()[:8], 16)
    order = np.random.default_rng(key).permutation(len(items))
    return [items[i] for i in order]


def make_split(samples: Sequence[Sample], options: SplitOptions) -> Split:
    """Deterministic roles for every sample.

    * ``eval``: the test images of fold ``fold`` of ``folds`` (stratified by defect type):
      never trained or thresholded on. Without folds, none when ``train_on_test`` (the
      models are for the line and are judged on another data set), else every test image.
    * ``train_defect`` / ``train_labeled_good`` / ``val_labeled``: the other test images; a
      share of their defects trains the classifier, a share of their good images joins the
      autoencoder's bank and the classifier's good examples (a good part photographed with
      the defects is the good part the line will see), the rest choose thresholds.
    * ``holdout_good``: with folds, a share of train good never used (rotating with the
      fold, so a cross-validation sees different ones); none without folds, where
      ``station evaluate`` refuses the training data set and a larger bank of good parts
      scores better; ``val_good``: per-pixel statistics and
      nothing else; ``thr_good``: good parts for thresholds (scored fresh by the
      autoencoder, unlike ``val_good``); ``train_good``: the rest.

    A data set with no ``test`` split (plain folders) gets one: its defects and every
    fifth good image.
    """
    o = options
    _check_split_options(o)
    test, train, extra_defects = _test_and_train(list(samples), o.seed)
    evaluation, pool = _fold(test, o)
    if o.folds and not evaluation:  # it would train, and nothing could ever be scored
        most = max(Counter(s.defect_type for s in test).values(), default=0)
        raise ValueError(f"--folds {o.folds} --fold {o.fold}: this fold holds none of the "
                         f"{len(test)} test images (each type's images are dealt to the folds "
                         f"in turn, the largest type has {most}): use --folds {most} or fewer")
    pool_good = [s for s in pool if s.label == 0]
    train_defect, val_defect = _defect_roles(pool, o)
    train_defect += extra_defects
    pool_good = _shuffled(pool_good, o.seed, "cls:good")
    n_good = int(round(o.good_train_share * len(pool_good)))
    train_labeled_good, pool_good = pool_good[:n_good], pool_good[n_good:]
    holdout, val_good, thr_good, train_good = _good_roles(train, o)

    def srt(items: list[Sample]) -> list[Sample]:
        return sorted(items, key=lambda s: str(s.path))

    roles = {
        "train_good": srt(train_good), "val_good": srt(val_good), "thr_good": srt(thr_good),
        "holdout_good": srt(holdout),
        "train_defect": srt(train_defect), "train_labeled_good": srt(train_labeled_good),
        "val_labeled": srt(pool_good + val_defect),
        "eval": srt(evaluation),
    }
    return Split(o.folds, o.fold, o.seed, roles)


#: The roles whose images a training run learns from or chooses its thresholds with.
TRAINED_ROLES = ("train_good", "train_labeled_good", "val_good", "thr_good", "train_defect",
                 "val_labeled")


def learned_good(roles: dict[str, list[Sample]]) -> list[Sample]:
    """The good images both models learn from: the autoencoder's bank, the classifier's good
    examples (a split made before ``train_labeled_good`` has none of those)."""
    return roles["train_good"] + roles.get("train_labeled_good", [])


def _check_split_options(o: SplitOptions) -> None:
    if o.folds < 0 or (o.folds and not 0 <= o.fold < o.folds) or o.folds == 1:
        raise ValueError(f"--folds {o.folds} --fold {o.fold}: expected folds >= 2 and "
                         f"0 <= fold < folds (or folds 0 for no cross-validation)")
    for name in ("holdout_good", "val_good", "thr_good", "defect_train_share",
                 "good_train_share"):
        if not 0.0 <= getattr(o, name) < 1.0:
            raise ValueError(f"{name} = {getattr(o, name)}: expected a share in [0, 1)")


def _test_and_train(samples: list[Sample], seed: int
                    ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(test images, train good images, train defects): a data set without a ``test``
    split gets one from its defects and every fifth good image."""
    test = [s for s in samples if s.split == "test"]
    train = [s for s in samples if s.split != "test"]
    if not test:
        goods = _shuffled([s for s in train if s.label == 0], seed, "pseudo-test")
        test = [s for s in train if s.label == 1] + goods[: len(goods) // 5]
        return test, goods[len(goods) // 5:], []
    return test, [s for s in train if s.label == 0], [s for s in train if s.label == 1]


def _fold(test: list[Sample], o: SplitOptions) -> tuple[list[Sample], list[Sample]]:
    """(held-out evaluation images, the rest), stratified by defect type."""
    by_type: dict[str, list[Sample]] = defaultdict(list)
    for s in test:
        by_type[s.defect_type].append(s)
    evaluation, pool = [], []
    for dtype in sorted(by_type):
        group = _shuffled(by_type[dtype], o.seed, f"fold:{dtype}")
        for i, s in enumerate(group):
            held = i % o.folds == o.fold if o.folds else not o.train_on_test
            (evaluation if held else pool).append(s)
    return evaluation, pool


def _defect_roles(pool: list[Sample], o: SplitOptions) -> tuple[list[Sample], list[Sample]]:
    """The pool's defects, per type: (those the classifier trains on, those for thresholds)."""
    train_defect, val_defect = [], []
    pool_def: dict[str, list[Sample]] = defaultdict(list)
    for s in pool:
        if s.label == 1:
            pool_def[s.defect_type].append(s)
    for dtype in sorted(pool_def):
        group = _shuffled(pool_def[dtype], o.seed, f"cls:{dtype}")
        n = int(round(o.defect_train_share * len(group)))
        train_defect += group[:n]
        val_defect += group[n:]
    return train_defect, val_defect


def _good_roles(train: list[Sample], o: SplitOptions
                ) -> tuple[list[Sample], list[Sample], list[Sample], list[Sample]]:
    """Train good images: (holdout, val_good, thr_good, train_good); the holdout rotates
    with the fold and is empty without folds (models for the line)."""
    goods = _shuffled(train, o.seed, "train-good")
    n_hold = int(round(o.holdout_good * len(goods))) if o.folds else 0
    start = (o.fold * n_hold) % max(1, len(goods)) if o.folds else 0
    rotated = goods[start:] + goods[:start]
    holdout, rest = rotated[:n_hold], rotated[n_hold:]
    n_val = max(2, int(round(o.val_good * len(rest)))) if len(rest) >= 6 else 0
    n_thr = max(2, int(round(o.thr_good * len(rest)))) if len(rest) >= 6 else 0
    return holdout, rest[:n_val], rest[n_val:n_val + n_thr], rest[n_val + n_thr:]
