"""Rotate the part into the canonical pose and crop it; the crop <-> frame affines.

Crops are ``width`` x ``height`` px: ``crop_aspect`` (height / width) gives a long part a long
crop, so the model's pixels go to the part rather than the plate around it. With
``crop_mode = "region"`` the part's box (the ROI of a fixed-region product) is stretched onto
the whole crop instead of being turned and scaled alike both ways.

One ``cv2.warpAffine`` does rotation, centring and scaling, so a crop pixel maps to exactly one
frame point through ``crop_to_frame`` (and back through ``frame_to_crop``): heatmaps computed on
the crop can be drawn on the live view. Only rotations are used, never a mirror: a flip would
change the thread's handedness and the side the shadow falls on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from station.vision import pattern
from station.vision.gray import to_gray, to_uint8
from station.vision.localize import Localization, LocalizeParams, _from_dict, localize
from station.vision.register import match, template_image

CROP_MODES = ("length", "fixed", "region")
REGISTRATIONS = ("template", "none")
ORIENTATIONS = ("head", "axis", "axis_pattern", "pattern", "none")
MIN_CROP_PX = 8


#: the autoencoder's default 2**depth: ``station crops`` and ``init-recipe`` state crop
#: heights as ``station train`` cuts them, rounded up to this
CROP_MULTIPLE = 8


def crop_height(width: int, params: AlignParams | None, multiple: int = 1) -> int:
    """Crop height (px) for a crop ``width`` px wide: ``crop_aspect`` x width, rounded UP to a
    whole ``multiple`` (an autoencoder of depth d needs multiples of 2**d), at least 8 px."""
    aspect = float((params or AlignParams()).crop_aspect)
    m = max(1, int(multiple))
    h = max(MIN_CROP_PX, math.ceil(int(width) * aspect - 1e-9))
    return int(math.ceil(h / m) * m)


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
            "choices": ORIENTATIONS,
            "help": "head = long axis horizontal, head on head_side; axis = long axis only; "
                    "axis_pattern = long axis horizontal, which end goes right read from the "
                    "part's grey pattern (no wider end); pattern = turned by that pattern alone "
                    "(a round part at any angle); none = no rotation",
        },
    )
    pattern: tuple[int, ...] = field(
        default=(),
        metadata={"min": -100 * pattern.SCALE, "max": 100 * pattern.SCALE,
                  "help": f"orientation = pattern or axis_pattern: the product's pattern around "
                          f"the part's centre ({pattern.RINGS} rings of {pattern.ANGLES} values, "
                          "learned from good parts by station init-recipe)"},
    )
    crop_mode: str = field(
        default="length",
        metadata={
            "choices": CROP_MODES,
            "help": "crop width = crop_scale x part length, or crop_px frame pixels; region = "
                    "the part's box (the ROI with localize.method fixed) stretched to the crop",
        },
    )
    crop_scale: float = field(
        default=1.1,
        metadata={"min": 0.2, "max": 10.0, "help": "crop width as a multiple of the part length (crop_mode=length)"},
    )
    crop_px: int = field(
        default=1024,
        metadata={"min": 8, "max": 20000, "help": "crop width in frame pixels (crop_mode=fixed)"},
    )
    crop_aspect: float = field(
        default=1.0,
        metadata={"min": 0.05, "max": 20.0,
                  "help": "crop height / crop width (1 = square); a long part gets a low one"},
    )
    registration: str = field(
        default="template",
        metadata={"choices": REGISTRATIONS,
                  "help": "template = station train learns the good parts' mean crop and every "
                          "found part is registered onto it to a fraction of a pixel before it "
                          "is cropped (a region, crop_mode region, is cut as it lies); none = "
                          "the outline's pose alone"},
    )
    # learned by station train, carried by the models' metadata, never written in a recipe
    template: tuple[int, ...] = field(
        default=(), metadata={"internal": True, "min": 0, "max": 255,
                              "help": "the good parts' mean grey crop, row by row"})
    template_width: int = field(
        default=0, metadata={"internal": True, "min": 0, "max": 4096,
                             "help": "the template's width (px)"})

    def __post_init__(self) -> None:
        if self.template:  # refused at load (a model's metadata), not at the first part
            template_image(self.template, self.template_width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for model metadata."""
        d = asdict(self)
        d["pattern"] = list(self.pattern)
        d["template"] = list(self.template)
        return d

    @property
    def registers(self) -> bool:
        """Whether parts are registered onto a learned template (:func:`register`)."""
        return self.registration == "template" and self.crop_mode != "region"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignParams:
        """Inverse of ``to_dict``; unknown keys are refused."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class AlignedCrop:
    """The part in canonical pose, and the exact affines between crop and frame pixels."""

    crop: np.ndarray  # height x width (x channels), uint8
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
    elif params.orientation in pattern.READS_PATTERN:
        t = -a  # ``a`` was read from the pattern by ``read_pattern`` (``align`` calls it)
    else:
        raise ValueError(f"align: orientation {params.orientation!r}; expected one of "
                         f"{', '.join(ORIENTATIONS)}")
    return (t + 180.0) % 360.0 - 180.0


def crop_side_px(loc: Localization, params: AlignParams) -> float:
    """Width of the frame region (along the part's axis) that becomes the crop's width."""
    if params.crop_mode == "fixed":
        return float(params.crop_px)
    if params.crop_mode == "length":
        if loc.length_px is None:
            raise ValueError("align: crop_mode 'length' needs a localization with length_px")
        return float(params.crop_scale) * float(loc.length_px)
    if params.crop_mode == "region":
        if loc.box is None:
            raise ValueError("align: crop_mode 'region' needs a localization with a box")
        return float(loc.box[2])
    raise ValueError(f"align: crop_mode {params.crop_mode!r}; expected one of {', '.join(CROP_MODES)}")


def _region_affine(loc: Localization, width: int, height: int) -> np.ndarray:
    """crop_mode ``region``: the box stretched onto the whole crop, x and y scaled apart.

    Why stretch: a fixtured face (a magnetic tile's, a label's) is the same surface at every
    size, and the defects to find are judged relative to that face. Stretching maps the
    same place on the face to the same crop pixel whatever the tile's size, so per-pixel
    statistics and the learned part region line up; padding or cropping to one aspect would
    put the edge of a small face where the middle of a large one is.
    """
    if loc.box is None:
        raise ValueError("align: crop_mode 'region' needs a localization with a box")
    x, y, w, h = (float(v) for v in loc.box)
    if w <= 0 or h <= 0:
        raise ValueError(f"align: crop_mode 'region' needs a box with a size, got {loc.box}")
    sx, sy = width / w, height / h
    # pixel areas map onto pixel areas: crop = s * (frame - x0 + 0.5) - 0.5
    return np.array([[sx, 0.0, sx * (0.5 - x) - 0.5], [0.0, sy, sy * (0.5 - y) - 0.5]], np.float64)


def frame_to_crop_affine(loc: Localization, params: AlignParams, size: int,
                         height: int | None = None) -> np.ndarray:
    """2x3 affine: frame pixel -> crop pixel (pixel centres at integers).

    The crop is ``size`` px wide and ``height`` px high (None or 0: square). Except with
    ``crop_mode = "region"`` the scale is the same along both axes, so a crop ``height`` px
    high covers ``height / size`` x the frame region's width across the part.
    """
    width = int(size)
    height = int(height or width)
    if params.crop_mode == "region":
        return _region_affine(loc, width, height)
    if loc.center is None:
        raise ValueError("align: the localization has no centre (status is not ok)")
    t = math.radians(rotation_deg(loc, params))
    k = width / crop_side_px(loc, params)
    c, s = math.cos(t) * k, math.sin(t) * k
    cx, cy = loc.center
    hx, hy = (width - 1) / 2.0, (height - 1) / 2.0
    return np.array(
        [[c, -s, hx - (c * cx - s * cy)], [s, c, hy - (s * cx + c * cy)]], dtype=np.float64
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


def _reduction(m: np.ndarray) -> tuple[int, int]:
    """Integer area-averaging factors (x, y) before the warp: how many frame pixels per crop
    pixel along each frame axis (rotated crops: the larger of the two crop scales)."""
    inv = invert_affine(m)[:, :2]
    # frame pixels per crop pixel along frame x and y: the rows of the inverse's linear part
    fx = float(np.hypot(inv[0, 0], inv[0, 1]))
    fy = float(np.hypot(inv[1, 0], inv[1, 1]))
    if abs(m[0, 1]) > 1e-12 or abs(m[1, 0]) > 1e-12:  # rotated: one factor for both axes
        fx = fy = min(fx, fy)
    return max(1, int(math.floor(fx))), max(1, int(math.floor(fy)))


def warp_to_crop(image: np.ndarray, frame_to_crop: np.ndarray, size: int,
                 height: int | None = None) -> np.ndarray:
    """Resample the frame into the ``size`` x ``height`` crop (None: square); anti-aliased
    when the crop shrinks the part a lot.

    warpAffine only interpolates bilinearly, which aliases the thread texture when shrinking
    by more than 2x, so the frame is first area-averaged by an integer factor per axis and
    the affine composed with that reduction.
    """
    img = _prepare_frame(image)
    width, height = int(size), int(height or size)
    m = np.asarray(frame_to_crop, dtype=np.float64)
    fx, fy = _reduction(m)
    if fx >= 2 or fy >= 2:
        # only the frame region the crop reads from is reduced
        inv = invert_affine(m)
        corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1],
                            [width - 1, height - 1, 1]], float)
        fc = corners @ inv.T
        h, w = img.shape[:2]
        x0 = max(0, int(math.floor(fc[:, 0].min())) - 2 * fx)
        y0 = max(0, int(math.floor(fc[:, 1].min())) - 2 * fy)
        x1 = min(w, int(math.ceil(fc[:, 0].max())) + 2 * fx + 1)
        y1 = min(h, int(math.ceil(fc[:, 1].max())) + 2 * fy + 1)
        if x1 - x0 >= fx and y1 - y0 >= fy:
            # keep whole blocks of fx x fy pixels starting at x0, y0
            x1 = x0 + (x1 - x0) // fx * fx
            y1 = y0 + (y1 - y0) // fy * fy
            sub = img[y0:y1, x0:x1]
            small = cv2.resize(sub, ((x1 - x0) // fx, (y1 - y0) // fy), interpolation=cv2.INTER_AREA)
            # small pixel q covers frame pixels: p = f * q + (f - 1) / 2 + offset
            s = np.array([[fx, 0.0, x0 + (fx - 1) / 2.0], [0.0, fy, y0 + (fy - 1) / 2.0], [0, 0, 1]])
            m = (np.vstack([m, [0, 0, 1]]) @ s)[:2]
            img = small
    return cv2.warpAffine(
        img, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def pattern_patch(image: np.ndarray, loc: Localization) -> np.ndarray:
    """The grey square around the part's centre its pattern is read from (see
    :mod:`station.vision.pattern`), unturned: ``pattern.REACH`` x the part's longer extent
    each way from the centre, ``pattern.PATCH`` px."""
    if loc.center is None:
        raise ValueError("align: the localization has no centre (status is not ok)")
    reach = pattern.REACH * max(float(loc.length_px or 0.0), float(loc.width_px or 0.0), 8.0)
    s = pattern.PATCH / (2.0 * reach)
    cx, cy = loc.center
    h = (pattern.PATCH - 1) / 2.0
    m = np.array([[s, 0.0, h - s * cx], [0.0, s, h - s * cy]], np.float64)
    return to_gray(warp_to_crop(image, m, pattern.PATCH))


def read_pattern(image: np.ndarray, loc: Localization, params: AlignParams) -> Localization:
    """``loc`` with ``angle_deg`` read from the part's pattern (orientations ``pattern`` and
    ``axis_pattern``; others, and a region cropped as it lies, unchanged): for ``pattern``
    the turn that best matches the recipe's ``align.pattern``; for ``axis_pattern`` the
    direction of the long axis (precise, from the outline's moments) that the pattern
    matches better (it only tells the two ends apart)."""
    if params.orientation not in pattern.READS_PATTERN or params.crop_mode == "region":
        return loc
    part = pattern.rings(pattern_patch(image, loc))
    ref = pattern.reference(params.pattern)
    if params.orientation == "pattern":
        return replace(loc, angle_deg=pattern.turn(part, ref))
    if loc.angle_deg is None:
        return loc
    return replace(loc, angle_deg=pattern.better_end(part, ref, float(loc.angle_deg)))


def register(image: np.ndarray, loc: Localization, params: AlignParams) -> Localization:
    """``loc`` with its centre and angle corrected by matching the part's coarse crop onto
    the product's learned template (:mod:`station.vision.register`); unchanged without a
    template, for a region, or where the match is not trusted.

    The match ``W`` (template px -> coarse crop px) composed with the coarse crop's own affine
    is again a turn, a shift and the same scale, so it is a pose: the crop at any size cut
    with the returned pose is the registered one.
    """
    if not (params.registers and params.template and loc.ok and loc.center is not None):
        return loc
    tmpl = template_image(params.template, params.template_width)
    th, tw = tmpl.shape
    f2c = frame_to_crop_affine(loc, params, tw, th)
    angle = loc.angle_deg
    turn = params.orientation != "none" and angle is not None
    w = match(to_gray(warp_to_crop(image, f2c, tw, th)), tmpl, turn)
    if w is None:
        return loc
    c2f = invert_affine(f2c) @ np.vstack([w, [0.0, 0.0, 1.0]])  # template px -> frame px
    cx, cy = c2f @ np.array([(tw - 1) / 2.0, (th - 1) / 2.0, 1.0])
    out = replace(loc, center=(float(cx), float(cy)))
    if turn and angle is not None:
        dt = math.degrees(math.atan2(w[1, 0], w[0, 0]))
        out = replace(out, angle_deg=(float(angle) + dt + 180.0) % 360.0 - 180.0)
        # the crop turns by the coarse turn less dt; orientation "axis" folds turns into
        # -90..90 and could fold this one to the other end of the part: then no correction
        error = (rotation_deg(out, params) - rotation_deg(loc, params) + dt + 180.0) % 360.0 - 180.0
        if abs(error) > 1e-6:
            return loc
    return out


def read_pose(image: np.ndarray, loc: Localization, params: AlignParams) -> Localization:
    """The pose a part's crops are cut in: the outline's, turned by the part's pattern
    (:func:`read_pattern`), then registered onto the product's template (:func:`register`).
    Read once per part: its crops at every size share it."""
    return register(image, read_pattern(image, loc, params), params)


def align(image: np.ndarray, loc: Localization, params: AlignParams | None, size: int,
          height: int | None = None, *, read: bool = True) -> AlignedCrop:
    """Crop the localized part into a uint8 image ``size`` px wide and ``height`` px high
    (None or 0: square) in canonical pose. ``read=False``: ``loc`` already carries the pose
    :func:`read_pose` read (a part cropped at two sizes reads it once)."""
    params = params or AlignParams()
    if not loc.ok:
        raise PartNotFound(loc)
    if read:
        loc = read_pose(image, loc, params)
    width, height = int(size), int(height or size)
    if min(width, height) < MIN_CROP_PX:
        raise ValueError(f"align: crop {width}x{height} is too small; expected at least "
                         f"{MIN_CROP_PX} px each way")
    f2c = frame_to_crop_affine(loc, params, width, height)
    if params.crop_mode == "region" and loc.box is not None:
        # read the region alone, so the crop's edge pixels repeat the region's edge instead
        # of blending in what lies around it in the frame
        x, y, w, h = (int(v) for v in loc.box)
        shifted = f2c.copy()
        shifted[:, 2] += f2c[:, :2] @ np.array([x, y], np.float64)
        crop = warp_to_crop(image[y:y + h, x:x + w], shifted, width, height)
    else:
        crop = warp_to_crop(image, f2c, width, height)
    return AlignedCrop(crop=crop, frame_to_crop=f2c, crop_to_frame=invert_affine(f2c), localization=loc)


def find_and_align(
    image: np.ndarray,
    localize_params: LocalizeParams | None,
    align_params: AlignParams | None,
    size: int,
    height: int | None = None,
) -> AlignedCrop:
    """Localize then align; raises ``PartNotFound`` (carrying the Localization) on failure."""
    loc = localize(image, localize_params or LocalizeParams())
    if not loc.ok:
        raise PartNotFound(loc)
    return align(image, loc, align_params, size, height)


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
    ch, cw = crop.crop.shape[:2]
    mh, mw = m.shape
    # map pixel -> crop pixel (pixel-centre aligned), then crop -> frame: warp the map with the
    # inverse (frame -> map) so every frame pixel samples the map once.
    sx, sy = cw / mw, ch / mh
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
