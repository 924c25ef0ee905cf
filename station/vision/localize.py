"""Find the part in a frame: status, box, centre, orientation (tip -> head), length, width.

Detection runs on a downscaled copy of the frame (fast) with the station's one segmentation
(``station.vision.segment``: contrast relative to a smooth background, so lighting gradients
do not look like parts); the largest blob and its nearby pieces are the part. Centre and angle
are then refined on the full-resolution pixels of the part.

A fixtured part or a surface (``method = "fixed"``) needs no search: the part *is* the
region of interest (the whole frame when ``roi`` is all zeros), so localization returns that
region, always, with no orientation.

Coordinates are frame pixels with pixel centres at integer positions (OpenCV's convention),
x to the right, y down; angles are degrees in those image coordinates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from station.vision.gray import to_gray
from station.vision.segment import Blobs, contrast_scale, segment

STATUSES = ("ok", "none", "border", "several")
METHODS = ("segment", "fixed")


@dataclass(frozen=True)
class LocalizeParams:
    """How to find the part; the recipe's ``[localize]`` table maps onto these fields."""

    method: str = field(
        default="segment",
        metadata={
            "choices": METHODS,
            "help": "segment = find one part against the background; fixed = the region of "
                    "interest is the part (a fixtured part or a surface): no search",
        },
    )
    roi: tuple[int, int, int, int] = field(
        default=(0, 0, 0, 0),
        metadata={"min": 0, "help": "x, y, w, h of the search region in frame pixels; all 0 = whole frame"},
    )
    polarity: str = field(
        default="dark_on_light",
        metadata={
            "choices": ("dark_on_light", "light_on_dark", "auto"),
            "help": "part darker than the background, lighter, or decide per frame",
        },
    )
    detect_size: int = field(
        default=256,
        metadata={"min": 64, "max": 2048, "help": "long side (px) the frame is shrunk to for detection"},
    )
    background_sigma_frac: float = field(
        default=0.25,
        metadata={
            "min": 0.02,
            "max": 2.0,
            "help": "background estimate scale (closing + blur) as a fraction of the region's long side; must exceed the part's width",
        },
    )
    threshold: float = field(
        default=0.0,
        metadata={"min": 0.0, "max": 1.0, "help": "relative contrast to the background that counts as part; 0 = automatic (Otsu)"},
    )
    min_contrast: float = field(
        default=0.12,
        metadata={"min": 0.0, "max": 1.0, "help": "floor for the automatic threshold, so an empty frame finds nothing"},
    )
    min_area_frac: float = field(
        default=0.005,
        metadata={"min": 0.0, "max": 1.0, "help": "smallest part area as a fraction of the search region; smaller blobs are dust"},
    )
    max_area_frac: float = field(
        default=0.6,
        metadata={"min": 0.0, "max": 1.0, "help": "largest part area as a fraction of the search region"},
    )
    merge_gap_frac: float = field(
        default=0.03,
        metadata={"min": 0.0, "max": 0.5, "help": "blobs this close (fraction of the region's long side) are pieces of one part"},
    )
    border_margin_px: int = field(
        default=2,
        metadata={"min": 0, "max": 1000, "help": "a part this close (frame px) to the region edge is cut off"},
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for model metadata."""
        d = asdict(self)
        d["roi"] = list(self.roi)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalizeParams:
        """Inverse of ``to_dict``; unknown keys are refused so a typo cannot pass silently."""
        return _from_dict(cls, data)


def _from_dict(cls, data: dict[str, Any]):
    """``cls`` from a dict (a model file's metadata), each value held to the field's choices
    and range as a recipe's is: a model file saying crop_scale = 1e9 cropped nothing of the
    part and passed a defect, and 0 failed every part on a division by zero."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(names[key].default, tuple):
            value = tuple(int(v) for v in value)
        _check_field(f"{cls.__name__}.{key}", value, names[key].metadata)
        kwargs[key] = value
    return cls(**kwargs)


def _check_field(name: str, value: Any, meta: Any) -> None:
    """``value`` within the field's ``choices``, or each of its numbers within min..max."""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} = {value!r}: expected one of {', '.join(map(str, choices))}")
    low, high = meta.get("min", -math.inf), meta.get("max", math.inf)
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, int | float) and not isinstance(v, bool) and \
                not (math.isfinite(v) and low <= v <= high):
            what = "numbers" if isinstance(value, tuple) else "a number"
            raise ValueError(f"{name} = {value!r}: expected {what} from {low:g} to {high:g}")


@dataclass(frozen=True)
class Localization:
    """Where the part is; ``status`` other than ``ok`` means no crop should be made."""

    status: str  # "ok" | "none" | "border" | "several"
    box: tuple[int, int, int, int] | None  # x, y, w, h (axis-aligned, frame pixels)
    center: tuple[float, float] | None  # x, y (frame pixels, sub-pixel)
    angle_deg: float | None  # direction from tip to head, degrees, image coordinates
    length_px: float | None  # extent along the long axis
    width_px: float | None  # extent across the long axis
    message: str = ""  # human-readable reason when status != "ok"
    head_ratio: float | None = None  # head-end width / tip-end width (>= 1); ~1 = ambiguous

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for crops.jsonl and records)."""
        return asdict(self)


def _fail(status: str, message: str, box: tuple[int, int, int, int] | None = None) -> Localization:
    return Localization(status, box, None, None, None, None, message)


def _roi(params: LocalizeParams, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x, y, rw, rh = (int(v) for v in params.roi)
    if rw == 0 and rh == 0 and x == 0 and y == 0:
        return 0, 0, w, h
    if rw <= 0 or rh <= 0 or x < 0 or y < 0 or x + rw > w or y + rh > h:
        raise ValueError(
            f"localize: roi {tuple(params.roi)} (x, y, w, h) does not lie inside the {w}x{h} frame"
        )
    return x, y, rw, rh


@dataclass
class _Detection:
    """The search region shrunk to ``detect_size`` and segmented (see ``station.vision.segment``)."""

    roi: tuple[int, int, int, int]  # the search region in frame pixels
    small: np.ndarray  # float32 grey, the region at detection scale (dw x dh)
    polarity: str
    bg: np.ndarray  # background estimate at detection scale
    thr: float  # contrast threshold
    blobs: Blobs
    areas: np.ndarray  # area per blob label; 0 for the background and blobs that are never strong
    min_area: float  # detection px

    @property
    def shrunk(self) -> bool:
        return self.small.shape[:2] != (self.roi[3], self.roi[2])

    @property
    def scale(self) -> tuple[float, float]:
        """Frame px per detection px, along x and y."""
        dh, dw = self.small.shape[:2]
        return self.roi[2] / dw, self.roi[3] / dh

    @property
    def region_area(self) -> float:
        return float(self.small.size)

    def box_of(self, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
        """A detection-scale box in frame pixels (grown outwards to whole pixels)."""
        rx, ry, rw, rh = self.roi
        sx, sy = self.scale
        x0, y0 = rx + int(math.floor(x * sx)), ry + int(math.floor(y * sy))
        x1, y1 = rx + int(math.ceil((x + w) * sx)), ry + int(math.ceil((y + h) * sy))
        return x0, y0, min(x1, rx + rw) - x0, min(y1, ry + rh) - y0


def _detect(region: np.ndarray, roi: tuple[int, int, int, int], params: LocalizeParams) -> _Detection:
    """Segment the region on a copy shrunk to ``detect_size`` (fast)."""
    rw, rh = roi[2], roi[3]
    f = min(1.0, params.detect_size / max(rw, rh))
    dw, dh = max(1, round(rw * f)), max(1, round(rh * f))
    small = cv2.resize(region, (dw, dh), interpolation=cv2.INTER_AREA) if f < 1.0 else region
    small = small.astype(np.float32)
    seg = segment(small, params.polarity, params.background_sigma_frac, params.threshold,
                  params.min_contrast)
    blobs = seg.blobs
    areas = blobs.stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    areas[~blobs.strong] = 0.0
    min_area = max(params.min_area_frac * float(dw * dh), 4.0)
    return _Detection(roi, small, seg.polarity, seg.bg, seg.level, blobs, areas, min_area)


def _merge(det: _Detection, params: LocalizeParams) -> tuple[np.ndarray, set[int]]:
    """The largest blob with the pieces of the same part (split by a defect or a glint)
    that lie within ``merge_gap_frac`` of it: (uint8 mask, blob labels)."""
    labels, areas = det.blobs.labels, det.areas
    top = int(np.argmax(areas))
    part = (labels == top).astype(np.uint8)
    gap = max(1, int(round(params.merge_gap_frac * max(det.small.shape[:2]))))
    merged = {top}
    for _ in range(3):
        near = np.unique(labels[within(part, gap)])
        new = [int(i) for i in near if i not in merged and areas[i] >= det.min_area]
        if not new:
            break
        merged.update(new)
        part = np.isin(labels, list(merged)).astype(np.uint8)
    return part, merged


DILATE_MAX_GAP = 12  # px: up to this gap a disc dilation is the faster of the two


def within(mask: np.ndarray, gap: int) -> np.ndarray:
    """Pixels within ``gap`` px of ``mask`` (uint8, 1 = in), as a dilation by a disc.

    A dilation costs as its disc's area, the distance transform the same at any gap: on
    256 px detection images a 17 px disc takes 0.3 ms, a 53 px one (a widened
    ``merge_gap_frac`` of 0.1) 1.6 ms against the transform's 0.6 ms. Both found the same
    pieces to merge in every image of the development screws, tiles on a plate and discs
    (1632 images), so the faster one is used for each gap.
    """
    if gap <= DILATE_MAX_GAP:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
        return cv2.dilate(mask, disc) > 0
    return cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5) <= gap


def _judge(det: _Detection, params: LocalizeParams, merged: set[int],
           bbox: tuple[int, int, int, int]) -> Localization | None:
    """Why the part found cannot be cropped (too large, several parts, cut off); None = fine."""
    areas, region_area = det.areas, det.region_area
    part_area = float(sum(areas[i] for i in merged))
    if part_area > params.max_area_frac * region_area:
        return _fail(
            "none",
            f"no part: the foreground covers {part_area / region_area:.0%} of the search region, "
            f"above max_area_frac {params.max_area_frac:.0%} (lighting or background changed?)",
        )
    others = sorted((areas[i] for i in range(1, det.blobs.n) if i not in merged), reverse=True)
    others = [a for a in others if a >= max(det.min_area, 0.25 * part_area)]
    if others:
        return _fail(
            "several",
            f"{len(others) + 1} part-sized blobs in the search region (largest {part_area / region_area:.1%}, "
            f"next {others[0] / region_area:.1%}); expected one part",
            det.box_of(*bbox),
        )
    x, y, w, h = bbox
    dh, dw = det.small.shape[:2]
    margin = params.border_margin_px / max(det.scale)
    if x <= margin or y <= margin or x + w >= dw - margin or y + h >= dh - margin:
        return _fail("border", "the part touches the edge of the search region (cut off)", det.box_of(*bbox))
    return None


def _refine(region: np.ndarray, det: _Detection, part: np.ndarray, bbox: tuple[int, int, int, int],
            part_area: float) -> tuple[list[np.ndarray], float, float]:
    """The part's outlines in full-resolution pixels inside its box, and their frame offset.

    The threshold level per pixel is interpolated from the smooth detection-scale background;
    when the frame was not shrunk (or refinement loses the part) the detection mask is used.
    """
    x, y, w, h = bbox
    dh, dw = det.small.shape[:2]
    rx, ry, rw, rh = det.roi
    sx, sy = det.scale
    pad = 2
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(dw, x + w + pad), min(dh, y + h + pad)
    if det.shrunk:
        fx0, fy0 = int(round(x0 * sx)), int(round(y0 * sy))
        fx1, fy1 = min(rw, int(round(x1 * sx))), min(rh, int(round(y1 * sy)))
        pw, ph = fx1 - fx0, fy1 - fy0
        patch = region[fy0:fy1, fx0:fx1].astype(np.float32)
        scale = contrast_scale(det.small, det.bg)
        sign = -1.0 if det.polarity == "dark_on_light" else 1.0
        limit: np.ndarray = (det.bg + sign * det.thr * scale)[y0:y1, x0:x1]
        limit = cv2.resize(limit, (pw, ph), interpolation=cv2.INTER_LINEAR)
        grown = cv2.dilate(part[y0:y1, x0:x1], np.ones((5, 5), np.uint8))
        support = cv2.resize(grown, (pw, ph), interpolation=cv2.INTER_NEAREST)
        cmp = cv2.CMP_LT if det.polarity == "dark_on_light" else cv2.CMP_GT
        fine = cv2.bitwise_and(cv2.compare(patch, limit, cmp), support * 255)
        k = max(3, int(round(max(sx, sy))) | 1)
        fine = cv2.morphologyEx(fine, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
        contours = _pieces(fine)
        if sum(cv2.contourArea(c) for c in contours) >= 0.5 * part_area * sx * sy:
            return contours, float(rx + fx0), float(ry + fy0)
    contours = _pieces(part[y0:y1, x0:x1] * 255)
    contours = [(c.astype(np.float64) + 0.5) * np.array([sx, sy]) - 0.5 for c in contours]
    return contours, rx + x0 * sx, ry + y0 * sy


def fixed_region(shape: tuple[int, ...], params: LocalizeParams) -> Localization:
    """``method = "fixed"``: the ROI (whole frame when all zeros) is the part, with no angle.

    ``length_px``/``width_px`` are the region's width/height (its extent along x and y), so
    ``crop_mode = "length"`` still centres a crop of ``crop_scale`` x the region's width on
    it. An ROI outside this frame is status ``none`` with the reason (frames of a folder can
    differ in size; the line goes on and the part is an ERROR).
    """
    try:
        x, y, w, h = _roi(params, shape)
    except ValueError as exc:
        return _fail("none", f"fixed region: {str(exc).removeprefix('localize: ')}")
    return Localization(
        status="ok", box=(x, y, w, h), center=(x + (w - 1) / 2.0, y + (h - 1) / 2.0),
        angle_deg=None, length_px=float(w), width_px=float(h), message="", head_ratio=None,
    )


def localize(image: np.ndarray, params: LocalizeParams | None = None) -> Localization:
    """Find the one part in ``image`` (gray or colour, 8-bit, 16-bit or float) inside the ROI."""
    params = params or LocalizeParams()
    if params.method == "fixed":
        if not isinstance(image, np.ndarray) or image.ndim < 2 or image.size == 0:
            raise ValueError(f"expected a non-empty image array, got {type(image).__name__}")
        return fixed_region(image.shape, params)
    if params.method != "segment":
        raise ValueError(f"localize: method {params.method!r}; expected one of {', '.join(METHODS)}")
    full = to_gray(image)
    roi = _roi(params, full.shape)
    rx, ry, rw, rh = roi
    region = full[ry : ry + rh, rx : rx + rw]
    det = _detect(region, roi, params)
    if det.blobs.n <= 1 or det.areas.max() < det.min_area:
        biggest = det.areas.max() / det.region_area if det.blobs.n > 1 else 0.0
        return _fail(
            "none",
            f"no part: largest blob covers {biggest:.2%} of the search region, "
            f"below min_area_frac {params.min_area_frac:.2%}",
        )
    part, merged = _merge(det, params)
    ys, xs = np.nonzero(part)
    x, y = int(xs.min()), int(ys.min())
    bbox = (x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1)
    failed = _judge(det, params, merged, bbox)
    if failed is not None:
        return failed
    part_area = float(sum(det.areas[i] for i in merged))
    contours, ox, oy = _refine(region, det, part, bbox, part_area)
    if not contours:  # pieces with no area: lines a pixel thin at the detection size
        return _fail("none", f"no part: what was found ({bbox[2]} x {bbox[3]} px at the "
                             "detection size) has no outline with an area")
    return _measure(contours, ox, oy, det.box_of(*bbox))


def _pieces(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of the part's pieces (tiny ones dropped)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    sizes = [cv2.contourArea(c) for c in contours]
    big = max(sizes)
    return [c for c, a in zip(contours, sizes, strict=True) if a >= 0.02 * big and a > 0]


def _measure(
    contours: list[np.ndarray], ox: float, oy: float, box: tuple[int, int, int, int]
) -> Localization:
    """Pose from the part's outlines: axis by second moments of the filled outlines (glints
    inside the part cannot bias it), extents and end widths by projecting the outlines."""
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    raw = np.zeros(6)
    for c in contours:
        m = cv2.moments(c.astype(np.float32))
        raw += [m["m00"], m["m10"], m["m01"], m["m20"], m["m11"], m["m02"]]
    m00, m10, m01, m20, m11, m02 = raw
    if m00 <= 0:
        mean = pts.mean(axis=0)
        cov = np.cov((pts - mean).T)
    else:
        mean = np.array([m10 / m00, m01 / m00])
        cov = np.array(
            [[m20 / m00 - mean[0] ** 2, m11 / m00 - mean[0] * mean[1]],
             [m11 / m00 - mean[0] * mean[1], m02 / m00 - mean[1] ** 2]]
        )
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, 1]  # major axis (largest eigenvalue)
    d = pts - mean
    u = d @ axis
    v = d @ np.array([-axis[1], axis[0]])
    umin, umax = float(u.min()), float(u.max())
    length = umax - umin + 1.0
    width = float(v.max() - v.min()) + 1.0
    band = 0.2 * length
    lo, hi = v[u <= umin + band], v[u >= umax - band]

    def spread(vals: np.ndarray) -> float:
        if len(vals) < 2:
            return 1.0
        q0, q1 = np.percentile(vals, [1.0, 99.0])
        return float(q1 - q0) + 1.0

    w_lo, w_hi = spread(lo), spread(hi)
    centre = mean + 0.5 * (umin + umax) * axis
    if w_lo > w_hi:  # head at the low end: point the axis from tip to head
        axis = -axis
        ratio = w_lo / w_hi
    else:
        ratio = w_hi / w_lo
    angle = math.degrees(math.atan2(axis[1], axis[0]))
    return Localization(
        status="ok",
        box=box,
        center=(float(centre[0] + ox), float(centre[1] + oy)),
        angle_deg=angle,
        length_px=length,
        width_px=width,
        message="",
        head_ratio=ratio,
    )
