"""Lens undistortion with maps computed once from the recipe's intrinsics.

``cv2.undistort`` recomputes its maps on every call; at camera frame rates that is wasted
work, so the maps are built once (``cv2.initUndistortRectifyMap``) and each frame costs one
``cv2.remap``. The output keeps the camera matrix, so pixel scale and ROI stay comparable
with what ``station calibrate`` measured on undistorted frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class UndistortError(ValueError):
    """Intrinsics that cannot be used, or a frame that does not fit them; says which."""


DIST_COEFF_COUNTS = (4, 5, 8, 12, 14)  # what cv2.initUndistortRectifyMap accepts


def intrinsics_problem(camera_matrix: Any, dist_coeffs: Any) -> str | None:
    """Why intrinsics cannot undistort (``undistort.key: expected ...; got ...``), or None.

    The recipe loader calls this too, so a singular or malformed matrix is refused at load
    instead of failing on every part. An intrinsics matrix is [[fx, s, cx], [0, fy, cy],
    [0, 0, 1]] with fx, fy > 0, everything finite, and so never singular.
    """
    try:
        k = np.asarray(camera_matrix, dtype=np.float64)
        d = np.asarray(dist_coeffs, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        return "undistort.camera_matrix: expected numbers"
    shown = k.tolist() if k.size <= 16 else f"an array of shape {k.shape}"
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        return f"undistort.camera_matrix: expected a 3x3 matrix of finite numbers; got {shown}"
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        return f"undistort.camera_matrix: expected positive fx, fy; got {shown}"
    if k[1, 0] != 0 or k[2].tolist() != [0.0, 0.0, 1.0]:
        return ("undistort.camera_matrix: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                f"(an intrinsics matrix); got {shown}")
    with np.errstate(all="ignore"):
        det = float(np.linalg.det(k))
    if not np.isfinite(det) or det == 0.0 or not np.isfinite(np.linalg.cond(k)):
        return f"undistort.camera_matrix: expected an invertible matrix; got {shown}"
    if d.size not in DIST_COEFF_COUNTS or not np.all(np.isfinite(d)):
        return (f"undistort.dist_coeffs: expected 4, 5, 8, 12 or 14 finite numbers; got "
                f"{d.tolist() if d.size <= 16 else f'{d.size} numbers'}")
    return None


@dataclass
class Undistorter:
    """Precomputed remap tables for one camera matrix, distortion and frame size."""

    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    image_size: tuple[int, int]  # w, h
    map1: np.ndarray
    map2: np.ndarray

    @classmethod
    def from_intrinsics(
        cls,
        camera_matrix: Any,
        dist_coeffs: Any,
        image_size: tuple[int, int] | list[int],
        new_camera_matrix: Any | None = None,
    ) -> Undistorter:
        """Build the maps; ``new_camera_matrix`` defaults to the camera matrix itself."""
        problem = intrinsics_problem(camera_matrix, dist_coeffs)
        if problem:
            raise UndistortError(problem)
        k = np.asarray(camera_matrix, dtype=np.float64)
        d = np.asarray(dist_coeffs, dtype=np.float64).ravel()
        try:
            w, h = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise UndistortError(f"undistort.image_size: expected [w, h]; got {image_size!r}") from None
        if w <= 0 or h <= 0:
            raise UndistortError(f"undistort.image_size: expected positive [w, h]; got {[w, h]}")
        new_k = k if new_camera_matrix is None else np.asarray(new_camera_matrix, dtype=np.float64)
        map1, map2 = cv2.initUndistortRectifyMap(k, d, None, new_k, (w, h), cv2.CV_16SC2)
        return cls(k, d, (w, h), map1, map2)

    @classmethod
    def from_recipe(cls, recipe_or_section: Any) -> Undistorter | None:
        """Undistorter for a recipe (or its ``[undistort]`` section); None when disabled."""
        section = getattr(recipe_or_section, "undistort", recipe_or_section)
        if section is None or not getattr(section, "enabled", False):
            return None
        matrix = getattr(section, "camera_matrix", None)
        if matrix is None or len(matrix) == 0:
            raise UndistortError(
                "undistort.enabled is true but undistort.camera_matrix is empty; "
                "run `station calibrate camera` first"
            )
        return cls.from_intrinsics(matrix, section.dist_coeffs, section.image_size)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The undistorted frame (same size and dtype)."""
        h, w = frame.shape[:2]
        if (w, h) != tuple(self.image_size):
            raise UndistortError(
                f"frame is {w}x{h} but the camera was calibrated at "
                f"{self.image_size[0]}x{self.image_size[1]}; recalibrate or fix the camera resolution"
            )
        return cv2.remap(frame, self.map1, self.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
