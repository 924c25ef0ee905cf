"""The part region: where good parts are in crop space, the only place the map is scored."""

from __future__ import annotations

import cv2
import numpy as np

from training.autoencoder.options import AutoencoderOptions


def part_region(tensors: np.ndarray, options: AutoencoderOptions) -> np.ndarray:
    """Where good parts are, in crop space (float32 0/1 [H, W]), grown by a margin.

    The map is only meaningful on the part: the background carries dust and fabric texture
    that no model of *parts* should score. A pixel counts as part in one crop when it is
    clearly darker or brighter than that crop's background (its edge-ring median, the level
    ``station.vision.preprocess`` normalizes); the region is where that happens in at least
    ``roi_min_share`` of the good crops, dilated by ``roi_dilate_frac`` of the side.
    """
    x = np.asarray(tensors, np.float32).mean(axis=1)  # [N, H, W]
    n, h, w = x.shape
    if options.whole_region:  # a fixed region: the crop is the part, edge to edge
        return _without_border(np.ones((h, w), np.uint8), options)
    r = max(1, int(round(0.125 * min(h, w))))
    ring = np.concatenate([x[:, :r].reshape(n, -1), x[:, -r:].reshape(n, -1),
                           x[:, :, :r].reshape(n, -1), x[:, :, -r:].reshape(n, -1)], axis=1)
    bg = np.median(ring, axis=1)[:, None, None]
    spread = np.median(np.abs(ring - np.median(ring, axis=1, keepdims=True)), axis=1)[:, None, None]
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), max(1.0, h / 128)) for im in x])
    part = np.abs(blurred - bg) > np.maximum(0.12 * bg, 6.0 * spread)
    region = (part.mean(axis=0) >= options.roi_min_share).astype(np.uint8)
    k = max(1, int(round(options.roi_dilate_frac * max(h, w))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    region = cv2.dilate(region, kernel)
    if region.sum() == 0:  # nothing found (blank crops): score everywhere
        region[:] = 1
    return _without_border(region, options)


def _without_border(region: np.ndarray, options: AutoencoderOptions) -> np.ndarray:
    """The crop's own edge is out: convolutions and blurs see padding there, not the part."""
    h, w = region.shape
    b = max(2, int(round(options.roi_border_frac * max(h, w))))
    region[:b], region[-b:], region[:, :b], region[:, -b:] = 0, 0, 0, 0
    return region.astype(np.float32)
