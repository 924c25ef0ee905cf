"""Synthetic products the crop and recipe tests write: parts on a plate, surfaces that fill
the image. Each image is drawn from a seeded generator, so a test sees the same folder every
run."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def part_image(rng: np.random.Generator, shape: tuple[int, int] = (240, 320), *,
               polarity: str = "dark_on_light", colour: bool = False,
               head: bool = True) -> np.ndarray:
    """One elongated part (shaft, pointed tip, a wider head when ``head``) at a random angle
    and place on a plate; BGR with a coloured part when ``colour``."""
    h, w = shape
    length = rng.uniform(0.45, 0.55) * min(h, w) * 1.2
    width = 0.16 * length
    head_w = 2.2 * width if head else width
    half = length / 2
    outline = [(-half, 0.0), (-half + 0.15 * length, -width / 2), (half - 0.15 * length, -width / 2),
               (half - 0.15 * length, -head_w / 2), (half, -head_w / 2), (half, head_w / 2),
               (half - 0.15 * length, head_w / 2), (half - 0.15 * length, width / 2),
               (-half + 0.15 * length, width / 2)]
    a = rng.uniform(-math.pi, math.pi)
    c, s = math.cos(a), math.sin(a)
    cx = rng.uniform(0.4, 0.6) * w
    cy = rng.uniform(0.4, 0.6) * h
    pts = np.array([(cx + u * c - v * s, cy + u * s + v * c) for u, v in outline])
    plate, part = (205.0, 60.0) if polarity == "dark_on_light" else (45.0, 200.0)
    img = np.full((h, w, 3), plate, np.float32)
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    fill = (40.0, 60.0, 190.0) if colour and polarity == "dark_on_light" else \
        (60.0, 220.0, 200.0) if colour else (part,) * 3
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], fill, cv2.LINE_AA, shift=4)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img if colour else img[:, :, 0].copy()


def block_image(rng: np.random.Generator, shape: tuple[int, int] = (240, 240), *,
                any_angle: bool = True, banded: bool = False, disc: bool = False
                ) -> np.ndarray:
    """One compact block (a third longer than wide, no wider end) on a plate, at any angle or
    fixtured within a few degrees; ``banded``: a band across its middle as light as the plate,
    so the block's two halves are found as two pieces (a polished stripe, a label);
    ``disc``: a round part instead, with no long side to level it by."""
    h, w = shape
    length = rng.uniform(0.36, 0.42) * min(h, w)
    width = length / 1.35
    a = rng.uniform(-math.pi, math.pi) if any_angle else math.radians(rng.uniform(-3, 3))
    c, s = math.cos(a), math.sin(a)
    cx, cy = rng.uniform(0.45, 0.55) * w, rng.uniform(0.45, 0.55) * h

    def box(u0: float, u1: float) -> np.ndarray:
        corners = [(u0, -width / 2), (u1, -width / 2), (u1, width / 2), (u0, width / 2)]
        return np.array([(cx + u * c - v * s, cy + u * s + v * c) for u, v in corners])

    img = np.full((h, w), 205.0, np.float32) + rng.normal(0, 3.0, (h, w)).astype(np.float32)
    if disc:
        cv2.circle(img, (round(cx * 16), round(cy * 16)), round(length * 8), 60.0, -1,
                   cv2.LINE_AA, shift=4)
        return np.clip(img, 0, 255).astype(np.uint8)
    halves = [(-length / 2, -0.09 * length), (0.09 * length, length / 2)] if banded else \
        [(-length / 2, length / 2)]
    for u0, u1 in halves:
        cv2.fillPoly(img, [np.round(box(u0, u1) * 16).astype(np.int32)], 60.0, cv2.LINE_AA, shift=4)
    return np.clip(img, 0, 255).astype(np.uint8)


def keyed_disc_image(rng: np.random.Generator, shape: tuple[int, int] = (240, 240),
                     angle_deg: float | None = None, light: float = 0.0) -> np.ndarray:
    """A round part with a key notch in its rim (at ``angle_deg``, image coordinates; random
    when None) and a bore off its centre, on a plate: a grain and a shading of its own that
    differ from part to part (a textured part: the pattern is small beside them), a little
    out of round along a random axis (so its outline's axis says nothing of the key) and,
    with ``light``, lighting that grows across the frame by that many grey levels."""
    h, w = shape
    a = math.radians(rng.uniform(0, 360) if angle_deg is None else angle_deg)
    r = rng.uniform(0.3, 0.33) * min(h, w)
    cx, cy = rng.uniform(0.47, 0.53) * w, rng.uniform(0.47, 0.53) * h
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    part = np.zeros((h, w), np.uint8)
    cv2.ellipse(part, (round(cx * 16), round(cy * 16)), (round(r * 16), round(0.94 * r * 16)),
                rng.uniform(0, 180), 0, 360, 1, -1, cv2.LINE_AA, shift=4)
    u, v = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a), \
        -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
    part[(u > 0.8 * r) & (np.abs(v) < 0.12 * r)] = 0  # the key notch
    b = a + math.radians(100)  # the bore, a quarter turn and more from the key
    bore = np.hypot(xx - cx - 0.5 * r * math.cos(b), yy - cy - 0.5 * r * math.sin(b)) < 0.15 * r
    g = math.radians(rng.uniform(0, 360))  # the part's own shading and grain
    body = (75 + 25 * ((xx - cx) * math.cos(g) + (yy - cy) * math.sin(g)) / r
            + cv2.GaussianBlur(rng.normal(0, 18, (h, w)).astype(np.float32), (0, 0), 2.0))
    body[bore] = 25
    img = np.where(part > 0, body, 205.0) + rng.normal(0, 3.0, (h, w)) + light * xx / w
    return np.clip(img, 0, 255).astype(np.uint8)


def tagged_bar_image(rng: np.random.Generator, shape: tuple[int, int] = (240, 320),
                     angle_deg: float | None = None) -> np.ndarray:
    """A bar 2.5x as long as wide with no wider end, and a light dot near one end (at
    ``angle_deg`` from the centre, image coordinates; random when None), on a plate."""
    h, w = shape
    a = math.radians(rng.uniform(0, 360) if angle_deg is None else angle_deg)
    length = rng.uniform(0.5, 0.55) * min(h, w)
    c, s = math.cos(a), math.sin(a)
    cx, cy = rng.uniform(0.47, 0.53) * w, rng.uniform(0.47, 0.53) * h
    half = np.array([(-length / 2, -length / 5), (length / 2, -length / 5),
                     (length / 2, length / 5), (-length / 2, length / 5)])
    corners = [(cx + p * c - q * s, cy + p * s + q * c) for p, q in half]
    img = np.full((h, w), 205.0, np.float32) + rng.normal(0, 3.0, (h, w)).astype(np.float32)
    cv2.fillPoly(img, [np.round(np.array(corners) * 16).astype(np.int32)], 60.0, cv2.LINE_AA,
                 shift=4)
    dot = (round((cx + 0.3 * length * c) * 16), round((cy + 0.3 * length * s) * 16))
    cv2.circle(img, dot, round(0.08 * length * 16), 150.0, -1, cv2.LINE_AA, shift=4)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_blocks(folder: Path, n: int, seed: int = 0, **kwargs) -> Path:
    """``n`` block images (see :func:`block_image`) as ``folder/good/NNN.png``."""
    return write_images(folder, n, lambda rng: block_image(rng, **kwargs), seed)


def surface_image(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A ground surface filling the whole image: vertical streaks, grain and a lighting
    falloff toward the sides (a magnetic tile's face, roughly)."""
    h, w = shape
    streaks = cv2.resize(rng.normal(0, 14, (1, max(2, w // 3))).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    grain = cv2.GaussianBlur(rng.normal(0, 10, (h, w)).astype(np.float32), (0, 0), 1.2)
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    img = 120 + streaks + grain - 30 * x**2
    return np.clip(img, 0, 255).astype(np.uint8)


def write_parts(folder: Path, n: int, seed: int = 0, **kwargs) -> Path:
    """``n`` part images (see :func:`part_image`) as ``folder/good/NNN.png``."""
    return write_images(folder, n, lambda rng: part_image(rng, **kwargs), seed)


def write_images(folder: Path, n: int, draw: Callable[[np.random.Generator], np.ndarray],
                 seed: int = 0) -> Path:
    """``n`` images ``draw(rng)`` as ``folder/good/NNN.png``."""
    rng = np.random.default_rng(seed)
    good = folder / "good"
    good.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(good / f"{i:03d}.png"), draw(rng))
    return folder


def surface_shapes(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """(height, width) of ``n`` surfaces of every size, taller than wide on the whole."""
    return [(int(rng.integers(90, 160)), int(rng.integers(60, 130))) for _ in range(n)]


def write_surfaces(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` surfaces of varying sizes as ``folder/good/NNN.png``."""
    rng = np.random.default_rng(seed)
    good = folder / "good"
    good.mkdir(parents=True, exist_ok=True)
    for i, shape in enumerate(surface_shapes(rng, n)):
        cv2.imwrite(str(good / f"{i:03d}.png"), surface_image(rng, shape))
    return folder
