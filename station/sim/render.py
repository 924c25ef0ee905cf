"""Whole part photos: a part on a dusty, unevenly lit belt with sensor noise, and its exact mask.

Why it exists: tests, the demo and the simulated conveyor need parts that look like the MVTec
AD "screw" photos (a dark metallic countersunk screw lying at any angle on a light grey
background), with defects whose masks are *exactly* the pixels the defect changed, without any
data shipped in the repository. numpy + OpenCV only.

How the exact masks are made: every random choice (part shape, shading, background, dust,
lighting, noise, defect parameters) is drawn up front in a fixed order, so the clean part and the
defective part are rendered from the same random state. Both are composed noise-free and lit
identically; the mask is where those lit renders differ by at least ``MASK_LEVEL`` grey levels
(smaller differences are snapped back to the clean value, so they do not exist in the image).
The same sensor noise is then added to both; values never clip, so
``mask == (image != clean)`` holds pixel for pixel. Dust specks sit on the background away from
the part and are identical in both renders, so they are never in a mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from station.sim.defects import DEFECT_TYPES, _DefectParams, _draw_defect
from station.sim.layers import _grain, _layers
from station.sim.parts import (
    Appearance,
    PartPose,
    PartSprite,
    RenderedPart,
    _margin,
    draw_appearance,
    part_extent,
)

MASK_LEVEL = 2.0
"""Grey levels (0-255 scale) a noise-free pixel must change by to count as defective."""

_PRE_NOISE_RANGE = (10.0, 245.0)  # lit values are kept here so noise never clips at 0 or 255
_NOISE_BOUND = 3.0  # noise is clipped at this many sigmas (sigma <= 2.5 -> |noise| < 8)


def _background(rng: np.random.Generator, h: int, w: int, color: bool) -> np.ndarray:
    """Light grey surface with a faint low-frequency texture (unlit, HxWxC float32)."""
    level = rng.uniform(0.72, 0.78)
    coarse = rng.standard_normal((6, 6)).astype(np.float32)
    tex = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(0.012)
    fine = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 1.0)
    base = np.float32(level) + tex + fine * np.float32(0.006)
    if color:
        tint = np.array([1.0 + rng.uniform(0, 0.03), 1.0, 1.0 - rng.uniform(0, 0.03)], np.float32)
        return base[..., None] * tint
    return base[..., None]


def _dust(
    rng: np.random.Generator,
    h: int,
    w: int,
    keep_out: tuple[float, float, float, float, float],
) -> np.ndarray:
    """Darkening factor (HxW) of a few small dark specks kept away from the part."""
    cx, cy, angle_deg, half_len, half_wid = keep_out
    ca, sa = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    dust = np.zeros((h, w), np.float32)
    n = int(rng.poisson(0.00012 * h * w)) + 1
    for _ in range(n):
        x, y = rng.uniform(2, w - 3), rng.uniform(2, h - 3)
        r = rng.uniform(0.6, 1.6) * max(h, w) / 256.0
        strength = rng.uniform(0.25, 0.5)
        dx, dy = x - cx, y - cy
        if abs(dx * ca + dy * sa) < half_len and abs(dy * ca - dx * sa) < half_wid:
            continue
        rad = int(math.ceil(r + 2))
        xa, xb = max(int(x) - rad, 0), min(int(x) + rad + 2, w)
        ya, yb = max(int(y) - rad, 0), min(int(y) + rad + 2, h)
        gx = np.arange(xa, xb, dtype=np.float32)[None, :] - np.float32(x)
        gy = np.arange(ya, yb, dtype=np.float32)[:, None] - np.float32(y)
        cov = np.clip(r - np.sqrt(gx * gx + gy * gy) + 0.5, 0.0, 1.0) * np.float32(strength)
        dust[ya:yb, xa:xb] = np.maximum(dust[ya:yb, xa:xb], cov)
    return dust


def _lighting(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Global level times a smooth linear gradient, on the 0-255 scale (HxW float32)."""
    gain = rng.uniform(0.92, 1.06)
    amp = rng.uniform(0.0, 0.08)
    phi = rng.uniform(0, 2 * math.pi)
    s = max(h, w)
    gx = (np.arange(w, dtype=np.float32) - w / 2) * np.float32(math.cos(phi) / s)
    gy = (np.arange(h, dtype=np.float32) - h / 2) * np.float32(math.sin(phi) / s)
    return np.float32(255.0 * gain) * (1.0 + np.float32(amp) * (gx[None, :] + gy[:, None]))


def _random_pose(
    rng: np.random.Generator, app: Appearance, size: tuple[int, int]
) -> PartPose:
    """Any angle, a length jitter, and a centre that keeps the whole part in the image."""
    h, w = size
    length = float(rng.uniform(0.62, 0.72) * min(h, w))
    angle = float(rng.uniform(0.0, 360.0))
    hx, hy = part_extent(app, length, angle)
    pad = 0.03 * length + 3
    cx = float(rng.uniform(hx + pad, max(w - hx - pad, hx + pad)))
    cy = float(rng.uniform(hy + pad, max(h - hy - pad, hy + pad)))
    return PartPose((cx, cy), angle, length)


def render_part(
    rng: np.random.Generator,
    size: tuple[int, int] = (256, 256),
    defect: str | None = None,
    color: bool = False,
    pose: PartPose | None = None,
) -> RenderedPart:
    """Render one part photo (size = (height, width)) with an optional defect and its mask.

    The same generator state gives the same part, lighting and noise whatever ``defect`` is,
    so ``render_part(rng_copy, defect=None).image`` is this image's ``clean``.
    """
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"render_part: size {size} is too small; need at least 32x32 pixels")
    if defect is not None and defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; expected one of {', '.join(DEFECT_TYPES)}")
    app = draw_appearance(rng, color)
    drawn_pose = _random_pose(rng, app, (h, w))
    pose = pose or drawn_pose
    scene = np.random.default_rng(int(rng.integers(0, 2**31 - 1)))
    background = _background(scene, h, w, color)
    length = float(pose.length)
    dust = _dust(
        scene, h, w,
        (pose.center[0], pose.center[1], pose.angle_deg,
         0.5 * length + _margin(app, length), app.head_r * length + _margin(app, length)),
    )
    background *= (1.0 - dust)[..., None]
    light = _lighting(scene, h, w)
    sigma = scene.uniform(1.0, 2.5)
    noise = np.clip(
        scene.standard_normal((h, w, 3 if color else 1), dtype=np.float32), -_NOISE_BOUND, _NOISE_BOUND
    ) * np.float32(sigma)

    # Both renders share the grid, the grain and every random draw; only the defect differs.
    hx, hy = part_extent(app, length, pose.angle_deg)
    mg = _margin(app, length)
    gx0, gy0 = int(math.floor(pose.center[0] - hx - mg)), int(math.floor(pose.center[1] - hy - mg))
    gw = int(math.ceil(2 * (hx + mg))) + 2
    gh = int(math.ceil(2 * (hy + mg))) + 2
    grain = _grain(app, gh, gw)
    channels = 3 if color else 1

    # Only the part's grid (clipped to the image) differs between clean and defective renders.
    ax0, ay0 = max(gx0, 0), max(gy0, 0)
    ax1, ay1 = min(gx0 + gw, w), min(gy0 + gh, h)
    box = (slice(ay0, ay1), slice(ax0, ax1))
    light = light[..., None]

    def lit(params: _DefectParams | None) -> np.ndarray:
        alpha, premult, shadow = _layers(
            app, length, pose.angle_deg, pose.center[0], pose.center[1],
            (gx0, gy0, gw, gh), params, channels, grain,
        )
        sprite = PartSprite(alpha, premult, shadow, (0.0, 0.0), pose.angle_deg, length, None)
        region = background[box].copy()
        sprite.composite(region, gx0 - ax0, gy0 - ay0)
        region *= light[box]
        return np.clip(region, *_PRE_NOISE_RANGE, out=region)

    clean_lit = background * light
    np.clip(clean_lit, *_PRE_NOISE_RANGE, out=clean_lit)
    clean_lit[box] = lit(None)
    clean = np.rint(clean_lit + noise).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    image = clean
    if defect is not None:
        defect_box = lit(_draw_defect(defect, app, length))
        changed = (np.abs(defect_box - clean_lit[box]) >= MASK_LEVEL).any(axis=2)
        mask[box] = changed
        image = clean.copy()
        region = np.where(changed[..., None], defect_box, clean_lit[box]) + noise[box]
        image[box] = np.rint(region).astype(np.uint8)
    if not color:
        clean, image = clean[..., 0], image[..., 0]
    return RenderedPart(image, mask, pose, defect, clean, dust > 0.02)

