"""The product's registration template, learned from the good training parts before either
model sees a crop (:mod:`station.vision.register` says why parts are registered).

Two passes: the good parts' mean crop as the outlines put them, then the mean of the same
parts registered onto that first mean, which is sharper (the thread's crests and the head's
rim no longer smeared by the parts' offsets). Only the images the models learn from are
used: the parts a threshold is chosen on or a model is judged on never shape the crop.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from station.sources.datasets import Sample
from station.vision.align import AlignParams
from station.vision.gray import to_gray
from station.vision.localize import LocalizeParams
from station.vision.register import learn_template, template_size
from training.data import CropSet, compute_crops

#: fewer good parts than this make no template: their mean is one part's dust and glints
MIN_PARTS = 4


def learn_registration(align: AlignParams, loc: LocalizeParams, goods: list[Sample],
                       cache: Path | None, progress: bool = False
                       ) -> tuple[AlignParams, dict[str, Any]]:
    """``align`` with the template learned from ``goods`` (none for ``registration = "none"``,
    a region, or too few parts found), and what was learned (for the training log)."""
    base = replace(align, template=(), template_width=0)
    if not align.registers:
        return base, {"registration": "none"}
    width, height = template_size(align.crop_aspect)
    first = compute_crops(goods, loc, base, width, cache, progress, height=height)
    if int(first.ok.sum()) < MIN_PARTS:
        return base, {"registration": "none", "why": f"{int(first.ok.sum())} good parts found, "
                      f"a template needs {MIN_PARTS}"}
    learned = replace(base, template=learn_template(_grey(first)), template_width=width)
    second = compute_crops(goods, loc, learned, width, cache, progress, height=height)
    moved = _moved_px(first, second, width, height)
    final = replace(base, template=learn_template(_grey(second)), template_width=width)
    return final, {"registration": "template", "template_px": [width, height],
                   "parts": int(second.ok.sum()),
                   "moved_px_median": round(float(np.median(moved)), 3) if len(moved) else 0.0,
                   "moved_px_p95": round(float(np.percentile(moved, 95)), 3) if len(moved) else 0.0,
                   "unmatched": int((moved == 0).sum())}


def _grey(crops: CropSet) -> np.ndarray:
    return np.stack([to_gray(c) for c in crops.crops[crops.ok]])


def _moved_px(before: CropSet, after: CropSet, width: int, height: int) -> np.ndarray:
    """How far registration moved each part's crop centre, in template px (0: the match was
    not trusted and the outline's pose stood)."""
    ok = before.ok & after.ok
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0, 1.0])
    a = before.crop_to_frame[ok] @ centre
    b = after.crop_to_frame[ok] @ centre
    scale = np.hypot(before.crop_to_frame[ok, 0, 0], before.crop_to_frame[ok, 0, 1])
    return np.hypot(*(a - b).T) / np.maximum(scale, 1e-9)
