"""Rotate the part into the canonical pose and crop it; the crop <-> frame affines.

One ``cv2.warpAffine`` does rotation, centring and scaling, so a crop pixel maps to exactly one
frame point through ``crop_to_frame`` (and back through ``frame_to_crop``): heatmaps computed on
the crop can be drawn on the live view. Only rotations are used, never a mirror: a flip would
change the thread's handedness and the side the shadow falls on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from station.vision.gray import to_uint8
from station.vision.localize import Localization, LocalizeParams, _from_dict, localize


@dataclass(frozen=True)
class AlignParams:
    """How to put the part into its canonical pose; the recipe's ``[align]`` table."""

    head_side: str = field(
        default="left",
        metadata={"choices": ("left", "right"), "help": "side of the crop the head (wider end) goes to"},
    )
    orientation: str = field(
        default="head",
        metadata={
            "choices": ("head", "axis", "none"),
            "help": "head = long axis horizontal, head on head_side; axis = long axis only; none = no rotation",
        },
    )
    crop_mode: str = field(
        default="length",
        metadata={
            "choices": ("length", "fixed"),
            "help": "square crop side = crop_scale x part length, or crop_px frame pixels",
        },
    )
    crop_scale: float = field(
        default=1.1,
        metadata={"min": 0.2, "max": 10.0, "help": "crop side as a multiple of the part length (crop_mode=length)"},
    )
    crop_px: int = field(
        default=1024,
        metadata={"min": 8, "max": 20000, "help": "crop side in frame pixels (crop_mode=fixed)"},
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for model metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignParams:
        """Inverse of ``to_dict``; unknown keys are refused."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class AlignedCrop:
    """The part in canonical pose, and the exact affines between crop and frame pixels."""

    crop: np.ndarray  # size x size (x channels), uint8
    frame_to_crop: np.ndarray  # 2x3 float64 affine
    crop_to_frame: np.ndarray  # 2x3 float64 affine
    localization: Localization


class PartNotFound(Exception):
    """No crop could be made; ``localization`` says why (status and message)."""

    def __init__(self, localization: Localization, message: str | None = None):
        self.localization = localization
        text = message or f"part not found ({localization.status}): {localization.message}"
        super().__init__(text)


def rotation_deg(loc: Localization, params: AlignParams) -> float:
    """Rotation (degrees; positive turns clockwise on screen, y down) that puts the part canonically."""
    if params.orientation == "none" or loc.angle_deg is None:
        return 0.0
    a = float(loc.angle_deg)
    if params.orientation == "head":
        # image-coordinate rotation by t maps direction a to a + t: head must point left (180)
        # or right (0)
        target = 180.0 if params.head_side == "left" else 0.0
        t = target - a
    elif params.orientation == "axis":
        t = -a
        t = (t + 90.0) % 180.0 - 90.0  # smallest rotation that makes the axis horizontal
    else:
        raise ValueError(f"align: orientation {params.orientation!r}; expected head, axis or none")
    return (t + 180.0) % 360.0 - 180.0


def crop_side_px(loc: Localization, params: AlignParams) -> float:
    """Side of the square frame region that becomes the crop."""
    if params.crop_mode == "fixed":
        return float(params.crop_px)
    if params.crop_mode == "length":
        if loc.length_px is None:
            raise ValueError("align: crop_mode 'length' needs a localization with length_px")
        return float(params.crop_scale) * float(loc.length_px)
    raise ValueError(f"align: crop_mode {params.crop_mode!r}; expected length or fixed")


def frame_to_crop_affine(loc: Localization, params: AlignParams, size: int) -> np.ndarray:
    """2x3 affine: frame pixel -> crop pixel (pixel centres at integers)."""
    if loc.center is None:
        raise ValueError("align: the localization has no centre (status is not ok)")
    t = math.radians(rotation_deg(loc, params))
    k = size / crop_side_px(loc, params)
    c, s = math.cos(t) * k, math.sin(t) * k
    cx, cy = loc.center
    half = (size - 1) / 2.0
    return np.array(
        [[c, -s, half - (c * cx - s * cy)], [s, c, half - (s * cx + c * cy)]], dtype=np.float64
    )


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Exact inverse of a 2x3 affine."""
    a = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2].copy()


def _prepare_frame(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(to_uint8(image), cv2.COLOR_BGRA2BGR)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"align: expected a gray or BGR image, got shape {image.shape}")
    return to_uint8(image)


def warp_to_crop(image: np.ndarray, frame_to_crop: np.ndarray, size: int) -> np.ndarray:
    """Resample the frame into the crop; anti-aliased when the crop shrinks the part a lot.

    warpAffine only interpolates bilinearly, which aliases the thread texture when shrinking
    by more than 2x, so the frame is first area-averaged by an integer factor and the affine
    composed with that reduction.
    """
    img = _prepare_frame(image)
    m = np.asarray(frame_to_crop, dtype=np.float64)
    k = math.sqrt(abs(np.linalg.det(m[:, :2])))
    factor = int(math.floor(1.0 / k)) if k > 0 else 1
    if factor >= 2:
        # only the frame region the crop reads from is reduced
        inv = invert_affine(m)
        corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], float)
        fc = corners @ inv.T
        h, w = img.shape[:2]
        x0 = max(0, int(math.floor(fc[:, 0].min())) - 2 * factor)
        y0 = max(0, int(math.floor(fc[:, 1].min())) - 2 * factor)
        x1 = min(w, int(math.ceil(fc[:, 0].max())) + 2 * factor + 1)
        y1 = min(h, int(math.ceil(fc[:, 1].max())) + 2 * factor + 1)
        if x1 - x0 >= factor and y1 - y0 >= factor:
            # keep whole blocks of `factor` pixels starting at x0, y0
            x1 = x0 + (x1 - x0) // factor * factor
            y1 = y0 + (y1 - y0) // factor * factor
            sub = img[y0:y1, x0:x1]
            small = cv2.resize(
                sub, ((x1 - x0) // factor, (y1 - y0) // factor), interpolation=cv2.INTER_AREA
            )
            # small pixel q covers frame pixels: p = factor * q + (factor - 1) / 2 + offset
            s = np.array(
                [[factor, 0.0, x0 + (factor - 1) / 2.0], [0.0, factor, y0 + (factor - 1) / 2.0], [0, 0, 1]]
            )
            m = (np.vstack([m, [0, 0, 1]]) @ s)[:2]
            img = small
    return cv2.warpAffine(
        img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def align(image: np.ndarray, loc: Localization, params: AlignParams | None, size: int) -> AlignedCrop:
    """Crop the localized part into a ``size`` x ``size`` uint8 image in canonical pose."""
    params = params or AlignParams()
    if not loc.ok:
        raise PartNotFound(loc)
    if int(size) < 8:
        raise ValueError(f"align: crop size {size} is too small; expected at least 8 px")
    size = int(size)
    f2c = frame_to_crop_affine(loc, params, size)
    crop = warp_to_crop(image, f2c, size)
    return AlignedCrop(crop=crop, frame_to_crop=f2c, crop_to_frame=invert_affine(f2c), localization=loc)


def find_and_align(
    image: np.ndarray,
    localize_params: LocalizeParams | None,
    align_params: AlignParams | None,
    size: int,
) -> AlignedCrop:
    """Localize then align; raises ``PartNotFound`` (carrying the Localization) on failure."""
    loc = localize(image, localize_params or LocalizeParams())
    if not loc.ok:
        raise PartNotFound(loc)
    return align(image, loc, align_params, size)


def map_points_to_frame(points: np.ndarray, crop: AlignedCrop) -> np.ndarray:
    """Crop pixel coordinates (N, 2) -> frame pixel coordinates (N, 2)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ crop.crop_to_frame[:, :2].T + crop.crop_to_frame[:, 2]


def map_points_to_crop(points: np.ndarray, crop: AlignedCrop) -> np.ndarray:
    """Frame pixel coordinates (N, 2) -> crop pixel coordinates (N, 2)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ crop.frame_to_crop[:, :2].T + crop.frame_to_crop[:, 2]


def warp_map_to_frame(
    map_hxw: np.ndarray, crop: AlignedCrop, frame_shape: tuple[int, ...], fill: float = 0.0
) -> np.ndarray:
    """Draw a per-pixel map computed on the crop (any resolution) into frame coordinates.

    Returns float32 of the frame's height x width; pixels outside the crop get ``fill``.
    """
    m = np.asarray(map_hxw, dtype=np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"warp_map_to_frame: expected a 2-D map, got shape {map_hxw.shape}")
    size = crop.crop.shape[0]
    mh, mw = m.shape
    # map pixel -> crop pixel (pixel-centre aligned), then crop -> frame: warp the map with the
    # inverse (frame -> map) so every frame pixel samples the map once.
    sx, sy = size / mw, size / mh
    map_to_crop = np.array([[sx, 0.0, (sx - 1) / 2.0], [0.0, sy, (sy - 1) / 2.0], [0, 0, 1]])
    f2c = np.vstack([crop.frame_to_crop, [0, 0, 1]])
    frame_to_map = (np.linalg.inv(map_to_crop) @ f2c)[:2]
    h, w = int(frame_shape[0]), int(frame_shape[1])
    return cv2.warpAffine(
        m,
        frame_to_map,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(fill),
    )
