"""Seeded renderer of screw-like parts with defects and exact defect masks.

Why it exists: tests, the demo and the simulated conveyor need parts that look like the MVTec
AD "screw" photos (a dark metallic countersunk screw lying at any angle on a light grey
background), with defects whose masks are *exactly* the pixels the defect changed, without any
data shipped in the repository. numpy + OpenCV only, so it lives in ``station/``.

Conventions (the same as ``station.vision.localize``): x to the right, y down, pixel centres at integer
coordinates. ``PartPose.angle_deg`` is the direction from the tip to the head, in degrees, in
those image coordinates; ``PartPose.center`` is the midpoint between tip and head top.

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

import functools
import math
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.config import SIMULATED_DEFECTS as DEFECT_TYPES  # the recipe names them

MASK_LEVEL = 2.0
"""Grey levels (0-255 scale) a noise-free pixel must change by to count as defective."""

BELT_LEVEL = 0.75
"""Typical unlit background brightness (0-1): light grey, as in the MVTec screw photos."""

_SHADOW_DIR = (0.55, 0.83)  # the rig's light falls from the top left: shadows go down-right
_LIGHT_ANGLE = math.radians(-135.0)  # direction the light comes from, for the highlight side
_PRE_NOISE_RANGE = (10.0, 245.0)  # lit values are kept here so noise never clips at 0 or 255
_NOISE_BOUND = 3.0  # noise is clipped at this many sigmas (sigma <= 2.5 -> |noise| < 8)


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
    return float(_lookup(_profile(app), np.float32([un]))[row, 0])


def part_extent(app: Appearance, length: float, angle_deg: float) -> tuple[float, float]:
    """Half-extents (x, y) in pixels of the part's axis-aligned box at this angle."""
    ca, sa = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    r = app.head_r * length
    return 0.5 * length * ca + r * sa, 0.5 * length * sa + r * ca


def _margin(app: Appearance, length: float) -> float:
    """Room around the part for its shadow and for defects that reach past the silhouette."""
    return 0.10 * length + 4.0


# --------------------------------------------------------------------------- defects


@dataclass(frozen=True)
class _DefectParams:
    kind: str
    values: dict[str, float]


def _draw_defect(kind: str, app: Appearance, length: float) -> _DefectParams:
    """Defect parameters from the part's own defect seed (so clean and defect share all else)."""
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    rng = np.random.default_rng(app.defect_seed)
    px = 1.0 / length  # one pixel, as a fraction of the length
    if kind == "scratch":
        u = rng.uniform(0.25, 0.93)
        v = rng.uniform(-0.35, 0.35)
        ang = math.radians(rng.uniform(-55.0, 55.0)) + (math.pi if rng.random() < 0.5 else 0.0)
        vals = {
            "u": u, "v": v, "dir": ang,
            "len": rng.uniform(0.12, 0.22),
            "width": max(rng.uniform(1.6, 2.6) * px, 0.008),
            "delta": rng.uniform(0.30, 0.42) if rng.random() < 0.7 else -rng.uniform(0.18, 0.24),
        }
    elif kind == "chipped_edge":
        on_head = rng.random() < 0.5
        u = rng.uniform(0.86, 0.985) if on_head else rng.uniform(0.62, 0.76)
        vals = {
            "u": u, "side": 1.0 if rng.random() < 0.5 else -1.0,
            "r": rng.uniform(0.035, 0.05), "aspect": rng.uniform(0.7, 1.3),
            "rot": rng.uniform(0.0, math.pi),
        }
    elif kind == "contamination":
        vals = {
            "u": rng.uniform(0.15, 0.9), "v": rng.uniform(-0.5, 0.5),
            "r": rng.uniform(0.028, 0.045),
            "p1": rng.uniform(0, 2 * math.pi), "p2": rng.uniform(0, 2 * math.pi),
            "a1": rng.uniform(0.1, 0.25), "a2": rng.uniform(0.05, 0.15),
            "dark": 1.0 if rng.random() < 0.7 else 0.0,
            "level": rng.uniform(0.06, 0.14), "opacity": rng.uniform(0.85, 1.0),
        }
    elif kind == "damaged_thread":
        width = rng.uniform(2.5, 4.0) * app.pitch
        vals = {
            "u0": rng.uniform(app.tip_len + 0.03, app.thread_end - 0.04 - width),
            "width": width, "depth": rng.uniform(0.8, 0.95),
        }
    elif kind == "bent_tip":
        vals = {
            "ub": rng.uniform(0.22, 0.32),
            "defl": rng.uniform(0.045, 0.07) * (1.0 if rng.random() < 0.5 else -1.0),
        }
    else:  # broken_tip
        vals = {
            "ucut": rng.uniform(0.07, 0.12),
            "jag": rng.uniform(0.006, 0.015), "freq": rng.uniform(0.8, 1.6),
            "ph": rng.uniform(0, 2 * math.pi),
        }
    return _DefectParams(kind, {k: float(v) for k, v in vals.items()})


def _smooth_box(x: np.ndarray, a: float, b: float, soft: float) -> np.ndarray:
    """1 inside [a, b], 0 outside, with linear edges ``soft`` wide."""
    return np.clip(np.minimum(x - a, b - x) / soft + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------- the part layers


def _layers(
    app: Appearance,
    length: float,
    angle_deg: float,
    cx: float,
    cy: float,
    grid: tuple[int, int, int, int],
    defect: _DefectParams | None,
    channels: int,
    grain: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage, premultiplied intensity and shadow of one part on the grid (x0, y0, w, h)."""
    x0, y0, w, h = grid
    th = math.radians(angle_deg)
    ca, sa = math.cos(th), math.sin(th)
    xs = (np.arange(x0, x0 + w, dtype=np.float32) - np.float32(cx))[None, :]
    ys = (np.arange(y0, y0 + h, dtype=np.float32) - np.float32(cy))[:, None]
    u = xs * ca + ys * sa + np.float32(0.5 * length)  # px from the tip along the axis
    v = ys * ca - xs * sa  # px across the axis
    kind = defect.kind if defect else None
    p = defect.values if defect else {}
    if kind == "bent_tip":
        ub = p["ub"] * length
        v = v - np.float32(p["defl"] * length) * np.clip((ub - u) / ub, 0.0, 1.0) ** 2
    # Only a band around the axis can hold the part or a defect: shade those pixels alone.
    reach = np.float32((app.head_r + 0.07) * length + 3.0)
    sel = np.flatnonzero(
        ((u > -reach) & (u < np.float32(length) + reach) & (np.abs(v) < reach)).ravel()
    )
    u, v = u.ravel()[sel], v.ravel()[sel]
    grain = grain.ravel()[sel]
    un = u * np.float32(1.0 / length)
    r_core, r_crest, r_body, tw = _lookup(_profile(app), un)
    r_core, r_crest, r_body = r_core * length, r_crest * length, r_body * length

    phase = (u + v * np.float32(app.tan_slant)) * np.float32(1.0 / (app.pitch * length))
    phase += np.float32(app.phase0)
    frac = phase - np.floor(phase)
    ridge = (1.0 - np.abs(2.0 * frac - 1.0)) ** 2
    dmg = None
    if kind == "damaged_thread":
        dmg = _smooth_box(un, p["u0"], p["u0"] + p["width"], 1.5 / length) * np.float32(p["depth"])
        ridge = ridge * (1.0 - dmg)
    radius = r_core + (r_crest - r_core) * ridge
    av = np.abs(v)
    alpha = np.clip(radius - av + 0.5, 0.0, 1.0) * np.clip(u + 0.5, 0.0, 1.0)
    alpha *= np.clip(np.float32(length) - u + 0.5, 0.0, 1.0)

    # Shading: a metal cylinder with a highlight band, thread bands, a brighter conical head.
    s = np.clip(v / np.maximum(r_body, 1.0), -1.3, 1.3)
    s0 = 0.38 * math.sin(th - _LIGHT_ANGLE)
    shade = app.base + app.highlight * np.exp(-(((s - s0) / 0.3) ** 2)) - 0.12 * s * s
    bands = np.sin(np.float32(2 * math.pi) * phase) * np.float32(app.band_amp) * tw
    bands += 0.10 * tw * (ridge - 0.35)
    if dmg is not None:
        bands *= 1.0 - dmg
        shade += 0.10 * dmg * np.clip(1.0 - s * s, 0.0, 1.0)
    shade += bands
    head = np.clip((un - app.head_start) / 0.04, 0.0, 1.0)
    shade += 0.06 * head + 0.14 * np.clip((un - 0.965) * length / 2.0, 0.0, 1.0)
    recess = ((un - 0.905) / 0.035) ** 2 + (v / (0.045 * length)) ** 2
    shade -= 0.16 * np.clip((1.0 - recess) * 3.0, 0.0, 1.0)
    shade += grain
    if kind == "scratch":
        d = math.cos(p["dir"]), math.sin(p["dir"])
        du = un - np.float32(p["u"])
        dv = v * np.float32(1.0 / length) - np.float32(p["v"]) * r_body / length
        t = np.clip(du * d[0] + dv * d[1], -0.5 * p["len"], 0.5 * p["len"])
        dist = np.sqrt((du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2) * length
        line = np.clip(0.5 * p["width"] * length - dist + 0.5, 0.0, 1.0)
        shade += np.float32(p["delta"]) * line
    if kind == "chipped_edge":
        uc = p["u"] * length
        rc = _radius_at(app, 0, p["u"]) * length
        r = p["r"] * length
        vc = p["side"] * (rc + 0.25 * r)
        cr, sr = math.cos(p["rot"]), math.sin(p["rot"])
        du, dv = u - np.float32(uc), v - np.float32(vc)
        e = np.sqrt(((du * cr + dv * sr) * p["aspect"]) ** 2 + ((dv * cr - du * sr) / p["aspect"]) ** 2)
        bite = np.clip(r - e + 0.5, 0.0, 1.0)
        rim = np.clip(r + 2.5 - e, 0.0, 1.0) - bite
        alpha *= 1.0 - bite
        shade -= 0.22 * rim
    if kind == "broken_tip":
        ucut = (p["ucut"] + p["jag"] * np.sin(v * np.float32(p["freq"] * 2 * math.pi / (0.06 * length)) + p["ph"])) * length
        alpha *= np.clip(u - ucut + 0.5, 0.0, 1.0)
        shade += 0.25 * np.clip(ucut + 2.5 - u, 0.0, 1.0)
    shade = np.clip(shade, 0.03, 0.92)
    tint = np.asarray(app.tint[:channels] if channels == 3 else (1.0,), dtype=np.float32)
    premult = (shade * alpha)[..., None] * tint

    if kind == "contamination":
        uc, vc = p["u"] * length, p["v"] * _radius_at(app, 2, p["u"]) * length
        du, dv = u - np.float32(uc), v - np.float32(vc)
        ang = np.arctan2(dv, du)
        rr = p["r"] * length * (1.0 + p["a1"] * np.sin(3 * ang + p["p1"]) + p["a2"] * np.sin(5 * ang + p["p2"]))
        blob = np.clip(rr - np.sqrt(du * du + dv * dv) + 0.5, 0.0, 1.0) * np.float32(p["opacity"])
        if p["dark"] > 0.5:
            col = (0.45 * p["level"], 0.85 * p["level"], 1.6 * p["level"]) if channels == 3 else (p["level"],)
        else:
            col = (0.80, 0.86, 0.88) if channels == 3 else (0.86,)
        premult = premult * (1.0 - blob)[..., None] + blob[..., None] * np.asarray(col, np.float32)
        alpha = alpha * (1.0 - blob) + blob

    alpha_band, premult_band = alpha, premult
    alpha = np.zeros(h * w, np.float32)
    alpha[sel] = alpha_band
    alpha = alpha.reshape(h, w)
    premult = np.zeros((h * w, premult_band.shape[-1]), np.float32)
    premult[sel] = premult_band
    premult = premult.reshape(h, w, -1)

    # Soft shadow cast down-right by the (possibly defective) silhouette.
    off = 0.014 * length
    sx, sy = int(round(_SHADOW_DIR[0] * off)), int(round(_SHADOW_DIR[1] * off))
    sigma = max(0.012 * length, 0.8)
    blurred = cv2.GaussianBlur(alpha, (0, 0), sigma) * np.float32(app.shadow_strength)
    shadow = np.zeros_like(blurred)
    shadow[sy:, sx:] = blurred[: h - sy, : w - sx]
    return alpha, premult, shadow


def _grain(app: Appearance, h: int, w: int) -> np.ndarray:
    """Fine metal grain, fixed per part so clean and defective renders share it."""
    g = np.random.default_rng(app.grain_seed).standard_normal((h, w), dtype=np.float32)
    return cv2.GaussianBlur(g, (0, 0), 0.8) * np.float32(0.035)


def _sprite_grid(app: Appearance, length: float, angle_deg: float) -> tuple[int, int, float, float]:
    """Sprite size (w, h) and the part centre inside it."""
    hx, hy = part_extent(app, length, angle_deg)
    m = _margin(app, length)
    w, h = int(math.ceil(2 * (hx + m))) + 1, int(math.ceil(2 * (hy + m))) + 1
    return w, h, float(w // 2), float(h // 2)


def render_sprite(
    rng: np.random.Generator,
    length: float,
    angle_deg: float,
    defect: str | None = None,
    color: bool = False,
    appearance: Appearance | None = None,
) -> PartSprite:
    """Render one part, unlit, on its own grid (the conveyor pastes these onto the belt)."""
    app = appearance or draw_appearance(rng, color)
    w, h, cx, cy = _sprite_grid(app, length, angle_deg)
    params = _draw_defect(defect, app, length) if defect else None
    channels = 3 if color else 1
    alpha, premult, shadow = _layers(
        app, length, angle_deg, cx, cy, (0, 0, w, h), params, channels, _grain(app, h, w)
    )
    sprite = PartSprite(alpha, premult, shadow, (cx, cy), float(angle_deg), float(length), defect)
    return sprite.cropped()


# --------------------------------------------------------------------------- whole images


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


# --------------------------------------------------------------------------- data sets


def _item_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per file, from the seed and the file's relative path (stable across runs)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def write_mvtec_dataset(
    root: str | Path,
    n_train_good: int = 60,
    n_test_good: int = 20,
    n_test_per_defect: int = 10,
    size: int = 256,
    seed: int = 0,
    color: bool = False,
    defects: tuple[str, ...] | list[str] = DEFECT_TYPES,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic data set in the MVTec AD layout and return its root.

    ``train/good/000.png``, ``test/good/``, ``test/<defect>/NNN.png`` and
    ``ground_truth/<defect>/NNN_mask.png`` (255 = defect). The same arguments give
    byte-identical files. An existing data set at ``root`` is replaced only with
    ``overwrite=True`` (its ``train``, ``test`` and ``ground_truth`` folders are removed).
    """
    root = Path(root)
    for name, n in (("n_train_good", n_train_good), ("n_test_good", n_test_good),
                    ("n_test_per_defect", n_test_per_defect)):
        if int(n) < 0:
            raise ValueError(f"write_mvtec_dataset: {name} must be >= 0, got {n}")
    bad = [d for d in defects if d not in DEFECT_TYPES]
    if bad:
        raise ValueError(
            f"write_mvtec_dataset: unknown defect(s) {bad}; expected some of {list(DEFECT_TYPES)}"
        )
    existing = [root / d for d in ("train", "test", "ground_truth") if (root / d).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"write_mvtec_dataset: {existing[0]} already exists; "
                "pass overwrite=True to replace the data set"
            )
        for d in existing:
            shutil.rmtree(d)
    shape = (int(size), int(size))

    def write(rel: str, defect: str | None) -> None:
        part = render_part(_item_rng(seed, rel), shape, defect, color)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), part.image):
            raise OSError(f"write_mvtec_dataset: could not write {path}")
        if defect is not None:
            stem = Path(rel).stem
            mpath = root / "ground_truth" / defect / f"{stem}_mask.png"
            mpath.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(mpath), part.mask.astype(np.uint8) * 255):
                raise OSError(f"write_mvtec_dataset: could not write {mpath}")

    for i in range(int(n_train_good)):
        write(f"train/good/{i:03d}.png", None)
    for i in range(int(n_test_good)):
        write(f"test/good/{i:03d}.png", None)
    for d in defects:
        for i in range(int(n_test_per_defect)):
            write(f"test/{d}/{i:03d}.png", d)
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    return root
