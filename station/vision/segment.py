"""The one segmentation of parts from the belt: background, relative contrast, threshold, blobs.

Localization (the one part, refined at full resolution) and the free-run trigger (every part
in view, tracked) both find parts this way, so what the trigger fires on is what
localization then finds:

1. a smooth *background* estimate: the part removed by a grey closing (dark part) or opening
   (light part) wider than the part, then blurred; computed at 64 px for speed;
2. *relative contrast* of each pixel to that background (0 = background, 1 = full), so a
   lighting gradient or a dim corner does not look like a part (a plain threshold on the raw
   image catches shadows and vignetting);
3. a *threshold* (Otsu on the contrast, floored by ``min_contrast`` so an empty frame finds
   nothing, or a fixed one);
4. *hysteresis blobs*: a blob counts when it reaches the threshold somewhere, and extends over
   the pixels above a fraction of it (highlights on a metal part are only faintly darker).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

POLARITIES = ("dark_on_light", "light_on_dark")
BACKGROUND_SIDE = 64  # px: the background is estimated on a copy this size


def background(gray: np.ndarray, sigma_frac: float, polarity: str) -> np.ndarray:
    """Smooth background estimate of ``gray`` (same size and dtype).

    The closing/opening kernel is ``sigma_frac`` of the image's long side; it must exceed the
    part's width, or the part stays in the background.
    """
    h, w = gray.shape
    f = BACKGROUND_SIDE / max(h, w)
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_AREA)
    k = max(3, int(round(sigma_frac * BACKGROUND_SIDE)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    op = cv2.MORPH_CLOSE if polarity == "dark_on_light" else cv2.MORPH_OPEN
    padded = cv2.copyMakeBorder(small, k, k, k, k, cv2.BORDER_REFLECT)
    bg = cv2.morphologyEx(padded, op, kernel)
    bg = cv2.GaussianBlur(bg, (0, 0), k / 4.0)[k : k + sh, k : k + sw]
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)


def contrast_scale(gray: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Per-pixel divisor: the background, floored so a dark background cannot blow up noise."""
    sample = gray.ravel()[:: max(1, gray.size // 16384)]  # a robust level needs no full sort
    floor = max(float(np.percentile(sample, 99.0)) * 0.25, 1e-6)
    return np.maximum(bg, floor)


def contrast_map(gray: np.ndarray, sigma_frac: float, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """Relative contrast of every pixel to the background (0 = background, 1 = full).

    Returns (contrast, background), both float32 at the size of ``gray``.
    """
    gray = gray.astype(np.float32, copy=False)
    bg = background(gray, sigma_frac, polarity)
    scale = contrast_scale(gray, bg)
    diff = bg - gray if polarity == "dark_on_light" else gray - bg
    return np.clip(diff / scale, 0.0, 1.0).astype(np.float32), bg


def threshold(contrast: np.ndarray, fixed: float, min_contrast: float) -> float:
    """The contrast that counts as part: ``fixed`` when > 0, else Otsu floored by ``min_contrast``."""
    if fixed > 0:
        return float(fixed)
    c8 = np.clip(contrast * 255.0, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(c8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max(float(otsu) / 255.0, min_contrast)


def choose_polarity(gray: np.ndarray, sigma_frac: float, min_contrast: float) -> str:
    """For ``auto``: the polarity whose above-``min_contrast`` contrast mass is larger."""
    best, best_mass = "dark_on_light", -1.0
    for pol in POLARITIES:
        c, _ = contrast_map(gray, sigma_frac, pol)
        mass = float(c[c > min_contrast].sum())
        if mass > best_mass:
            best, best_mass = pol, mass
    return best


@dataclass(frozen=True)
class Blobs:
    """Connected pixels above the low (hysteresis) level; label 0 is the background."""

    n: int
    labels: np.ndarray  # int32 label image
    stats: np.ndarray  # cv2.connectedComponentsWithStats stats (x, y, w, h, area) per label
    centroids: np.ndarray  # (n, 2) x, y per label
    strong: np.ndarray  # bool per label: reaches the threshold somewhere (label 0: False)


def hysteresis_blobs(contrast: np.ndarray, level: float, low: float, close_px: int = 0) -> Blobs:
    """Blobs of pixels above ``low``, each marked strong when it has a pixel above ``level``.

    ``close_px`` > 1 first closes the weak mask with a disc that wide (joins a part's pieces
    split by a thin glint).
    """
    weak: np.ndarray = (contrast > low).astype(np.uint8)
    if close_px > 1:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px))
        weak = cv2.morphologyEx(weak, cv2.MORPH_CLOSE, disc)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(weak, connectivity=8)
    strong = np.zeros(n, bool)
    strong[np.unique(labels[contrast > level])] = True
    strong[0] = False
    return Blobs(n, labels, stats, centroids, strong)


HYSTERESIS = 0.75  # a part extends over pixels above this fraction of the threshold


@dataclass(frozen=True)
class Segmentation:
    """One image segmented: the polarity used, contrast and background maps, the threshold, blobs."""

    polarity: str
    contrast: np.ndarray
    bg: np.ndarray
    level: float
    blobs: Blobs


def segment(gray: np.ndarray, polarity: str, sigma_frac: float, fixed_threshold: float,
            min_contrast: float) -> Segmentation:
    """Segment a (detection-size) grey image into part blobs, steps 1-4 of the module docstring.

    ``polarity`` ``auto`` picks the one with more contrast mass. The weak mask is closed with a
    disc of 1.2 % of the long side, so a thin glint does not cut a part in two.
    """
    gray = gray.astype(np.float32, copy=False)
    if polarity == "auto":
        polarity = choose_polarity(gray, sigma_frac, min_contrast)
    contrast, bg = contrast_map(gray, sigma_frac, polarity)
    level = threshold(contrast, fixed_threshold, min_contrast)
    low = max(min_contrast, HYSTERESIS * level)
    close_px = max(3, int(round(0.012 * max(gray.shape[:2]))) | 1)
    return Segmentation(polarity, contrast, bg, level, hysteresis_blobs(contrast, level, low, close_px))
