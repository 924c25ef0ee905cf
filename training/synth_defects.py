"""Synthesized defects pasted onto good aligned crops, so the classifier learns without real ones.

An engineer often has hundreds of good parts and no defective ones. These generators make
plausible local anomalies on a good crop and return the exact mask of what changed:

- ``cutpaste``: a patch cut from another crop (or elsewhere on this one), rotated, brightness
  shifted, pasted through a soft mask (CutPaste, Li et al. 2021);
- ``scratch``: a thin bright or dark curve across the part;
- ``blob``: an irregular patch of noise texture (stains, corrosion, porous surface);
- ``dent``: the silhouette eaten into, bulged out, or smeared locally (damaged threads,
  bent tips, chipped heads).

:func:`transplant` does the same with a real defect whose mask is known: it moves the
defect onto another good crop, so the classifier sees it on more than its own photograph.

They work on uint8 crops as the shared crop makes them (gray ``(H, W)`` or colour
``(H, W, C)``) with the part roughly centred and horizontal, and put the defect mostly on
the part, found by Otsu on the crop (its polarity read from the crop border, which is
background). Every random choice comes from the ``numpy.random.Generator`` passed in, so the
same seed gives the same defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.vision.gray import to_gray

KINDS: tuple[str, ...] = ("cutpaste", "scratch", "blob", "dent")
MIN_CHANGE = 12.0  # mean |change| (gray levels) inside the mask for a defect to count as visible


@dataclass(frozen=True)
class SynthDefect:
    """A crop with a synthesized defect: ``image`` uint8 like the input, ``mask`` bool (H, W)."""

    image: np.ndarray
    mask: np.ndarray
    kind: str


def _check_crop(crop: np.ndarray) -> None:
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8:
        raise ValueError(f"synthesized defects need a uint8 crop, got {getattr(crop, 'dtype', type(crop))}")
    if crop.ndim not in (2, 3) or min(crop.shape[:2]) < 16:
        raise ValueError(f"synthesized defects need a crop of at least 16x16 pixels, got {crop.shape}")


def part_mask(crop: np.ndarray) -> np.ndarray:
    """Bool mask of the part: Otsu on the blurred crop, polarity from the border (background).

    Falls back to a central ellipse when no plausible part is found (a blank crop), so the
    generators always have somewhere to put a defect.
    """
    gray = cv2.GaussianBlur(to_gray(crop), (5, 5), 0)
    h, w = gray.shape
    thr, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).astype(np.float64)
    part = gray < thr if np.median(border) >= thr else gray > thr
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    part = cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_OPEN, k).astype(bool)
    frac = part.mean()
    if not 0.005 <= frac <= 0.7:
        yy, xx = np.mgrid[0:h, 0:w]
        part = ((xx - w / 2) / (0.4 * w)) ** 2 + ((yy - h / 2) / (0.12 * h)) ** 2 <= 1.0
    return part


def _edge(part: np.ndarray) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    u8 = part.astype(np.uint8)
    return (cv2.dilate(u8, k) != cv2.erode(u8, k))


def _pick(rng: np.random.Generator, where: np.ndarray, margin: int) -> tuple[int, int]:
    """A random (x, y) from ``where``, at least ``margin`` pixels inside the crop."""
    h, w = where.shape
    inner = np.zeros_like(where)
    inner[margin : h - margin, margin : w - margin] = where[margin : h - margin, margin : w - margin]
    ys, xs = np.nonzero(inner)
    if len(xs) == 0:
        return int(rng.integers(margin, w - margin)), int(rng.integers(margin, h - margin))
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def _soft_shape(rng: np.random.Generator, shape: tuple[int, int], cx: int, cy: int,
                rx: float, ry: float) -> np.ndarray:
    """An irregular blob (a noisy ellipse), soft-edged, values in [0, 1]."""
    h, w = shape
    small = rng.normal(size=(8, 8)).astype(np.float32)
    noise = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2) + 0.25 * noise
    hard = (r <= 1.0).astype(np.float32)
    sigma = max(0.6, 0.15 * min(rx, ry))
    return np.clip(cv2.GaussianBlur(hard, (0, 0), sigma), 0.0, 1.0)


def _blend(crop: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``crop*(1-alpha) + layer*alpha``, per channel, rounded back to uint8."""
    base = crop.astype(np.float32)
    a = alpha if crop.ndim == 2 else alpha[:, :, None]
    if crop.ndim == 3 and layer.ndim == 2:
        layer = layer[:, :, None]
    return np.clip(np.rint(base * (1.0 - a) + layer * a), 0, 255).astype(np.uint8)


def _cutpaste(rng, crop, part, donor):
    h, w = part.shape
    side = min(h, w)
    ph = int(rng.uniform(0.05, 0.14) * side)
    pw = int(ph * rng.uniform(0.5, 2.0))
    ph, pw = max(ph, 4), max(min(pw, w // 3), 4)
    src = donor if donor is not None and donor.shape[:2] == crop.shape[:2] else crop
    src_part = part_mask(src)
    sx, sy = _pick(rng, src_part if rng.random() < 0.8 else np.ones_like(src_part), max(ph, pw))
    m = max(ph, pw)
    big = src[max(sy - m, 0) : sy + m, max(sx - m, 0) : sx + m]
    rot = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), rng.uniform(20, 340), 1.0)
    big = cv2.warpAffine(big, rot, (big.shape[1], big.shape[0]), borderMode=cv2.BORDER_REFLECT)
    oy, ox = (big.shape[0] - ph) // 2, (big.shape[1] - pw) // 2
    patch = big[oy : oy + ph, ox : ox + pw].astype(np.float32)
    patch = patch * rng.uniform(0.8, 1.2) + rng.uniform(-25, 25)
    tx, ty = _pick(rng, part, max(ph, pw) // 2 + 1)
    layer = crop.astype(np.float32).copy()
    y0, x0 = ty - ph // 2, tx - pw // 2
    y0, x0 = int(np.clip(y0, 0, h - ph)), int(np.clip(x0, 0, w - pw))
    if crop.ndim == 3 and patch.ndim == 2:
        patch = np.repeat(patch[:, :, None], crop.shape[2], axis=2)
    layer[y0 : y0 + ph, x0 : x0 + pw] = patch
    alpha = np.zeros((h, w), np.float32)
    alpha[y0 : y0 + ph, x0 : x0 + pw] = 1.0
    alpha *= _soft_shape(rng, (h, w), x0 + pw // 2, y0 + ph // 2, pw * 0.42, ph * 0.42)
    return _blend(crop, layer, alpha), alpha


def _scratch(rng, crop, part, donor):
    h, w = part.shape
    side = min(h, w)
    length = rng.uniform(0.06, 0.25) * side
    x0, y0 = _pick(rng, part, 2)
    ang = rng.uniform(0, 2 * np.pi)
    x2, y2 = x0 + length * np.cos(ang), y0 + length * np.sin(ang)
    bend = rng.normal(0, 0.15 * length, size=2)
    x1, y1 = (x0 + x2) / 2 + bend[0], (y0 + y2) / 2 + bend[1]
    t = np.linspace(0, 1, 32)[:, None]
    pts = ((1 - t) ** 2 * [x0, y0] + 2 * (1 - t) * t * [x1, y1] + t**2 * [x2, y2])
    scale = 16  # sub-pixel anti-aliased polyline
    thick = max(1, int(round(rng.uniform(0.006, 0.02) * side)))
    canvas = np.zeros((h, w), np.uint8)
    cv2.polylines(canvas, [np.round(pts * scale).astype(np.int32)], False, 255, thick,
                  cv2.LINE_AA, shift=4)
    alpha = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), 0.5)
    alpha *= cv2.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    gray = to_gray(crop).astype(np.float32)
    level = float(np.median(gray[part])) if part.any() else float(gray.mean())
    target = np.clip(level + rng.choice([-1.0, 1.0]) * rng.uniform(60, 120), 0, 255)
    layer = np.full((h, w), target, np.float32)
    return _blend(crop, layer, alpha * rng.uniform(0.7, 1.0)), alpha


def _blob(rng, crop, part, donor):
    h, w = part.shape
    side = min(h, w)
    rx = rng.uniform(0.025, 0.08) * side
    ry = rx * rng.uniform(0.5, 1.5)
    cx, cy = _pick(rng, part, int(max(rx, ry)) + 1)
    alpha = _soft_shape(rng, (h, w), cx, cy, rx, ry)
    alpha *= cv2.GaussianBlur(part.astype(np.float32), (0, 0), 1.0)
    gray = to_gray(crop).astype(np.float32)
    grain = rng.uniform(0.5, 3.0)
    noise = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), grain)
    noise /= noise.std() + 1e-6
    level = float(np.median(gray[part])) if part.any() else float(gray.mean())
    texture = level + rng.uniform(-50, 50) + noise * rng.uniform(25, 60)
    return _blend(crop, np.clip(texture, 0, 255), alpha * rng.uniform(0.7, 1.0)), alpha


def _dent(rng, crop, part, donor):
    h, w = part.shape
    side = min(h, w)
    r = rng.uniform(0.02, 0.06) * side
    cx, cy = _pick(rng, _edge(part), int(r) + 1)
    region = _soft_shape(rng, (h, w), cx, cy, r, r * rng.uniform(0.6, 1.4))
    gray = to_gray(crop).astype(np.float32)
    bg = float(np.median(gray[~part])) if (~part).any() else 255.0
    fg = float(np.median(gray[part])) if part.any() else 0.0
    mode = rng.choice(["dent", "bulge", "smear"])
    if mode == "dent":  # part material missing: background shows through
        layer = np.full((h, w), bg, np.float32)
        alpha = region * part
    elif mode == "bulge":  # extra material or a bent edge: part colour spills outward
        layer = np.full((h, w), fg, np.float32)
        alpha = region * ~part
    else:  # smeared/deformed edge: a strong directional blur of the neighbourhood
        k = int(max(5, 2 * r)) | 1
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= kernel.sum() + 1e-6
        layer = cv2.filter2D(crop, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
        alpha = region
    return _blend(crop, layer, alpha.astype(np.float32)), alpha.astype(np.float32)


_GENERATORS = {"cutpaste": _cutpaste, "scratch": _scratch, "blob": _blob, "dent": _dent}


def synthesize(
    crop: np.ndarray,
    rng: np.random.Generator,
    kind: str | None = None,
    donor: np.ndarray | None = None,
    tries: int = 6,
) -> SynthDefect:
    """Paste one synthesized defect on a good uint8 crop; returns the image and its mask.

    ``kind`` is one of :data:`KINDS` (random when None); ``donor`` is another good crop of the
    same size that cut-paste patches come from (this crop when None). The mask marks pixels
    that visibly changed (by more than 1/4 of the strongest change, and at least 4 gray
    levels); a draw that changes too little to see is redrawn, up to ``tries`` times.
    """
    _check_crop(crop)
    if kind is not None and kind not in _GENERATORS:
        raise ValueError(f"unknown synthesized defect kind {kind!r}; expected one of {KINDS}")
    part = part_mask(crop)
    best: SynthDefect | None = None
    best_change = -1.0
    for _ in range(max(1, tries)):
        k = kind or str(rng.choice(KINDS))
        image, alpha = _GENERATORS[k](rng, crop, part, donor)
        diff = np.abs(image.astype(np.int16) - crop.astype(np.int16))
        if diff.ndim == 3:
            diff = diff.max(axis=2)
        mask = (alpha > 0.2) & (diff >= max(4, 0.25 * float(diff.max())))
        change = float(diff[mask].mean()) if mask.any() else 0.0
        if change > best_change:
            best, best_change = SynthDefect(image=image, mask=mask, kind=k), change
        if change >= MIN_CHANGE and mask.sum() >= 4:
            break
    assert best is not None
    return best


def transplant(defect: np.ndarray, mask: np.ndarray, good: np.ndarray,
               rng: np.random.Generator) -> SynthDefect:
    """A real defect moved onto another good crop: its masked pixels (and a rim of 1-3 px,
    feathered) pasted at the same place, their level shifted by how the two crops differ
    around it.

    Aligned crops put a defect's place on the part at the same pixels, so the defect lands
    where it could occur; on a new background it stops being tied to the rest of the image it
    came from (its lighting, its tile), which a classifier with tens of real defects would
    otherwise learn as well. ``mask`` is the defect's bool mask in crop space.

    >>> rng = np.random.default_rng(0)
    >>> good = np.full((32, 32), 100, np.uint8); bad = np.full((32, 32), 150, np.uint8)
    >>> m = np.zeros((32, 32), bool); m[12:20, 12:20] = True; bad[m] = 130
    >>> out = transplant(bad, m, good, rng).image
    >>> int(out[16, 16]), int(out[2, 2])  # 20 levels under its surroundings, as it was
    (80, 100)
    """
    _check_crop(defect)
    _check_crop(good)
    if defect.shape != good.shape or mask.shape != good.shape[:2]:
        raise ValueError(f"transplant needs crops and a mask of one size, got {defect.shape}, "
                         f"{good.shape} and {mask.shape}")
    r = int(rng.integers(1, 4))
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    ring = (cv2.dilate(grown.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (11, 11))) > 0) & ~grown
    alpha = np.clip(cv2.GaussianBlur(grown.astype(np.float32), (0, 0), 1.0), 0.0, 1.0)
    src, dst = defect.astype(np.float32), good.astype(np.float32)
    shift = (dst[ring].mean(axis=0) - src[ring].mean(axis=0)) if ring.any() else 0.0
    return SynthDefect(image=_blend(good, src + shift, alpha), mask=grown, kind="transplant")
