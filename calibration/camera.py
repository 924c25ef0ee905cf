"""Camera intrinsics and lens distortion from checkerboard views.

A distorted lens bends straight edges and makes the same part look longer at the edge of the
field than in the middle, so crops and millimetre measurements drift with position. The
calibration is only as good as the views: corners must cover the whole field (distortion is
largest in the corners of the image) and there must be enough tilted views to separate focal
length from distance. The report says so when either is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.report import CalibrationError

MIN_VIEWS = 5  # below this the focal length and distortion are poorly separated
GOOD_VIEWS = 10
COVERAGE_GRID = (3, 3)  # columns, rows of the field-of-view check
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
_CELL_NAMES = {
    (0, 0): "top-left", (1, 0): "top-centre", (2, 0): "top-right",
    (0, 1): "middle-left", (1, 1): "centre", (2, 1): "middle-right",
    (0, 2): "bottom-left", (1, 2): "bottom-centre", (2, 2): "bottom-right",
}


def parse_pattern(text: str) -> tuple[int, int]:
    """``"9x6"`` -> (9, 6): inner corners per row and per column."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--pattern {text!r}: expected inner corners as COLSxROWS, e.g. 9x6") from None
    if cols < 2 or rows < 2:
        raise CalibrationError(f"--pattern {text!r}: need at least 2x2 inner corners")
    return cols, rows


def board_points(pattern: tuple[int, int], square_mm: float) -> np.ndarray:
    """The board's inner corners in board coordinates (mm, z = 0), row by row."""
    cols, rows = pattern
    grid = np.zeros((rows * cols, 3), np.float32)
    grid[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * float(square_mm)
    return grid


def find_corners(image: np.ndarray, pattern: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners (N, 1, 2) float32, or None when the whole board is not seen."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=flags)
    if not found:
        found, corners = cv2.findChessboardCornersSB(gray, pattern)
        if not found:
            return None
        return corners.astype(np.float32).reshape(-1, 1, 2)
    # Search window: a bit under half the smallest corner spacing, so it never reaches a
    # neighbouring corner on small or far boards.
    pts = corners.reshape(-1, 2)
    spacing = np.linalg.norm(np.diff(pts.reshape(pattern[1], pattern[0], 2), axis=1), axis=2).min()
    win = int(max(2, min(11, spacing * 0.4)))
    cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), SUBPIX_CRITERIA)
    return corners


@dataclass
class CameraCalibration:
    """Result of ``calibrate_camera`` plus the numbers that say whether to trust it."""

    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    image_size: tuple[int, int]
    rms: float
    per_image_error: dict[str, float]
    used: list[str]
    rejected: list[str]  # no board found
    coverage: np.ndarray  # (rows, cols) bool: grid cells that contain at least one corner
    image_points: list[np.ndarray] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def uncovered_regions(self) -> list[str]:
        rows, cols = self.coverage.shape
        return [_cell_name(c, r, cols, rows) for r in range(rows) for c in range(cols) if not self.coverage[r, c]]

    def report_lines(self) -> list[str]:
        k, d = self.camera_matrix, self.dist_coeffs.ravel()
        lines = [
            f"views used: {len(self.used)} (board not found in {len(self.rejected)})",
            f"image size: {self.image_size[0]}x{self.image_size[1]}",
            f"RMS reprojection error: {self.rms:.3f} px",
            f"fx = {k[0, 0]:.2f}, fy = {k[1, 1]:.2f}, cx = {k[0, 2]:.2f}, cy = {k[1, 2]:.2f} (px)",
            "distortion (k1, k2, p1, p2, k3): " + ", ".join(f"{v:+.5f}" for v in d[:5]),
            "per-image RMS error (px):",
        ]
        worst = max(self.per_image_error.values(), default=0.0)
        for name, err in self.per_image_error.items():
            flag = "  <- worst" if err == worst and len(self.per_image_error) > 1 else ""
            lines.append(f"  {name}: {err:.3f}{flag}")
        if self.rejected:
            lines.append("board not found in: " + ", ".join(self.rejected))
        rows, cols = self.coverage.shape
        lines.append(f"field-of-view coverage ({cols}x{rows} cells): {int(self.coverage.sum())}/{rows * cols}")
        lines += [f"WARNING: {w}" for w in self.warnings]
        if not self.warnings:
            lines.append("no warnings: views and coverage are sufficient")
        return lines


def _cell_name(col: int, row: int, cols: int, rows: int) -> str:
    if (cols, rows) == COVERAGE_GRID:
        return _CELL_NAMES[(col, row)]
    return f"cell (column {col + 1}, row {row + 1})"


def coverage_grid(corner_sets: list[np.ndarray], image_size: tuple[int, int],
                  grid: tuple[int, int] = COVERAGE_GRID) -> np.ndarray:
    """Which cells of a cols x rows grid over the image hold at least one detected corner."""
    w, h = image_size
    cols, rows = grid
    covered = np.zeros((rows, cols), bool)
    for corners in corner_sets:
        pts = corners.reshape(-1, 2)
        c = np.clip((pts[:, 0] / w * cols).astype(int), 0, cols - 1)
        r = np.clip((pts[:, 1] / h * rows).astype(int), 0, rows - 1)
        covered[r, c] = True
    return covered


def calibrate_camera(
    images: list[tuple[str, np.ndarray]],
    pattern: tuple[int, int],
    square_mm: float,
    fix_k3: bool = True,
) -> CameraCalibration:
    """Intrinsics from named checkerboard images (all the same size).

    ``fix_k3`` keeps the third radial term at zero: with the usual 10-30 views it only fits
    noise, and a wild k3 makes the image corners worse, not better.
    """
    if square_mm <= 0:
        raise CalibrationError(f"--square-mm {square_mm}: expected the square size in mm (> 0)")
    if not images:
        raise CalibrationError("no checkerboard images given")
    size = (images[0][1].shape[1], images[0][1].shape[0])
    obj = board_points(pattern, square_mm)
    object_points, image_points, used, rejected = [], [], [], []
    for name, image in images:
        if (image.shape[1], image.shape[0]) != size:
            raise CalibrationError(
                f"{name}: image is {image.shape[1]}x{image.shape[0]}, the others are {size[0]}x{size[1]}; "
                "all calibration images must come from the same camera mode"
            )
        corners = find_corners(image, pattern)
        if corners is None:
            rejected.append(name)
            continue
        object_points.append(obj)
        image_points.append(corners)
        used.append(name)
    if len(used) < 3:
        raise CalibrationError(
            f"found the {pattern[0]}x{pattern[1]} board in only {len(used)} of {len(images)} images; "
            f"need at least 3 (better {GOOD_VIEWS}+). Check --pattern (inner corners, e.g. 9x6 for a "
            "10x7-square board) and that the whole board is in view"
        )
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    rms, k, d, rvecs, tvecs = cv2.calibrateCamera(object_points, image_points, size, None, None, flags=flags)
    per_image: dict[str, float] = {}
    for name, o, i, r, t in zip(used, object_points, image_points, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, r, t, k, d)
        per_image[name] = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - i.reshape(-1, 2)) ** 2, axis=1))))
    cov = coverage_grid(image_points, size)
    result = CameraCalibration(k, d.ravel(), size, float(rms), per_image, used, rejected, cov, image_points)
    if len(used) < MIN_VIEWS:
        result.warnings.append(
            f"only {len(used)} usable views: take at least {GOOD_VIEWS}, with the board tilted "
            "(about ±30°) in different directions"
        )
    missing = result.uncovered_regions()
    if missing:
        result.warnings.append(
            "poor field-of-view coverage: no board corners in the " + ", ".join(missing)
            + " region(s); add views with the board there (distortion is largest near the edges)"
        )
    if rms > 1.0:
        result.warnings.append(
            f"RMS reprojection error {rms:.2f} px is high (good: < 0.5 px); drop blurred views "
            "or check the board is flat and --square-mm is right"
        )
    return result


def draw_coverage(calib: CameraCalibration) -> np.ndarray:
    """A picture of every detected corner over the coverage grid (uncovered cells in red)."""
    w, h = calib.image_size
    coverage, corner_sets = calib.coverage, calib.image_points
    canvas = np.full((h, w, 3), 255, np.uint8)
    rows, cols = coverage.shape
    for r in range(rows):
        for c in range(cols):
            x0, y0 = int(c * w / cols), int(r * h / rows)
            x1, y1 = int((c + 1) * w / cols), int((r + 1) * h / rows)
            if not coverage[r, c]:
                canvas[y0:y1, x0:x1] = (200, 200, 255)
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (128, 128, 128), 1)
    for corners in corner_sets:
        for x, y in corners.reshape(-1, 2):
            cv2.circle(canvas, (int(round(x)), int(round(y))), 2, (200, 80, 0), -1)
    return canvas


def load_views(paths: list[Path]) -> list[tuple[str, np.ndarray]]:
    from calibration.report import read_image

    return [(p.name, read_image(p, "gray")) for p in paths]
