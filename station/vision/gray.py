"""The one grey converter: any frame (grey, BGR, BGRA; 8-bit, 16-bit or float) -> 8-bit grey.

Localization, the free-run trigger, the image-quality monitor, ``station crops`` and the
synthesized defects all look at frames in grey; they used to convert in five ways with three
different 16-bit rules (keep 16 bits, ``>> 8``, stretch min..max of each frame). Now there
is one rule, the one the models' crops are made with (``align``, ``preprocess``):

*16-bit data is shifted down by the frame's own bit depth*: the highest set bit of the
brightest pixel becomes bit 7. A 12-bit sensor delivering 0..4095 in a 16-bit container is
shifted by 4, a full-range 16-bit image by 8. A fixed ``>> 8`` would leave 12-bit data at
0..15 (no glare, no contrast, no part); stretching each frame's min..max would blow an empty
belt's noise up to full contrast. Float frames are taken as 0..1 when their maximum is at
most 1, else as 0..255.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit copy of ``image`` (any channels), by the module's 16-bit and float rule.

    Other integer types are clipped to 0..255.

    >>> to_uint8(np.array([[0, 2048, 4095]], np.uint16))  # 12-bit data: >> 4
    array([[  0, 128, 255]], dtype=uint8)
    >>> to_uint8(np.array([[0, 32768, 65535]], np.uint16))  # full 16 bits: >> 8
    array([[  0, 128, 255]], dtype=uint8)
    >>> to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32))
    array([[  0, 128, 255]], dtype=uint8)
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        top = int(image.max()) if image.size else 0
        shift = max(0, top.bit_length() - 8)
        return (image >> shift).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        peak = float(np.nanmax(image)) if image.size else 1.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(image * scale + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_:
        return np.clip(image, 0, 255).astype(np.uint8)  # other integers: taken as 0..255
    raise ValueError(f"unsupported image dtype {image.dtype} (uint8, uint16 or float)")


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grey uint8 (H, W) copy of a grey, BGR or BGRA frame (8-bit, 16-bit or float).

    >>> frame = np.zeros((2, 3, 3), np.uint16)
    >>> frame[..., 2] = 4095  # a red 12-bit BGR frame
    >>> to_gray(frame)
    array([[76, 76, 76],
           [76, 76, 76]], dtype=uint8)
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ValueError(f"expected a non-empty image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return to_uint8(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected a grey (H, W) or colour (H, W, 3|4) image, got shape {image.shape}")
    code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
    return cv2.cvtColor(to_uint8(image), code)
