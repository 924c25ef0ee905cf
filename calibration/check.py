"""The image-quality reference: what focus, brightness, contrast and glare look like when good.

Taken from several good frames (median, so one odd frame does not set the reference) and
stored as JSON beside the recipe; the station compares live frames against it
(``station.vision.quality.QualityMonitor``). The report also checks the reference frames against
the limits themselves: if the frames given already disagree beyond the limits, the limits
would fire on normal production and the engineer must know now, not on the line.
"""

from __future__ import annotations

import time

import numpy as np

from calibration.report import CalibrationError
from station.config import QualitySection
from station.vision.gray import to_gray
from station.vision.quality import (
    QualityMetrics,
    QualityMonitor,
    QualityReference,
    measure,
)


def build_reference(frames: list[np.ndarray], roi: tuple[int, int, int, int] | None) -> QualityReference:
    """Median metrics of ``frames`` inside ``roi``, with each metric's largest relative deviation."""
    if not frames:
        raise CalibrationError("no frames given for the image-quality reference")
    sizes = {(to_gray(f).shape[1], to_gray(f).shape[0]) for f in frames}
    if len(sizes) != 1:
        raise CalibrationError(f"reference frames differ in size: {sorted(sizes)}; use one camera mode")
    metrics = [measure(f, roi) for f in frames]
    names = ("focus", "brightness", "contrast", "glare")
    table = {n: np.array([getattr(m, n) for m in metrics]) for n in names}
    median = QualityMetrics(**{n: float(np.median(v)) for n, v in table.items()})
    spread = {}
    for n, v in table.items():
        ref = getattr(median, n)
        spread[n] = float(np.max(np.abs(v - ref)) / ref) if ref > 0 else 0.0
    if median.focus <= 1e-6:
        raise CalibrationError("the reference frames have no detail in the ROI (focus = 0); is the ROI on the part?")
    roi_t = tuple(int(v) for v in roi) if roi is not None and tuple(roi) != (0, 0, 0, 0) else None
    return QualityReference(
        metrics=median,
        roi=roi_t,  # type: ignore[arg-type]
        image_size=sizes.pop(),
        n_frames=len(frames),
        spread=spread,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def self_check(reference: QualityReference, frames: list[np.ndarray], limits: QualitySection,
               names: list[str]) -> list[str]:
    """Report lines: reference values, and any reference frame the limits would already flag."""
    m = reference.metrics
    lines = [
        f"frames: {reference.n_frames}, image {reference.image_size[0]}x{reference.image_size[1]}, "
        f"ROI {reference.roi or 'whole frame'}",
        f"focus (variance of Laplacian): {m.focus:.2f}  (spread ±{reference.spread.get('focus', 0):.1%})",
        f"brightness (mean grey): {m.brightness:.2f}  (spread ±{reference.spread.get('brightness', 0):.1%})",
        f"contrast (p95 - p5): {m.contrast:.2f}  (spread ±{reference.spread.get('contrast', 0):.1%})",
        f"glare (saturated share): {m.glare:.3%}",
        f"limits: focus drop {limits.focus_drop:.0%}, brightness shift ±{limits.brightness_shift:g} grey "
        f"levels, contrast drop {limits.contrast_drop:.0%}, glare +{limits.glare_frac:.1%}",
    ]
    monitor = QualityMonitor(reference, limits)
    flagged = 0
    for name, frame in zip(names, frames, strict=True):
        for issue in monitor.check(frame):
            flagged += 1
            lines.append(f"WARNING: reference frame {name} already fails: {issue.message}")
    if flagged:
        lines.append("WARNING: the limits are tighter than the normal variation of these frames; "
                     "widen them in [quality] or fix the setup before production")
    else:
        lines.append("all reference frames pass the limits")
    return lines
