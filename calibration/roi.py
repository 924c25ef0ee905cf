"""The region of interest: where parts are searched for, proposed from real frames.

A tight ROI makes localization faster and keeps belts, rails and labels out of the search;
too tight and a part that runs a little off-centre is cut off (status ``border``). The
proposal is the union of every part found in the sample frames, widened by a margin, so the
engineer sees the spread the line actually has. The report also gives the part-length range
and the resulting crop scale (crop pixels per frame pixel), which decides how much detail
the models see.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.report import CalibrationError
from station.vision.align import AlignParams, crop_side_px
from station.vision.localize import Localization, LocalizeParams, localize

Roi = tuple[int, int, int, int]


def parse_roi(text: str) -> Roi:
    """``"x,y,w,h"`` -> tuple; a clear error for anything else."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise CalibrationError(f"--roi {text!r}: expected four integers x,y,w,h") from None
    if len(values) != 4 or values[0] < 0 or values[1] < 0 or values[2] <= 0 or values[3] <= 0:
        raise CalibrationError(f"--roi {text!r}: expected x,y >= 0 and w,h > 0 (x,y,w,h)")
    return values  # type: ignore[return-value]


def check_roi(roi: Roi, image_size: tuple[int, int]) -> None:
    """The ROI must lie inside the frame (``image_size`` = w, h)."""
    x, y, w, h = roi
    fw, fh = image_size
    if x + w > fw or y + h > fh:
        raise CalibrationError(f"ROI {roi} reaches outside the {fw}x{fh} frame (x + w <= {fw}, y + h <= {fh})")


@dataclass
class RoiProposal:
    """The proposed ROI and what the sample frames showed."""

    roi: Roi
    image_size: tuple[int, int]
    found: dict[str, Localization]
    missed: dict[str, Localization]
    lengths_px: list[float] = field(default_factory=list)
    crop_scales: list[float] = field(default_factory=list)  # model crop px per frame px
    warnings: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        lines = [
            f"frames: {len(self.found) + len(self.missed)}, part found in {len(self.found)}",
            f"proposed ROI (x, y, w, h): {self.roi} in a {self.image_size[0]}x{self.image_size[1]} frame",
        ]
        if self.lengths_px:
            lengths = np.asarray(self.lengths_px)
            lines.append(
                f"part length: {lengths.min():.1f} .. {lengths.max():.1f} px "
                f"(median {np.median(lengths):.1f})"
            )
        if self.crop_scales:
            scales = np.asarray(self.crop_scales)
            lines.append(
                f"crop scale (model pixels per frame pixel): {scales.min():.3f} .. {scales.max():.3f}"
                + ("  (the crop shrinks the part: fine detail below ~1/scale px is lost)" if scales.max() < 1 else "")
            )
        for name, loc in self.missed.items():
            lines.append(f"no usable part in {name}: {loc.status} ({loc.message})")
        return lines + [f"WARNING: {w}" for w in self.warnings]


def propose_roi(
    images: list[tuple[str, np.ndarray]],
    localize_params: LocalizeParams | None = None,
    align_params: AlignParams | None = None,
    crop_size: int = 256,
    margin_frac: float = 0.15,
) -> RoiProposal:
    """Union of the part boxes found in ``images`` (searching the whole frame), plus a margin.

    The margin is ``margin_frac`` of the longest part on each side, so a part that runs a bit
    further off than any in the sample still fits.
    """
    if not images:
        raise CalibrationError("no images given to propose an ROI from")
    params = dataclasses.replace(localize_params or LocalizeParams(), roi=(0, 0, 0, 0))
    align_params = align_params or AlignParams()
    h, w = images[0][1].shape[:2]
    found: dict[str, Localization] = {}
    missed: dict[str, Localization] = {}
    for name, image in images:
        if image.shape[:2] != (h, w):
            raise CalibrationError(f"{name}: image is {image.shape[1]}x{image.shape[0]}, the first was {w}x{h}")
        loc = localize(image, params)
        (found if loc.ok and loc.box is not None else missed)[name] = loc
    if not found:
        reasons = "; ".join(f"{n}: {loc.status} ({loc.message})" for n, loc in list(missed.items())[:5])
        raise CalibrationError(f"no part found in any of the {len(images)} images ({reasons})")
    boxes = np.array([loc.box for loc in found.values()], dtype=np.float64)
    lengths = [float(loc.length_px) for loc in found.values() if loc.length_px]
    margin = margin_frac * (max(lengths) if lengths else float(np.max(boxes[:, 2:])))
    x0 = max(0, int(np.floor(boxes[:, 0].min() - margin)))
    y0 = max(0, int(np.floor(boxes[:, 1].min() - margin)))
    x1 = min(w, int(np.ceil((boxes[:, 0] + boxes[:, 2]).max() + margin)))
    y1 = min(h, int(np.ceil((boxes[:, 1] + boxes[:, 3]).max() + margin)))
    scales = [crop_size / crop_side_px(loc, align_params) for loc in found.values()]
    proposal = RoiProposal((x0, y0, x1 - x0, y1 - y0), (w, h), found, missed, lengths, scales)
    if missed:
        proposal.warnings.append(
            f"{len(missed)} of {len(images)} frames had no usable part; check them (see list above)"
        )
    if lengths and (max(lengths) - min(lengths)) / max(lengths) > 0.15:
        proposal.warnings.append(
            "part length varies by more than 15 %: mixed products, tilted parts or a localization "
            "problem; with crop_mode=length the crops differ in scale"
        )
    if (x0, y0, x1, y1) == (0, 0, w, h):
        proposal.warnings.append("the proposed ROI is the whole frame: parts run everywhere or the margin is large")
    return proposal


def draw_roi(image: np.ndarray, roi: Roi, locs: list[Localization] | None = None) -> np.ndarray:
    """Frame with the ROI (green) and the found part boxes (orange), for the report."""
    canvas = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if canvas.dtype != np.uint8:
        canvas = cv2.convertScaleAbs(canvas, alpha=255.0 / max(1, int(canvas.max())))
    thick = max(1, round(max(canvas.shape[:2]) / 400))
    for loc in locs or []:
        if loc.box is not None:
            bx, by, bw, bh = loc.box
            cv2.rectangle(canvas, (bx, by), (bx + bw - 1, by + bh - 1), (0, 140, 255), thick)
    x, y, w, h = roi
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), (0, 200, 0), thick * 2)
    return canvas
