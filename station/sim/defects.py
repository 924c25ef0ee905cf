"""The six simulated defects: their parameters, drawn from the part's own seed, and their marks.

Each mark works on the band of pixels near the part's axis (``u`` along the axis from the tip,
``v`` across it, in pixels; ``un`` = ``u`` as a fraction of the length), in the same order the
renderer has always applied them, so the rendered images stay bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from station.config import SIMULATED_DEFECTS as DEFECT_TYPES  # the recipe names them
from station.sim.parts import Appearance, _radius_at


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


def bend(v: np.ndarray, u: np.ndarray, p: dict[str, float], length: float) -> np.ndarray:
    """bent_tip: the axis near the tip is pushed sideways (quadratic towards the tip)."""
    ub = p["ub"] * length
    return v - np.float32(p["defl"] * length) * np.clip((ub - u) / ub, 0.0, 1.0) ** 2


def thread_damage(un: np.ndarray, p: dict[str, float], length: float) -> np.ndarray:
    """damaged_thread: how much of the thread ridge is worn away (0..depth) along the axis."""
    return _smooth_box(un, p["u0"], p["u0"] + p["width"], 1.5 / length) * np.float32(p["depth"])


def scratch(shade: np.ndarray, un: np.ndarray, v: np.ndarray, r_body: np.ndarray,
            p: dict[str, float], length: float) -> None:
    """A straight bright (or dark) line across the surface, added to ``shade`` in place."""
    d = math.cos(p["dir"]), math.sin(p["dir"])
    du = un - np.float32(p["u"])
    dv = v * np.float32(1.0 / length) - np.float32(p["v"]) * r_body / length
    t = np.clip(du * d[0] + dv * d[1], -0.5 * p["len"], 0.5 * p["len"])
    dist = np.sqrt((du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2) * length
    line = np.clip(0.5 * p["width"] * length - dist + 0.5, 0.0, 1.0)
    shade += np.float32(p["delta"]) * line


def chip(alpha: np.ndarray, shade: np.ndarray, u: np.ndarray, v: np.ndarray, app: Appearance,
         p: dict[str, float], length: float) -> None:
    """chipped_edge: an elliptic bite out of the silhouette with a dark rim, in place."""
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


def break_tip(alpha: np.ndarray, shade: np.ndarray, u: np.ndarray, v: np.ndarray,
              p: dict[str, float], length: float) -> None:
    """broken_tip: the tip cut off along a jagged line, its fracture brighter, in place."""
    wave = np.sin(v * np.float32(p["freq"] * 2 * math.pi / (0.06 * length)) + p["ph"])
    ucut = (p["ucut"] + p["jag"] * wave) * length
    alpha *= np.clip(u - ucut + 0.5, 0.0, 1.0)
    shade += 0.25 * np.clip(ucut + 2.5 - u, 0.0, 1.0)


def contaminate(alpha: np.ndarray, premult: np.ndarray, u: np.ndarray, v: np.ndarray,
                app: Appearance, p: dict[str, float], length: float,
                channels: int) -> tuple[np.ndarray, np.ndarray]:
    """contamination: a wobbly blob (dark oil or light dust) over the part; new alpha, premult."""
    uc, vc = p["u"] * length, p["v"] * _radius_at(app, 2, p["u"]) * length
    du, dv = u - np.float32(uc), v - np.float32(vc)
    ang = np.arctan2(dv, du)
    rr = p["r"] * length * (1.0 + p["a1"] * np.sin(3 * ang + p["p1"])
                            + p["a2"] * np.sin(5 * ang + p["p2"]))
    blob = np.clip(rr - np.sqrt(du * du + dv * dv) + 0.5, 0.0, 1.0) * np.float32(p["opacity"])
    if p["dark"] > 0.5:
        level = p["level"]
        col = (0.45 * level, 0.85 * level, 1.6 * level) if channels == 3 else (level,)
    else:
        col = (0.80, 0.86, 0.88) if channels == 3 else (0.86,)
    premult = premult * (1.0 - blob)[..., None] + blob[..., None] * np.asarray(col, np.float32)
    return alpha * (1.0 - blob) + blob, premult
