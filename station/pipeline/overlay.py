"""The anomaly heatmap drawn over a part's crop: for the records' images and the window."""

from __future__ import annotations

import numpy as np


def heatmap_overlay(crop: np.ndarray, heatmap: np.ndarray, opacity: float = 0.5,
                    vmax: float = 1.5) -> np.ndarray:
    """BGR image of ``crop`` with ``heatmap`` (1.0 = threshold) over it in JET colours."""
    import cv2

    base = crop if crop.ndim == 3 else cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    h = np.clip(np.nan_to_num(heatmap) / vmax, 0.0, 1.0)
    if h.shape[:2] != base.shape[:2]:
        h = cv2.resize(h, (base.shape[1], base.shape[0]))
    colour = cv2.applyColorMap((h * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (opacity * np.clip(h * 1.5, 0.0, 1.0))[..., None]
    return (base * (1 - alpha) + colour * alpha).astype(np.uint8)
