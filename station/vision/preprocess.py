"""Crop -> model input tensor: THE one implementation training and the station share.

Illumination normalization divides the crop by its own background level (the median of a ring
along the crop's edge, where the canonical pose leaves background) so the background always
maps to ``background_value``: a model fed these tensors cannot read the global brightness of
the photo (the MVTec lighting trap: darker test/good photos separate from defects by brightness
alone).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np

from station.vision.align import AlignedCrop, AlignParams, find_and_align
from station.vision.gray import to_uint8
from station.vision.localize import LocalizeParams

PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    """How a crop becomes a model input; stored in every model file's metadata."""

    size: int = field(default=256, metadata={"min": 8, "max": 4096, "help": "crop width (px) the model sees"})
    height: int = field(
        default=0,
        metadata={"min": 0, "max": 4096, "help": "crop height (px) the model sees; 0 = square (size)"},
    )
    channels: int = field(default=1, metadata={"min": 1, "max": 3, "help": "1 or 3 input channels"})
    color: str = field(
        default="gray",
        metadata={"choices": ("gray", "rgb"), "help": "gray (replicated when channels=3) or RGB colour"},
    )
    illumination: str = field(
        default="background",
        metadata={
            "choices": ("background", "none"),
            "help": "background = divide by the crop's background level; none = pixel / 255",
        },
    )
    background_value: float = field(
        default=0.75,
        metadata={"min": 0.01, "max": 1.0, "help": "tensor value the background maps to (illumination=background)"},
    )
    ring_frac: float = field(
        default=0.125,
        metadata={"min": 0.01, "max": 0.5, "help": "width of the edge ring the background level is read from"},
    )
    version: int = field(default=PREPROCESS_VERSION, metadata={"help": "preprocessing algorithm version"})

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.size, int) or self.size < 8:
            problems.append(f"size = {self.size!r}: expected an integer >= 8")
        if not isinstance(self.height, int) or (self.height != 0 and self.height < 8):
            problems.append(f"height = {self.height!r}: expected 0 (square) or an integer >= 8")
        if self.channels not in (1, 3):
            problems.append(f"channels = {self.channels!r}: expected 1 or 3")
        if self.color not in ("gray", "rgb"):
            problems.append(f"color = {self.color!r}: expected 'gray' or 'rgb'")
        elif self.color == "rgb" and self.channels != 3:
            problems.append(f"color = 'rgb' needs channels = 3, got {self.channels!r}")
        if self.illumination not in ("background", "none"):
            problems.append(f"illumination = {self.illumination!r}: expected 'background' or 'none'")
        if not 0.0 < float(self.background_value) <= 1.0:
            problems.append(f"background_value = {self.background_value!r}: expected 0 < value <= 1")
        if not 0.0 < float(self.ring_frac) <= 0.5:
            problems.append(f"ring_frac = {self.ring_frac!r}: expected 0 < value <= 0.5")
        if self.version != PREPROCESS_VERSION:
            problems.append(
                f"version = {self.version!r}: this station implements preprocessing version "
                f"{PREPROCESS_VERSION} only"
            )
        if problems:
            raise ValueError("PreprocessSpec: " + "; ".join(problems))

    @property
    def crop_height(self) -> int:
        """The crop's height in px (``size`` when ``height`` is 0: square)."""
        return int(self.height) or int(self.size)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model input's (channels, height, width)."""
        return int(self.channels), self.crop_height, int(self.size)

    def to_metadata(self) -> dict[str, Any]:
        """JSON-able dict (store it with ``to_json`` in the model's ``preprocess`` key).

        A square spec leaves ``height`` out, so its metadata reads as before non-square crops.
        """
        data = asdict(self)
        if not data["height"]:
            del data["height"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_metadata(), sort_keys=True)

    @classmethod
    def from_metadata(cls, data: dict[str, Any] | str) -> PreprocessSpec:
        """Read back ``to_metadata``/``to_json``; unknown keys or bad values raise ValueError."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ValueError(f"PreprocessSpec: preprocess metadata is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"PreprocessSpec: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"PreprocessSpec: unknown key(s) {unknown}; expected some of {sorted(known)}")
        kw = dict(data)
        for key in ("size", "height", "channels", "version"):
            if key in kw:
                if isinstance(kw[key], bool) or not float(kw[key]).is_integer():
                    raise ValueError(f"PreprocessSpec: {key} = {kw[key]!r}: expected an integer")
                kw[key] = int(kw[key])
        return cls(**kw)


def background_level(image: np.ndarray, ring_frac: float = 0.125) -> np.ndarray:
    """Per-channel median of the crop's edge ring (float32 array of shape (C,)); the ring is
    ``ring_frac`` of the crop's shorter side wide on all four edges."""
    h, w = image.shape[:2]
    r = max(1, int(round(ring_frac * min(h, w))))
    img = image.reshape(h, w, -1)
    ring = np.concatenate(
        [img[:r].reshape(-1, img.shape[2]), img[-r:].reshape(-1, img.shape[2]),
         img[r:-r, :r].reshape(-1, img.shape[2]), img[r:-r, -r:].reshape(-1, img.shape[2])]
    )
    return np.median(ring, axis=0).astype(np.float32)


def _colour(crop: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWxC in the spec's colour mode (C = spec.channels)."""
    img = crop
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"prepare: expected a gray or BGR crop, got shape {crop.shape}")
    if spec.color == "gray":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        img = img[:, :, None]
        if spec.channels == 3:
            img = np.repeat(img, 3, axis=2)
        return img
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def prepare(crop: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """One crop (uint8 gray or BGR, any size) -> float32 (C, H, W) model input, resized to the
    spec's height x width when it is not that already."""
    if not isinstance(crop, np.ndarray) or crop.size == 0:
        raise ValueError("prepare: expected a non-empty numpy crop")
    img = crop
    if img.dtype == np.uint16:
        img = to_uint8(img)
    elif img.dtype != np.uint8:
        raise ValueError(f"prepare: expected a uint8 crop, got {img.dtype}")
    height, width = spec.crop_height, spec.size
    if img.shape[0] != height or img.shape[1] != width:
        shrink = img.shape[0] * img.shape[1] > height * width
        img = cv2.resize(
            img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    x = _colour(img, spec).astype(np.float32)
    if spec.illumination == "background":
        level = np.maximum(background_level(x, spec.ring_frac), 1.0)
        x *= np.float32(spec.background_value) / level
        np.clip(x, 0.0, 1.0, out=x)
    else:
        x *= np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


#: The share of a good crop's pixels that must stay below 1.0 once the background is mapped
#: to ``background_value`` (see :func:`fit_background_value`).
HEADROOM_QUANTILE = 99.5


def fit_background_value(crops: Sequence[np.ndarray], spec: PreprocessSpec) -> PreprocessSpec:
    """``spec`` with a ``background_value`` that leaves the part its detail.

    Dividing by the background level maps the background to ``background_value`` (0.75) and
    a pixel brighter than the background by more than 1 / 0.75 to 1.0, clipped. On a light
    plate that is a highlight or two; a light part on a dark plate (background 20 of 255,
    the part 200) would clip whole. So the value is lowered until the median good crop keeps
    its 99.5th percentile at or below 1.0; it is never raised above the spec's own, and it is
    stored in the model's metadata, so the station prepares its crops the same way.

    >>> dark = np.full((32, 64), 20, np.uint8); dark[8:24, 8:56] = 200  # a light part
    >>> fit_background_value([dark], PreprocessSpec(size=64, height=32)).background_value
    0.1
    >>> light = np.full((32, 64), 200, np.uint8); light[8:24, 8:56] = 40  # a dark part
    >>> fit_background_value([light], PreprocessSpec(size=64, height=32)).background_value
    0.75
    """
    if spec.illumination != "background" or len(crops) == 0:
        return spec
    ratios = []
    for crop in crops:
        x = _colour(crop, spec).astype(np.float32)
        level = np.maximum(background_level(x, spec.ring_frac), 1.0)
        ratios.append(float(np.percentile(x / level, HEADROOM_QUANTILE)))
    value = min(spec.background_value, 1.0 / max(float(np.median(ratios)), 1e-6))
    value = max(0.01, math.floor(value * 1000) / 1000)
    return replace(spec, background_value=value) if value < spec.background_value else spec


def prepare_batch(crops: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Several crops -> float32 (N, C, H, W)."""
    if len(crops) == 0:
        return np.zeros((0, *spec.shape), np.float32)
    return np.stack([prepare(c, spec) for c in crops])


def crop_for_model(
    image: np.ndarray,
    localize_params: LocalizeParams | None,
    align_params: AlignParams | None,
    spec: PreprocessSpec,
) -> tuple[AlignedCrop, np.ndarray]:
    """Frame -> (aligned crop, model tensor (C, H, W)); raises ``PartNotFound``.

    The single call both training and the station make, so they cannot drift apart.
    """
    aligned = find_and_align(image, localize_params, align_params, spec.size, spec.crop_height)
    return aligned, prepare(aligned.crop, spec)
