"""Where each calibration step leaves its short report (text + pictures) for the engineer."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CalibrationError(ValueError):
    """A calibration step that cannot produce a trustworthy result; the message says why."""


def report_dir(recipe_path: Path, step: str, explicit: Path | None = None) -> Path:
    """``explicit`` or ``<recipe dir>/calibration/<step>-<timestamp>/``, created."""
    if explicit is not None:
        out = Path(explicit)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(recipe_path).resolve().parent / "calibration" / f"{step}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_text(directory: Path, lines: list[str], name: str = "report.txt") -> Path:
    path = Path(directory) / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_image(directory: Path, name: str, image: np.ndarray) -> Path:
    path = Path(directory) / name
    if not cv2.imwrite(str(path), image):
        raise CalibrationError(f"could not write report image {path}")
    return path


def list_images(directory: Path) -> list[Path]:
    """Image files in ``directory`` (sorted); a missing or empty folder is a clear error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CalibrationError(f"{directory}: not a folder of images")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


def read_image(path: Path, mode: str = "keep") -> np.ndarray:
    """Read one image as 8-bit (``mode``: keep, gray, color) or fail naming the file."""
    from station.sources.datasets import DatasetError, load_image, to_uint8

    try:
        return to_uint8(load_image(path, mode))
    except DatasetError as exc:
        raise CalibrationError(str(exc)) from None
