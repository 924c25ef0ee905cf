"""One part drawn on a pixel grid: coverage, premultiplied shading and its shadow, unlit.

Only a band of pixels around the part's axis can hold the part or a defect, so the part is
shaded on those pixels alone and scattered back onto the grid at the end. Every step keeps the
float32 arithmetic (and its order) the renderer has always used: the images are seeded test data
and must stay bit-identical.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from station.sim.defects import (
    _DefectParams,
    _draw_defect,
    bend,
    break_tip,
    chip,
    contaminate,
    scratch,
    thread_damage,
)
from station.sim.parts import (
    Appearance,
    PartSprite,
    _lookup,
    _margin,
    _profile,
    draw_appearance,
    part_extent,
)

_SHADOW_DIR = (0.55, 0.83)  # the rig's light falls from the top left: shadows go down-right
_LIGHT_ANGLE = math.radians(-135.0)  # direction the light comes from, for the highlight side

Grid = tuple[int, int, int, int]  # x0, y0, w, h of the grid in image pixels


def _axis_band(
    app: Appearance, length: float, angle_deg: float, center: tuple[float, float], grid: Grid,
    defect: _DefectParams | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the grid pixels near the axis, and their (u, v) in part pixels."""
    x0, y0, w, h = grid
    th = math.radians(angle_deg)
    ca, sa = math.cos(th), math.sin(th)
    xs = (np.arange(x0, x0 + w, dtype=np.float32) - np.float32(center[0]))[None, :]
    ys = (np.arange(y0, y0 + h, dtype=np.float32) - np.float32(center[1]))[:, None]
    u = xs * ca + ys * sa + np.float32(0.5 * length)  # px from the tip along the axis
    v = ys * ca - xs * sa  # px across the axis
    if defect is not None and defect.kind == "bent_tip":
        v = bend(v, u, defect.values, length)
    reach = np.float32((app.head_r + 0.07) * length + 3.0)
    sel = np.flatnonzero(
        ((u > -reach) & (u < np.float32(length) + reach) & (np.abs(v) < reach)).ravel()
    )
    return sel, u.ravel()[sel], v.ravel()[sel]


def _silhouette(
    app: Appearance, length: float, u: np.ndarray, v: np.ndarray, defect: _DefectParams | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Coverage of the threaded body, and what the shading needs of the thread.

    Returns ``alpha, r_body, tw, phase, ridge, dmg`` (``dmg`` None unless the thread is damaged).
    """
    un = u * np.float32(1.0 / length)
    r_core, r_crest, r_body, tw = _lookup(_profile(app), un)
    r_core, r_crest, r_body = r_core * length, r_crest * length, r_body * length
    phase = (u + v * np.float32(app.tan_slant)) * np.float32(1.0 / (app.pitch * length))
    phase += np.float32(app.phase0)
    frac = phase - np.floor(phase)
    ridge = (1.0 - np.abs(2.0 * frac - 1.0)) ** 2
    dmg = None
    if defect is not None and defect.kind == "damaged_thread":
        dmg = thread_damage(un, defect.values, length)
        ridge = ridge * (1.0 - dmg)
    radius = r_core + (r_crest - r_core) * ridge
    av = np.abs(v)
    alpha = np.clip(radius - av + 0.5, 0.0, 1.0) * np.clip(u + 0.5, 0.0, 1.0)
    alpha *= np.clip(np.float32(length) - u + 0.5, 0.0, 1.0)
    return alpha, r_body, tw, phase, ridge, dmg


def _shading(
    app: Appearance, length: float, angle_deg: float, un: np.ndarray, v: np.ndarray,
    thread: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None],
    grain: np.ndarray,
) -> np.ndarray:
    """A metal cylinder with a highlight band, thread bands and a brighter conical head."""
    r_body, tw, phase, ridge, dmg = thread
    s = np.clip(v / np.maximum(r_body, 1.0), -1.3, 1.3)
    s0 = 0.38 * math.sin(math.radians(angle_deg) - _LIGHT_ANGLE)
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
    return shade


def _scatter(sel: np.ndarray, h: int, w: int, alpha: np.ndarray,
             premult: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The band's coverage and premultiplied shading put back onto the whole grid."""
    full_alpha = np.zeros(h * w, np.float32)
    full_alpha[sel] = alpha
    full_premult = np.zeros((h * w, premult.shape[-1]), np.float32)
    full_premult[sel] = premult
    return full_alpha.reshape(h, w), full_premult.reshape(h, w, -1)


def _shadow(app: Appearance, length: float, alpha: np.ndarray) -> np.ndarray:
    """Soft shadow cast down-right by the (possibly defective) silhouette."""
    h, w = alpha.shape
    off = 0.014 * length
    sx, sy = int(round(_SHADOW_DIR[0] * off)), int(round(_SHADOW_DIR[1] * off))
    sigma = max(0.012 * length, 0.8)
    blurred = cv2.GaussianBlur(alpha, (0, 0), sigma) * np.float32(app.shadow_strength)
    shadow = np.zeros_like(blurred)
    shadow[sy:, sx:] = blurred[: h - sy, : w - sx]
    return shadow


def _layers(
    app: Appearance,
    length: float,
    angle_deg: float,
    cx: float,
    cy: float,
    grid: Grid,
    defect: _DefectParams | None,
    channels: int,
    grain: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage, premultiplied intensity and shadow of one part on the grid (x0, y0, w, h)."""
    _, _, w, h = grid
    kind = defect.kind if defect else None
    p = defect.values if defect else {}
    sel, u, v = _axis_band(app, length, angle_deg, (cx, cy), grid, defect)
    un = u * np.float32(1.0 / length)
    alpha, r_body, tw, phase, ridge, dmg = _silhouette(app, length, u, v, defect)
    shade = _shading(app, length, angle_deg, un, v, (r_body, tw, phase, ridge, dmg),
                     grain.ravel()[sel])
    if kind == "scratch":
        scratch(shade, un, v, r_body, p, length)
    if kind == "chipped_edge":
        chip(alpha, shade, u, v, app, p, length)
    if kind == "broken_tip":
        break_tip(alpha, shade, u, v, p, length)
    shade = np.clip(shade, 0.03, 0.92)
    tint = np.asarray(app.tint[:channels] if channels == 3 else (1.0,), dtype=np.float32)
    premult = (shade * alpha)[..., None] * tint
    if kind == "contamination":
        alpha, premult = contaminate(alpha, premult, u, v, app, p, length, channels)
    alpha, premult = _scatter(sel, h, w, alpha, premult)
    return alpha, premult, _shadow(app, length, alpha)


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
