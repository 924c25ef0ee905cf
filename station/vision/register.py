"""A found part's pose, registered to a fraction of a pixel onto its product's mean good part.

The outline gives each part's pose (:mod:`station.vision.localize`: second moments for the
axis, the extents for the centre), and that pose varies from one good screw to the next by
more than the autoencoder allows for. Each good part of the development screws, compared
with the product's mean good part at the autoencoder's 320 x 112 crop, sat 1.0 px off across
its axis (SD), 1.7 px along it and 0.4 degrees around it (1.1 px at the crop's ends), and a
few 2 px: the good screw the autoencoder rejected worst (train/good/149) lay 2 px low, and
its thread's crests lit up the map along its lower edge. The anomaly model compares every
pixel with the good parts' pixels within 1 px (``training.autoencoder``); allowing 2 px lost
thin defects (docs/results.md).

So the product's mean good crop is learned at training (:func:`learn_template`, over the
good training parts, registered themselves), carried in ``align.template`` (the models'
metadata; the recipe names only ``align.registration``), and every part's coarse crop is
matched onto it by the enhanced correlation coefficient (:func:`match`, OpenCV's ECC, a
turn and a shift): training, evaluation and the station all crop through
``station.vision.align.register``, so they cut the same crop. The match runs on the
template's small crop (about 9,000 pixels; 1.6 ms a part on one core) and gives up,
keeping the outline's pose, when it does not converge or would move the part further than
an outline is ever that wrong (:data:`MAX_SHIFT`, :data:`MAX_TURN_DEG`).

3-fold CV on the development screws, autoencoder alone, image AUROC per fold on the test
images / with the held-aside good parts: 0.993 / 0.979, 0.986 / 0.932, 0.964 / 0.986
without; 0.993 / 0.988, 0.979 / 0.958, 0.993 / 0.988 registered, and the good parts it
rejected with the held-aside ones 4 -> 1 (docs/results.md). Matched at the full crop, or at
half this size, or blurred first, it ranked worse.

>>> import numpy as np
>>> t = np.zeros((24, 48), np.uint8); t[8:16, 6:42] = 200
>>> moved = np.roll(t, 1, axis=0)
>>> w = match(moved, template_image(tuple(int(v) for v in t.ravel()), 48))
>>> round(float(w[1, 2]), 1)
1.0
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

#: the template's size: about this many pixels, at most :data:`TEMPLATE_MAX_WIDTH` wide (a
#: long part's 160 x 56; a square part's 94 x 94)
TEMPLATE_PIXELS = 9000
TEMPLATE_MAX_WIDTH = 160
ITERATIONS, EPSILON = 50, 1e-4
#: the largest correction trusted, as a share of the template's width (10 px on 160), and
#: the largest turn: an outline's pose is never this far off, a match that says so has
#: locked onto something else (a bent part, another part in view)
MAX_SHIFT = 0.06
MAX_TURN_DEG = 3.0


def template_size(aspect: float) -> tuple[int, int]:
    """(width, height) of a product's template for crops ``aspect`` (height / width) high.

    >>> template_size(0.35), template_size(1.0)
    ((160, 56), (94, 94))
    """
    a = max(float(aspect), 1e-3)
    w = int(min(TEMPLATE_MAX_WIDTH, max(16, math.floor(math.sqrt(TEMPLATE_PIXELS / a)))))
    return w, max(8, math.ceil(w * a - 1e-9))


def learn_template(crops: np.ndarray) -> tuple[int, ...]:
    """The mean of good parts' grey crops [N, H, W] (uint8), rounded: ``align.template``."""
    c = np.asarray(crops, np.float64)
    if c.ndim != 3 or len(c) < 1:
        raise ValueError(f"learn_template: expected grey crops [N, H, W], got shape {c.shape}")
    return tuple(int(v) for v in np.clip(np.rint(c.mean(axis=0)), 0, 255).astype(np.int64).ravel())


@functools.lru_cache(maxsize=4)
def template_image(values: tuple[int, ...], width: int) -> np.ndarray:
    """``align.template`` as the float32 image :func:`match` compares with (0..1)."""
    w = int(width)
    if w <= 0 or len(values) == 0 or len(values) % w:
        raise ValueError(f"align.template: {len(values)} values are not rows of "
                         f"template_width {w}")
    return np.asarray(values, np.float32).reshape(-1, w) / 255.0


def match(crop: np.ndarray, template: np.ndarray, turn: bool = True) -> np.ndarray | None:
    """The 2x3 warp ``W`` (template px -> crop px) with ``crop(W x) ~ template(x)``: a turn
    and a shift (``turn`` False: a shift only), or None when the match does not converge or
    moves further than a pose is ever off.

    ``crop``: the part's grey uint8 crop at the template's size, cut with the outline's pose.
    """
    x = np.asarray(crop, np.float32) / 255.0
    if x.shape != template.shape:
        raise ValueError(f"register: crop {x.shape} is not the template's {template.shape}")
    w = np.eye(2, 3, dtype=np.float32)
    mode = cv2.MOTION_EUCLIDEAN if turn else cv2.MOTION_TRANSLATION
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ITERATIONS, EPSILON)
    try:
        # no mask, no blur of its own (gaussFiltSize 1): the stubs know that call only with
        # a mask array
        _, w = cv2.findTransformECC(template, x, w, mode, criteria, None, 1)  # type: ignore[call-overload]
    except cv2.error:  # no texture to match, or it diverged: the outline's pose stands
        return None
    shift = float(np.hypot(w[0, 2], w[1, 2]))
    turned = abs(math.degrees(math.atan2(float(w[1, 0]), float(w[0, 0]))))
    if not np.all(np.isfinite(w)) or shift > MAX_SHIFT * x.shape[1] or turned > MAX_TURN_DEG:
        return None
    return w.astype(np.float64)
