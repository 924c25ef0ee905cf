"""The map drawn over a part's crop, and whose map it is: for the records' images and the window.

A part's map comes from the model that decided its verdict (``PartResult.map_source``):
the autoencoder's anomaly map, or the classifier's Grad-CAM when the classifier rejected the
part. Both are on the same scale (1.0 = that model's threshold), so one colour scale fits both.
"""

from __future__ import annotations

import numpy as np

#: the records' image kind of a map, by its source; the autoencoder's keeps its old kind
MAP_IMAGE_KINDS = {"autoencoder": "heatmap", "classifier": "heatmap_classifier"}
#: what the operator reads next to a map, by its source
MAP_LABELS = {"autoencoder": "autoencoder map: where the part differs from good parts",
              "classifier": "classifier map (Grad-CAM): what made it call the part defective"}
_SHORT = {"autoencoder": "autoencoder map", "classifier": "classifier map"}


def map_label(source: str, short: bool = False) -> str:
    """The words naming a map's source ("" when there is no map)."""
    return (_SHORT if short else MAP_LABELS).get(source, "")


def map_source_of_kind(kind: str) -> str:
    """The model a stored map image comes from, by its image kind ("" when not a map)."""
    return next((src for src, k in MAP_IMAGE_KINDS.items() if k == kind), "")


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


def captioned(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` (BGR) with ``text`` in a dark band under it, so a stored map says whose it
    is when opened outside the station."""
    import cv2

    if not text:
        return image
    height, width = image.shape[:2]
    scale = max(0.3, min(1.0, width / 400.0))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if tw > width - 4:  # a narrow crop: shrink the words to fit
        scale *= (width - 4) / tw
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = np.full((th + base + 6, width, 3), 24, np.uint8)
    cv2.putText(band, text, (2, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.vstack([image, band])
