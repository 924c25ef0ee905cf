"""numpy images (uint8 grey or BGR, as the engine hands them out) to Qt images.

The one converter for the window and the calibration dialogs.
"""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtGui import QImage


def to_qimage(image: np.ndarray, *, stretch: bool = False) -> QImage:
    """A QImage that owns a copy of ``image`` (grey HxW or BGR HxWx3).

    Data that is not uint8 is clipped to 0..255, or with ``stretch`` scaled so that its
    maximum is white (a raw 16-bit camera frame in the ROI editor).
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        if stretch:
            a = cv2.convertScaleAbs(a, alpha=255.0 / max(1, int(a.max())))
        else:
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
