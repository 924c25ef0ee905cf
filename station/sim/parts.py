"""The simulated part itself: its pose, shape and shading, and the unlit sprite it renders to.

Conventions (the same as ``station.vision.localize``): x to the right, y down, pixel centres at
integer coordinates. ``PartPose.angle_deg`` is the direction from the tip to the head, in
degrees, in those image coordinates; ``PartPose.center`` is the midpoint between tip and head top.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

BELT_LEVEL = 0.75
"""Typical unlit background brightness (0-1): light grey, as in the MVTec screw photos."""


@dataclass(frozen=True)
class PartPose:
    """Where a part lies: centre (x, y) in pixels, tip-to-head direction, length in pixels."""

    center: tuple[float, float]
    angle_deg: float
    length: float


@dataclass(frozen=True)
class RenderedPart:
    """One rendered part image with its ground truth.

    ``clean`` is the same image without the defect (same part, lighting and noise), so
    ``mask == (image != clean)`` (any channel); ``dust_mask`` marks the background dust specks.
    """

    image: np.ndarray  # uint8 HxW (grey) or HxWx3 (BGR)
    mask: np.ndarray  # bool HxW, True where the defect changed the image
    pose: PartPose
    defect: str | None
    clean: np.ndarray
    dust_mask: np.ndarray  # bool HxW


@dataclass(frozen=True)
class Appearance:
    """The shape and shading of one part, as fractions of its length (drawn once per part)."""

    head_r: float
    neck_r: float
    core_r: float
    crest_r: float
    thread_end: float
    head_start: float
    tip_len: float
    pitch: float
    phase0: float
    tan_slant: float
    base: float
    highlight: float
    band_amp: float
    tint: tuple[float, float, float]  # BGR multiplier of the part's grey level
    shadow_strength: float
    grain_seed: int
    defect_seed: int


@dataclass(frozen=True)
class PartSprite:
    """A part rendered on its own small grid, unlit, ready to paste onto any background.

    ``premult`` is the part's intensity premultiplied by ``alpha`` (HxWxC, 0-1 scale). Compose
    with ``composite``. ``center`` is the part centre in sprite pixel coordinates.
    """

    alpha: np.ndarray  # float32 HxW coverage
    premult: np.ndarray  # float32 HxWxC
    shadow: np.ndarray  # float32 HxW, darkening factor 0..1 of the background
    center: tuple[float, float]
    angle_deg: float
    length: float
    defect: str | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape[0], self.alpha.shape[1]

    def composite(self, canvas: np.ndarray, x: int, y: int) -> None:
        """Blend the sprite into ``canvas`` (float32 HxWxC, unlit) with its top-left at (x, y).

        Parts of the sprite outside the canvas are clipped; integer placement keeps the part's
        appearance identical wherever it is pasted.
        """
        h, w = self.shape
        ch, cw = canvas.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, cw), min(y + h, ch)
        if x0 >= x1 or y0 >= y1:
            return
        sx, sy = x0 - x, y0 - y
        region = canvas[y0:y1, x0:x1]
        region *= self._keep[sy : sy + y1 - y0, sx : sx + x1 - x0]
        region += self.premult[sy : sy + y1 - y0, sx : sx + x1 - x0]

    @functools.cached_property
    def _keep(self) -> np.ndarray:
        """Share of the background left under the part and its shadow (HxWxC)."""
        keep = (1.0 - self.shadow) * (1.0 - self.alpha)
        return np.repeat(keep[..., None], self.premult.shape[2], axis=2)

    def cropped(self) -> PartSprite:
        """The same sprite cut to the pixels the part or its shadow touch (faster to paste)."""
        touched = (self.alpha > 1e-4) | (self.shadow > 1e-4)
        rows, cols = np.flatnonzero(touched.any(axis=1)), np.flatnonzero(touched.any(axis=0))
        if rows.size == 0:
            return self
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return PartSprite(
            np.ascontiguousarray(self.alpha[y0:y1, x0:x1]),
            np.ascontiguousarray(self.premult[y0:y1, x0:x1]),
            np.ascontiguousarray(self.shadow[y0:y1, x0:x1]),
            (self.center[0] - x0, self.center[1] - y0),
            self.angle_deg, self.length, self.defect,
        )

    @functools.cached_property
    def box(self) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1), exclusive end, where the part covers over 5 %."""
        return self.bounds()

    def bounds(self, threshold: float = 0.05) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1), exclusive end, of the part's coverage in the sprite."""
        rows = np.flatnonzero((self.alpha > threshold).any(axis=1))
        cols = np.flatnonzero((self.alpha > threshold).any(axis=0))
        if rows.size == 0:
            return 0, 0, 0, 0
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --------------------------------------------------------------------------- appearance


def draw_appearance(rng: np.random.Generator, color: bool = False) -> Appearance:
    """Draw one part's shape and shading; head at least 1.86x as wide as the threaded shank."""
    crest_r = float(rng.uniform(0.056, 0.062))
    if color:
        warm = rng.uniform(0.0, 0.06)
        tint = (float(1.0 - warm), 1.0, float(1.0 + 0.6 * warm))
    else:
        tint = (1.0, 1.0, 1.0)
    return Appearance(
        head_r=float(rng.uniform(0.118, 0.128)),
        neck_r=float(rng.uniform(0.040, 0.046)),
        core_r=float(rng.uniform(0.033, 0.038)),
        crest_r=crest_r,
        thread_end=float(rng.uniform(0.54, 0.60)),
        head_start=float(rng.uniform(0.79, 0.83)),
        tip_len=float(rng.uniform(0.09, 0.12)),
        pitch=float(rng.uniform(0.050, 0.060)),
        phase0=float(rng.uniform(0.0, 1.0)),
        tan_slant=float(math.tan(math.radians(rng.uniform(6.0, 12.0)))),
        base=float(rng.uniform(0.28, 0.38)),
        highlight=float(rng.uniform(0.20, 0.30)),
        band_amp=float(rng.uniform(0.10, 0.16)),
        tint=tint,
        shadow_strength=float(rng.uniform(0.15, 0.24)),
        grain_seed=int(rng.integers(0, 2**31 - 1)),
        defect_seed=int(rng.integers(0, 2**31 - 1)),
    )


_TABLE_N = 2201  # samples over u in [-0.05, 1.05]: 0.0005 of the length apart


@functools.lru_cache(maxsize=256)
def _profile(app: Appearance) -> np.ndarray:
    """Radius tables (core, crest, body, thread weight) over u in [-0.05, 1.05] (4 x N).

    Radii are fractions of the length; ``_lookup`` reads them per pixel.
    """
    un = np.linspace(-0.05, 1.05, _TABLE_N, dtype=np.float64)
    taper = np.clip(un / app.tip_len, 0.0, 1.0) ** 0.85
    core = np.where(un < app.tip_len, app.core_r * taper, app.core_r)
    crest = np.where(un < app.tip_len, app.crest_r * taper, app.crest_r)
    runout = np.clip((app.thread_end - un) / 0.03, 0.0, 1.0)
    crest = core + (crest - core) * runout
    t_neck = np.clip((un - app.thread_end) / 0.02, 0.0, 1.0)
    core = np.where(un > app.thread_end, app.core_r + (app.neck_r - app.core_r) * t_neck, core)
    t_head = np.clip((un - app.head_start) / (0.965 - app.head_start), 0.0, 1.0) ** 1.25
    core = np.where(un > app.head_start, app.neck_r + (app.head_r - app.neck_r) * t_head, core)
    core = np.where((un < 0.0) | (un > 1.0), 0.0, core)
    crest = np.maximum(np.where((un < 0.0) | (un > 1.0), 0.0, crest), core)
    body = core + 0.5 * (crest - core)
    thread_w = np.clip((crest - core) / max(app.crest_r - app.core_r, 1e-6), 0.0, 1.0)
    return np.stack([core, crest, body, thread_w]).astype(np.float32)


def _lookup(table: np.ndarray, un: np.ndarray) -> np.ndarray:
    """Nearest table sample for every pixel's normalized position along the axis."""
    idx = (un + np.float32(0.05)) * np.float32((_TABLE_N - 1) / 1.1) + np.float32(0.5)
    idx = np.clip(idx, 0, _TABLE_N - 1).astype(np.intp)
    return table[:, idx]


def _radius_at(app: Appearance, row: int, un: float) -> float:
    """One table value (0 core, 1 crest, 2 body) at a normalized position, as a fraction."""
    return float(_lookup(_profile(app), np.array([un], dtype=np.float32))[row, 0])


def part_extent(app: Appearance, length: float, angle_deg: float) -> tuple[float, float]:
    """Half-extents (x, y) in pixels of the part's axis-aligned box at this angle."""
    ca, sa = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    r = app.head_r * length
    return 0.5 * length * ca + r * sa, 0.5 * length * sa + r * ca


def _margin(app: Appearance, length: float) -> float:
    """Room around the part for its shadow and for defects that reach past the silhouette."""
    return 0.10 * length + 4.0

