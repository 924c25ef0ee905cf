"""Image-quality metrics (focus, brightness, contrast, glare) compared with a reference.

A lens that drifts out of focus, a lamp that dims or a reflection that blooms changes the
crops the models see without changing the part; the models then reject good parts (or pass
bad ones) for a reason nobody can see in the verdict. The station measures the same four
numbers at start-up and every ``quality.interval_s`` and raises the image-quality alarm when
one drifts past its limit from the reference taken at calibration time
(``station calibrate check``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station.config import QualitySection
from station.vision.gray import to_gray

REFERENCE_FORMAT = 1
SATURATION_LEVEL = 250  # grey level (of 255) from which a pixel counts as glare


class QualityError(ValueError):
    """A quality reference file or a frame that cannot be measured; the message says which."""


@dataclass(frozen=True)
class QualityMetrics:
    """The four numbers of one frame, measured on the grey-level region of interest."""

    focus: float  # variance of the Laplacian: falls when the image blurs
    brightness: float  # mean grey level, 0..255
    contrast: float  # p95 - p5 of the grey levels, robust to a few bright pixels
    glare: float  # share of pixels at or above SATURATION_LEVEL, 0..1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class QualityIssue:
    """One metric past its limit, with the numbers an operator needs to act on it."""

    metric: str  # "focus" | "brightness" | "contrast" | "glare" | "size"
    value: float
    reference: float
    limit: float
    message: str


@dataclass(frozen=True)
class QualityReference:
    """What good frames looked like at calibration time (median over the frames given)."""

    metrics: QualityMetrics
    roi: tuple[int, int, int, int] | None
    image_size: tuple[int, int]  # w, h
    n_frames: int
    spread: dict[str, float] = field(default_factory=dict)  # max relative deviation per metric
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "metrics": self.metrics.to_dict(),
            "roi": list(self.roi) if self.roi else None,
            "image_size": list(self.image_size),
            "n_frames": self.n_frames,
            "spread": self.spread,
            "created": self.created,
        }

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> QualityReference:
        """Read a reference written by ``save``; every missing or bad field is named."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise QualityError(f"{path}: quality reference file not found") from None
        except json.JSONDecodeError as exc:
            raise QualityError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
            raise QualityError(f"{path}: expected a quality reference with format {REFERENCE_FORMAT}")
        try:
            m = data["metrics"]
            metrics = QualityMetrics(**{k: float(m[k]) for k in ("focus", "brightness", "contrast", "glare")})
            roi = tuple(int(v) for v in data["roi"]) if data.get("roi") else None
            size = tuple(int(v) for v in data["image_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise QualityError(f"{path}: missing or bad field in quality reference ({exc!r})") from None
        if (roi is not None and len(roi) != 4) or len(size) != 2:
            raise QualityError(f"{path}: roi must be [x, y, w, h] and image_size [w, h]")
        bad = [k for k, v in metrics.to_dict().items() if not (math.isfinite(v) and v >= 0)]
        if bad:  # NaN compares false with everything: the check would never alarm
            raise QualityError(f"{path}: metrics {', '.join(bad)} must be finite numbers of 0 "
                               f"or more (run station calibrate check again)")
        return cls(
            metrics=metrics,
            roi=roi,
            image_size=size,
            n_frames=int(data.get("n_frames", 0)),
            spread={k: float(v) for k, v in (data.get("spread") or {}).items()},
            created=str(data.get("created", "")),
        )


def clip_roi(roi: tuple[int, int, int, int] | None, width: int, height: int) -> tuple[int, int, int, int]:
    """The part of ``roi`` inside the frame; no ROI (or all zeros) means the whole frame."""
    if roi is None or tuple(roi) == (0, 0, 0, 0):
        return 0, 0, width, height
    x, y, w, h = (int(v) for v in roi)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise QualityError(f"ROI {tuple(roi)} leaves less than 8x8 pixels inside a {width}x{height} frame")
    return x0, y0, x1 - x0, y1 - y0


def _gray(frame: np.ndarray) -> np.ndarray:
    """``to_gray``, with a bad frame reported as a ``QualityError``."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
        raise QualityError(f"expected an image array (H, W) or (H, W, C), got {type(frame).__name__}")
    try:
        return to_gray(frame)
    except ValueError as exc:
        raise QualityError(str(exc)) from None


def measure(frame: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> QualityMetrics:
    """Measure focus, brightness, contrast and glare of ``frame`` inside ``roi`` (x, y, w, h)."""
    gray = _gray(frame)
    x, y, w, h = clip_roi(roi, gray.shape[1], gray.shape[0])
    region = gray[y : y + h, x : x + w]
    lap = cv2.Laplacian(region, cv2.CV_64F, ksize=3)
    p5, p95 = np.percentile(region, (5, 95))
    return QualityMetrics(
        focus=float(lap.var()),
        brightness=float(region.mean()),
        contrast=float(p95 - p5),
        glare=float(np.count_nonzero(region >= SATURATION_LEVEL) / region.size),
    )


class QualityMonitor:
    """Compares frames with the calibration-time reference; empty list = image is fine."""

    def __init__(self, reference: QualityReference, limits: QualitySection | None = None,
                 interval_s: float = 0.0) -> None:
        self.reference = reference
        self.limits = limits or QualitySection()  # the recipe's [quality] limits
        self.interval_s = float(interval_s)  # 0 = check at start-up only
        self._last_check: float | None = None

    def check_if_due(self, frame: np.ndarray, now: float | None = None) -> list[QualityIssue] | None:
        """``check`` on the first call and then every ``interval_s``; None when not due yet.

        Lets the inspection loop hand over every frame without measuring each one.
        """
        now = time.monotonic() if now is None else now
        if self._last_check is not None and (self.interval_s <= 0 or now - self._last_check < self.interval_s):
            return None
        self._last_check = now
        return self.check(frame)

    @classmethod
    def from_recipe_params(cls, params: QualitySection,
                           recipe_path: Path | None = None) -> QualityMonitor | None:
        """Monitor for the recipe's ``[quality]`` table, or None when it is off or has no reference.

        A relative ``reference`` path is taken relative to the recipe file, where
        ``station calibrate check`` writes it.
        """
        if not params.enabled or not params.reference:
            return None
        ref_path = Path(params.reference)
        if not ref_path.is_absolute() and recipe_path is not None:
            ref_path = Path(recipe_path).parent / ref_path
        return cls(QualityReference.load(ref_path), params, params.interval_s)

    def check(self, frame: np.ndarray) -> list[QualityIssue]:
        gray = _gray(frame)
        size = (gray.shape[1], gray.shape[0])
        if tuple(self.reference.image_size) != size:
            w, h = self.reference.image_size
            return [
                QualityIssue(
                    "size", float(size[0] * size[1]), float(w * h), 0.0,
                    f"frame is {size[0]}x{size[1]} but the quality reference was taken at {w}x{h}",
                )
            ]
        return self.compare(measure(gray, self.reference.roi))

    def compare(self, m: QualityMetrics) -> list[QualityIssue]:
        """Issues for already-measured metrics (lets callers measure once and log the numbers)."""
        ref, lim = self.reference.metrics, self.limits
        issues: list[QualityIssue] = []
        focus_min = ref.focus * (1.0 - lim.focus_drop)
        if m.focus < focus_min:
            issues.append(QualityIssue(
                "focus", m.focus, ref.focus, focus_min,
                f"image is blurred: focus {m.focus:.1f} is below {focus_min:.1f} "
                f"({_pct(m.focus, ref.focus)} of the reference {ref.focus:.1f}); check the lens focus",
            ))
        shift = m.brightness - ref.brightness
        if abs(shift) > lim.brightness_shift:
            word = "darker" if shift < 0 else "brighter"
            issues.append(QualityIssue(
                "brightness", m.brightness, ref.brightness, lim.brightness_shift,
                f"image is {word}: mean grey {m.brightness:.1f} vs reference {ref.brightness:.1f} "
                f"(shift {shift:+.1f}, limit ±{lim.brightness_shift:.0f}); check the lighting and exposure",
            ))
        contrast_min = ref.contrast * (1.0 - lim.contrast_drop)
        if m.contrast < contrast_min:
            issues.append(QualityIssue(
                "contrast", m.contrast, ref.contrast, contrast_min,
                f"contrast {m.contrast:.1f} is below {contrast_min:.1f} "
                f"({_pct(m.contrast, ref.contrast)} of the reference {ref.contrast:.1f}); "
                "check the lighting, the lens and the camera gain",
            ))
        glare_max = ref.glare + lim.glare_frac
        if m.glare > glare_max:
            issues.append(QualityIssue(
                "glare", m.glare, ref.glare, glare_max,
                f"{m.glare:.1%} of the region is saturated (limit {glare_max:.1%}); "
                "reduce exposure or move the light to remove reflections",
            ))
        return issues


def _pct(value: float, ref: float) -> str:
    return f"{value / ref:.0%}" if ref > 0 and math.isfinite(value) else "n/a"
