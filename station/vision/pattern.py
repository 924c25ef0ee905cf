"""A round part's angle, read by matching its pattern around the centre to the product's.

A part with no long side (a washer with a key, a nut, a wheel) lying at any angle cannot be
levelled by its outline's axis. What turns with it is its pattern: the grey levels in rings
around its centre. ``station init-recipe`` learns the product's pattern from good parts
(:func:`learn`) and writes it into the recipe (``align.pattern``: ``RINGS`` rings of
``ANGLES`` values, scaled integers); at the line every part's rings (:func:`rings`) are
matched against it at every turn (:func:`turn`), and the best turn puts the part into the
pose the pattern was learned in.

Why a learned reference and not a rule read from the part alone (e.g. the direction of its
brightest side): on a textured part the texture and the lighting across it outweigh a small
key or bore, and only matching against what every good part shares averages them out. On the
development magnetic tiles cut round with a key notch and a bore, the part alone gave a
median error of 65 degrees, the learned pattern 1.1 degrees. A broad blur of the patch is
taken off before the rings are read, so lighting that grows across the frame does not turn
the part while its own lighter and darker sides (a screw's head) still count.

The functions take the pattern patch (``station.vision.align.pattern_patch``: the part's
centre region, grey, ``PATCH`` px square), so the one crop code stays in ``align``.
"""

from __future__ import annotations

import cv2
import numpy as np

PATCH = 96  # px: side of the grey square around the part's centre the rings are read from
REACH = 0.55  # the patch's half side, as a share of the part's longer extent
ANGLES, RINGS = 72, 3  # every 5 degrees; three rings from the centre to the patch's edge
SIZE = ANGLES * RINGS  # values in ``align.pattern``
SCALE = 100  # the stored pattern has this root-mean-square (integers keep the recipe short)
READS_PATTERN = ("pattern", "axis_pattern")  # the align.orientation values that read it
SHADING_PX = 24.0  # Gaussian sigma (patch px) of the lighting removed before the rings


def rings(patch: np.ndarray) -> np.ndarray:
    """The patch's pattern: (ANGLES, RINGS) float32, rows every 5 degrees from +x toward +y
    (image coordinates, as ``Localization.angle_deg``), each ring zero-mean.

    >>> patch = np.zeros((PATCH, PATCH), np.uint8)
    >>> patch[40:56, 70:90] = 255  # a light mark right of the centre
    >>> r = rings(patch)
    >>> r.shape  # the mark turned a quarter anticlockwise on screen: -90 degrees
    (72, 3)
    >>> round(turn(rings(np.rot90(patch)), r))
    270
    """
    g = np.asarray(patch, np.float32)
    if SHADING_PX > 0:
        g = g - cv2.GaussianBlur(g, (0, 0), SHADING_PX)
    c = (PATCH - 1) / 2.0
    # WARP_FILL_OUTLIERS: the outer ring's last samples at 0 and 90 degrees fall just off
    # the patch, and without it OpenCV leaves them as whatever the memory held (NaN or a
    # huge number now and then: the same part turned differently from one call to the next)
    polar = cv2.warpPolar(g, (PATCH, 360), (c, c), PATCH / 2.0,
                          cv2.INTER_LINEAR | cv2.WARP_POLAR_LINEAR | cv2.WARP_FILL_OUTLIERS)
    out = cv2.resize(polar, (RINGS, ANGLES), interpolation=cv2.INTER_AREA)
    return out - out.mean(axis=0, keepdims=True)


def reference(pattern: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """The recipe's ``align.pattern`` (RINGS rings of ANGLES values) as (ANGLES, RINGS)."""
    values = np.asarray(pattern, np.float32)
    if values.size != SIZE:
        raise ValueError(f"align: pattern has {values.size} values; expected {SIZE} "
                         f"({RINGS} rings of {ANGLES}, written by station init-recipe)")
    if not values.any():
        raise ValueError("align: pattern is all zeros; expected the product's pattern "
                         "(written by station init-recipe)")
    return values.reshape(RINGS, ANGLES).T


def match(part: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """How well the part matches the reference turned by each of the ANGLES steps (the
    circular cross-correlation, summed over the rings)."""
    f = np.fft.rfft(part, axis=0) * np.conj(np.fft.rfft(ref, axis=0))
    return np.fft.irfft(f, n=ANGLES, axis=0).sum(axis=1)


def turn(part: np.ndarray, ref: np.ndarray) -> float:
    """The angle (degrees) the part lies turned from the reference's pose: the best match,
    refined between steps by a parabola through its neighbours."""
    c = match(part, ref)
    i = int(np.argmax(c))
    a, b, d = float(c[i - 1]), float(c[i]), float(c[(i + 1) % ANGLES])
    curve = a - 2.0 * b + d
    step = 0.5 * (a - d) / curve if curve < 0 else 0.0
    return float((i + step) * 360.0 / ANGLES)


def better_end(part: np.ndarray, ref: np.ndarray, angle_deg: float) -> float:
    """Of ``angle_deg`` and its reverse (an axis's two directions), the one the pattern
    matches better."""
    c = match(part, ref)

    def at(deg: float) -> float:
        x = (deg % 360.0) * ANGLES / 360.0
        i = int(x) % ANGLES
        return float(c[i] + (x - int(x)) * (c[(i + 1) % ANGLES] - c[i]))

    return angle_deg if at(angle_deg) >= at(angle_deg + 180.0) else angle_deg + 180.0


def turned(part: np.ndarray, angle_deg: float) -> np.ndarray:
    """The rings of the part turned back by ``angle_deg`` (fractions of a step by the
    Fourier shift): what it would show lying as the reference does."""
    steps = angle_deg * ANGLES / 360.0
    k = np.arange(ANGLES // 2 + 1)[:, None]
    f = np.fft.rfft(part, axis=0) * np.exp(2j * np.pi * k * steps / ANGLES)
    return np.fft.irfft(f, n=ANGLES, axis=0).astype(np.float32)


def learn(parts: list[np.ndarray], axes: list[float] | None = None,
          rounds: int = 3) -> tuple[int, ...]:
    """The pattern good parts share, in the recipe's form (RMS SCALE, rounded).

    Each part is turned onto the mean of the others so far (starting from the first part's
    own pose), ``rounds`` times. With ``axes`` (each part's long axis, degrees) a part may
    only be turned by its axis or the axis reversed, so the pattern is learned with the axis
    at 0 degrees and tells the two ends apart (``orientation = "axis_pattern"``).

    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(ANGLES, RINGS)).astype(np.float32)
    >>> parts = [turned(base, -a) for a in (0.0, 40.0, 97.2, 250.0)]
    >>> ref = reference(learn(parts))
    >>> [round(turn(p, ref) - turn(parts[0], ref)) % 360 for p in parts]
    [0, 40, 97, 250]
    """
    if not parts:
        raise ValueError("pattern: no parts to learn from")
    if axes is not None and len(axes) != len(parts):
        raise ValueError(f"pattern: {len(axes)} axes for {len(parts)} parts")
    ref = turned(parts[0], axes[0] if axes else 0.0)
    for _ in range(rounds):
        angles = ([turn(p, ref) for p in parts] if axes is None else
                  [better_end(p, ref, a) for p, a in zip(parts, axes, strict=True)])
        ref = np.mean([turned(p, a) for p, a in zip(parts, angles, strict=True)], axis=0)
    rms = float(np.sqrt(np.mean(ref ** 2)))
    scaled = ref * (SCALE / rms) if rms > 0 else ref
    return tuple(int(v) for v in np.round(scaled.T.reshape(-1)))
