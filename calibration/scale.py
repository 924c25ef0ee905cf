"""Millimetres per pixel from a target of known size, with its uncertainty.

Part lengths and defect sizes are shown in millimetres; the conversion comes from a target
placed where the parts run (same working distance), on an undistorted frame. Two targets:
a checkerboard of known square size (every inner corner enters a lattice fit, whose residuals
give the uncertainty) or a disc/circle of known diameter (one edge, so the
uncertainty comes from the edge position and from how round the fitted outline is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.camera import find_corners
from calibration.report import CalibrationError

# Systematic uncertainty of where a blurred edge is placed by a grey-level threshold (per edge);
# averaging round the circle does not reduce it, so it sets the floor of the circle's error.
EDGE_UNCERTAINTY_PX = 0.25


@dataclass(frozen=True)
class ScaleEstimate:
    """``mm_per_px`` with its standard uncertainty (same unit) and how it was measured."""

    mm_per_px: float
    uncertainty: float
    method: str
    n_measurements: int
    detail: str
    overlay: np.ndarray | None = field(default=None, repr=False, compare=False)  # report picture

    @property
    def relative_uncertainty(self) -> float:
        return self.uncertainty / self.mm_per_px

    def report_lines(self) -> list[str]:
        return [
            f"target: {self.method}",
            f"mm per pixel: {self.mm_per_px:.6f} ± {self.uncertainty:.6f} "
            f"({self.relative_uncertainty:.2%}, 1 sigma)",
            f"pixels per mm: {1.0 / self.mm_per_px:.4f}",
            f"measurements: {self.n_measurements}",
            self.detail,
            "note: valid only at the working distance of the target and on undistorted frames",
        ]


def scale_from_checkerboard(image: np.ndarray, pattern: tuple[int, int], square_mm: float) -> ScaleEstimate:
    """Corner spacing (lattice fit over all inner corners) against ``square_mm``."""
    if square_mm <= 0:
        raise CalibrationError(f"--size-mm {square_mm}: expected the square size in mm (> 0)")
    corners = find_corners(image, pattern)
    if corners is None:
        raise CalibrationError(
            f"no {pattern[0]}x{pattern[1]} checkerboard (inner corners) found in the image; "
            "check --pattern and that the whole board is in view"
        )
    cols, rows = pattern
    grid = corners.reshape(rows, cols, 2).astype(np.float64)
    spacings = np.concatenate([
        np.linalg.norm(np.diff(grid, axis=1), axis=2).ravel(),
        np.linalg.norm(np.diff(grid, axis=0), axis=2).ravel(),
    ])
    median_px = float(np.median(spacings))
    # Least-squares lattice fit (image = A @ board + t) over every corner: single spacings
    # carry the corner detector's pixel-phase error (~0.1 px), which the fit averages out
    # while a median of spacings does not.
    u, v = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))
    design = np.column_stack([u.ravel(), v.ravel(), np.ones(u.size)])
    coef, *_ = np.linalg.lstsq(design, grid.reshape(-1, 2), rcond=None)
    residual = grid.reshape(-1, 2) - design @ coef
    dof = max(1, u.size - 3)
    sigma_pt = float(np.sqrt(np.sum(residual**2) / (2 * dof)))
    col_px, row_px = float(np.linalg.norm(coef[0])), float(np.linalg.norm(coef[1]))
    px = (col_px + row_px) / 2.0
    se_col = sigma_pt / math.sqrt(float(np.sum((u - u.mean()) ** 2)))
    se_row = sigma_pt / math.sqrt(float(np.sum((v - v.mean()) ** 2)))
    # Random error of the fit, plus half the row/column disagreement (tilt or lens distortion
    # make the scale depend on direction; that is part of the uncertainty, not noise).
    sigma_px = math.sqrt((se_col**2 + se_row**2) / 4.0 + ((col_px - row_px) / 2.0) ** 2)
    rel = sigma_px / px
    mm_per_px = square_mm / px
    tilt = abs(col_px - row_px) / px
    nonlinear = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    detail = (
        f"square = {px:.4f} px from a lattice fit over {u.size} corners (along rows {col_px:.4f}, "
        f"along columns {row_px:.4f}; fit residual {nonlinear:.3f} px RMS; median corner spacing "
        f"{median_px:.3f} px) for {square_mm} mm squares"
    )
    if tilt > 0.01 or nonlinear > 0.5:
        detail += ("; WARNING: the board looks tilted or distorted (row/column scales differ or the "
                   "corners do not lie on a regular grid): lay it flat, square to the camera, and "
                   "undistort first")
    overlay = _bgr(image)
    cv2.drawChessboardCorners(overlay, pattern, corners, True)
    return ScaleEstimate(mm_per_px, mm_per_px * rel, f"checkerboard {cols}x{rows}", int(u.size), detail, overlay)


def scale_from_circle(image: np.ndarray, diameter_mm: float) -> ScaleEstimate:
    """Diameter of the largest round blob (disc or ring's outer edge) against ``diameter_mm``."""
    if diameter_mm <= 0:
        raise CalibrationError(f"--size-mm {diameter_mm}: expected the circle diameter in mm (> 0)")
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    _, mask = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    best: tuple[float, np.ndarray] | None = None
    for candidate in (mask, 255 - mask):  # disc may be darker or lighter than the background
        contours, _ = cv2.findContours(candidate, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for c in contours:
            if len(c) < 20 or _touches_border(c, gray.shape):
                continue
            area = cv2.contourArea(c)
            perimeter = cv2.arcLength(c, True)
            if area < 100 or perimeter <= 0:
                continue
            circularity = 4 * math.pi * area / perimeter**2
            if circularity < 0.8:
                continue
            if best is None or area > best[0]:
                best = (area, c)
    if best is None:
        raise CalibrationError(
            "no round target found (looked for a disc or circle fully inside the image, "
            "contrasting with its background, circularity > 0.8)"
        )
    contour = best[1]
    (cx, cy), (a, b), _ = cv2.fitEllipse(contour)
    pts = contour.reshape(-1, 2).astype(np.float64)
    # Sub-pixel radius: mean distance of the threshold boundary from the centre, measured on
    # the grey levels along each boundary ray (more accurate than the pixel contour).
    radii = _subpixel_radii(blurred, (cx, cy), pts, threshold=float(_otsu(blurred)))
    d_px = 2.0 * float(np.mean(radii))
    ellipse_d = (a + b) / 2.0
    roundness = abs(a - b) / max(a, b)
    # Random part (spread of the radii), systematic edge placement on both sides, and the
    # disagreement between the sub-pixel trace and the pixel-contour ellipse fit.
    sem_d = 2.0 * float(np.std(radii, ddof=1)) / math.sqrt(len(radii))
    sigma_d = math.sqrt(sem_d**2 + 2.0 * EDGE_UNCERTAINTY_PX**2 + ((d_px - ellipse_d) / 2.0) ** 2)
    mm_per_px = diameter_mm / d_px
    detail = (
        f"diameter {d_px:.3f} px (ellipse fit {a:.2f} x {b:.2f} px, out-of-round {roundness:.1%}) "
        f"for {diameter_mm} mm at centre ({cx:.1f}, {cy:.1f})"
    )
    if roundness > 0.03:
        detail += "; WARNING: the circle looks elliptical, the target is tilted or the lens is distorted"
    overlay = _bgr(image)
    thick = max(1, round(max(overlay.shape[:2]) / 500))
    cv2.circle(overlay, (round(cx), round(cy)), round(d_px / 2), (0, 200, 0), thick, cv2.LINE_AA)
    cv2.drawMarker(overlay, (round(cx), round(cy)), (0, 0, 255), cv2.MARKER_CROSS, 12, thick)
    return ScaleEstimate(mm_per_px, mm_per_px * sigma_d / d_px, "circle", len(radii), detail, overlay)


def _bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()


def _touches_border(contour: np.ndarray, shape: tuple[int, ...]) -> bool:
    x, y, w, h = cv2.boundingRect(contour)
    return x <= 1 or y <= 1 or x + w >= shape[1] - 1 or y + h >= shape[0] - 1


def _otsu(gray: np.ndarray) -> float:
    t, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return t


def _subpixel_radii(gray: np.ndarray, centre: tuple[float, float], boundary: np.ndarray,
                    threshold: float, n_rays: int = 360) -> np.ndarray:
    """Radius at which the grey level crosses ``threshold`` along rays from the centre."""
    cx, cy = centre
    r0 = float(np.median(np.hypot(boundary[:, 0] - cx, boundary[:, 1] - cy)))
    angles = np.linspace(0, 2 * math.pi, n_rays, endpoint=False)
    steps = np.linspace(r0 - 4.0, r0 + 4.0, 161)
    xs = (cx + np.outer(np.cos(angles), steps)).astype(np.float32)
    ys = (cy + np.outer(np.sin(angles), steps)).astype(np.float32)
    profiles = cv2.remap(gray.astype(np.float32), xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    radii = []
    for prof in profiles:
        s = np.sign(prof - threshold)
        idx = np.nonzero(np.diff(s) != 0)[0]
        if idx.size == 0:
            continue
        i = idx[np.argmin(np.abs(steps[idx] - r0))]
        v0, v1 = prof[i] - threshold, prof[i + 1] - threshold
        frac = v0 / (v0 - v1) if v0 != v1 else 0.5
        radii.append(steps[i] + frac * (steps[i + 1] - steps[i]))
    if len(radii) < n_rays // 2:
        raise CalibrationError("the circle's edge could not be traced all round; improve contrast or focus")
    return np.asarray(radii)
