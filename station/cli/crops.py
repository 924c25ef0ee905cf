"""``station crops``: the aligned crop of every image of a data set, a montage and a log.

The quickest way to see whether localization and alignment work for a product before training:
every crop should show the part in the same pose. The summary compares the per-pixel spread of
aligned good crops with that of the unaligned images (lower = better aligned).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station.cli.numbers import count
from station.vision.align import CROP_MULTIPLE, AlignParams, align, crop_height
from station.vision.gray import to_gray, to_uint8
from station.vision.localize import Localization, LocalizeParams, localize

THUMB = 96


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="data set folder (MVTec layout, plain folders or labels.csv), or a "
                             "folder of good images (the one station init-recipe measured)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for crops, montage.png and crops.jsonl")
    parser.add_argument("--size", type=count(8, 4096), default=256,
                        help="crop width in pixels (default 256); the height is "
                             "align.crop_aspect x width, rounded up to a multiple of 8 as "
                             "station train does")
    parser.add_argument("--recipe", type=Path,
                        help="take [localize], [align] and camera.pixel_format from this recipe "
                             "(without it: a dark elongated part on a light plate, square crops)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Spread:
    """Running per-pixel mean/variance over images (gray, float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.s: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, gray: np.ndarray) -> None:
        g = gray.astype(np.float64)
        if self.s is None or self.s2 is None:
            self.s, self.s2 = np.zeros_like(g), np.zeros_like(g)
        self.s += g
        self.s2 += g * g
        self.n += 1

    def value(self) -> float | None:
        """Mean over pixels of the std across images."""
        if self.n < 2 or self.s is None or self.s2 is None:
            return None
        mean = self.s / self.n
        var = np.maximum(self.s2 / self.n - mean * mean, 0.0) * self.n / (self.n - 1)
        return float(np.sqrt(var).mean())


LABEL_PX = 13  # the label strip under each thumbnail


def cell_shape(width: int, height: int) -> tuple[int, int]:
    """(height, width) of a montage cell for crops of this shape: a long crop gets a wider
    cell, so the part keeps its proportions; the label strip is added below."""
    wide = THUMB * 2 if height / width < 0.6 else THUMB
    return max(16, round(wide * height / width)) + LABEL_PX, wide


def _thumb(image: np.ndarray, label: str, failed: bool, cell: tuple[int, int]) -> np.ndarray:
    """The image fitted into the cell with its proportions kept (letterboxed), labelled."""
    ch, cw = cell[0] - LABEL_PX, cell[1]
    img = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3]
    f = min(cw / img.shape[1], ch / img.shape[0])
    w, h = max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))
    t = np.full((cell[0], cw, 3), 255, np.uint8)
    y0, x0 = (ch - h) // 2, (cw - w) // 2
    t[y0:y0 + h, x0:x0 + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    colour = (0, 0, 255) if failed else (0, 160, 0)
    cv2.putText(t, label[:24], (2, cell[0] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour, 1,
                cv2.LINE_AA)
    if failed:
        cv2.rectangle(t, (0, 0), (cw - 1, cell[0] - 1), colour, 2)
    return t


def _montage(thumbs: list[np.ndarray]) -> np.ndarray:
    th, tw = thumbs[0].shape[:2]
    cols = max(1, min(len(thumbs), 20 * THUMB // tw))
    rows = math.ceil(len(thumbs) / cols)
    sheet = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        sheet[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = t
    return sheet


def _params(recipe_path: Path | None) -> tuple[LocalizeParams, AlignParams, str]:
    """(localize, align, pixel_format) of the recipe, or the built-in defaults."""
    if recipe_path is None:
        return LocalizeParams(), AlignParams(), "keep"
    from station.config import load_recipe

    recipe = load_recipe(recipe_path, check_files=False)
    return recipe.localize, recipe.align, recipe.camera.pixel_format


class _Tally:
    """What ``station crops`` learns over the data set, for the montage and the summary."""

    def __init__(self) -> None:
        self.aligned, self.unaligned = _Spread(), _Spread()
        self.thumbs: list[np.ndarray] = []
        self.failures: list[str] = []
        self.statuses: dict[str, int] = {}
        self.lengths: list[float] = []

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


def _location(loc: Localization) -> dict[str, Any]:
    """The crops.jsonl fields of one localization (rounded for a readable log)."""
    return {
        "found": loc.ok,
        "status": loc.status,
        "angle": None if loc.angle_deg is None else round(loc.angle_deg, 3),
        "box": None if loc.box is None else list(loc.box),
        "center": None if loc.center is None else [round(v, 2) for v in loc.center],
        "length": None if loc.length_px is None else round(loc.length_px, 2),
        "width": None if loc.width_px is None else round(loc.width_px, 2),
        "head_ratio": None if loc.head_ratio is None else round(loc.head_ratio, 3),
        "message": loc.message,
    }


@dataclass(frozen=True)
class _Job:
    """What every image of the run is cropped with."""

    localize: LocalizeParams
    align: AlignParams
    load: str  # load_image mode: keep | gray (mono8) | color (bgr8)
    width: int
    height: int

    @property
    def cell(self) -> tuple[int, int]:
        return cell_shape(self.width, self.height)


def _one(sample: Any, rel: Path, out: Path, job: _Job, tally: _Tally) -> dict[str, Any] | None:
    """Localize, align and write one sample's crop; its log record (None = cannot write)."""
    from station.sources.datasets import DatasetError, load_image

    record: dict[str, Any] = {"file": rel.as_posix(), "label": sample.label,
                              "defect_type": sample.defect_type}
    try:
        image = load_image(sample.path, job.load)
    except DatasetError as exc:
        record.update(found=False, status="unreadable", message=str(exc))
        tally.failures.append(f"{sample.path}: {exc}")
        tally.count("unreadable")
        return record
    loc = localize(image, job.localize)
    tally.count(loc.status)
    record.update(_location(loc))
    if not loc.ok:
        tally.failures.append(f"{sample.path}: {loc.status}: {loc.message}")
        tally.thumbs.append(_thumb(to_uint8(image), f"{loc.status}", True, job.cell))
        return record
    crop = align(image, loc, job.align, job.width, job.height).crop
    dest = (out / rel).with_suffix(".png")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dest), crop):
        print(f"station crops: cannot write {dest}", file=sys.stderr)
        return None
    record["crop"] = dest.relative_to(out).as_posix()
    tally.lengths.append(float(loc.length_px or 0.0))
    tally.thumbs.append(_thumb(crop, sample.defect_type, False, job.cell))
    if sample.label == 0:
        tally.aligned.add(to_gray(crop))
        small = cv2.resize(to_gray(image), (job.width, job.height), interpolation=cv2.INTER_AREA)
        tally.unaligned.add(small)
    return record


def _summary(args: argparse.Namespace, samples: Any, out: Path, tally: _Tally,
             region: bool = False) -> int:
    """Print what was found; 1 when some image gave no crop."""
    total = len(samples)
    kind = "a folder of good images" if samples.layout == "images" else f"{samples.layout} layout"
    print(f"{total} images from {args.data} ({kind}) -> {out}")
    print("status: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.statuses.items())))
    if tally.lengths:
        q = np.percentile(tally.lengths, [0, 50, 100])
        what = "region width" if region else "part length"  # a fixed region is not measured
        print(f"{what} (px): min {q[0]:.0f}, median {q[1]:.0f}, max {q[2]:.0f}")
    a, u = tally.aligned.value(), tally.unaligned.value()
    if a is not None and u is not None:
        print(
            f"per-pixel spread over {tally.aligned.n} good images (mean std, 8-bit gray): "
            f"aligned crops {a:.1f}, unaligned (whole image resized) {u:.1f}"
        )
    print(f"montage: {out / 'montage.png'}; log: {out / 'crops.jsonl'}")
    if tally.failures:
        print(f"no part found in {len(tally.failures)} of {total} images:", file=sys.stderr)
        for line in tally.failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from station.config import RecipeError
    from station.progress import progress_bar
    from station.sources.datasets import DatasetError, read_dataset

    try:
        loc, align_params, pixel_format = _params(args.recipe)
        samples = read_dataset(args.data, strict=False, images_as_good=True)
    except (RecipeError, DatasetError) as exc:
        print(f"station crops: {exc}", file=sys.stderr)
        return 2
    for warning in samples.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    load = {"mono8": "gray", "bgr8": "color"}.get(pixel_format, "keep")
    height = crop_height(int(args.size), align_params, CROP_MULTIPLE)
    job = _Job(loc, align_params, load, int(args.size), height)
    exact = align_params.crop_aspect * args.size
    note = "" if abs(exact - height) < 1e-6 else \
        f" (crop_aspect {align_params.crop_aspect:g} x {args.size} = {exact:.1f}, rounded up " \
        f"to a multiple of {CROP_MULTIPLE})"
    print(f"crops {job.width}x{job.height} px (width x height){note}")
    root = samples.root.resolve()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tally = _Tally()
    with open(out / "crops.jsonl", "w", encoding="utf-8") as log:
        for sample in progress_bar(samples, desc="crops", unit="img", file=sys.stderr,
                                   disable=args.no_progress):
            try:
                rel = sample.path.resolve().relative_to(root)
            except ValueError:
                rel = Path(sample.path.name)
            record = _one(sample, rel, out, job, tally)
            if record is None:
                return 1
            log.write(json.dumps(record) + "\n")
    if tally.thumbs:
        cv2.imwrite(str(out / "montage.png"), _montage(tally.thumbs))
    return _summary(args, samples, out, tally, loc.method == "fixed")
