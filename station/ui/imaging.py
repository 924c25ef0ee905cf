"""numpy images (uint8 grey or BGR, as the engine hands them out) to Qt images."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage


def to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns a copy of ``image`` (grey HxW or BGR HxWx3, uint8)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    if a.ndim == 2:
        return QImage(a.data, w, h, a.strides[0], QImage.Format.Format_Grayscale8).copy()
    if a.ndim == 3 and a.shape[2] == 3:
        return QImage(a.data, w, h, a.strides[0], QImage.Format.Format_BGR888).copy()
    raise ValueError(f"to_qimage: expected a grey (HxW) or BGR (HxWx3) image, got {a.shape}")
