"""Crop -> tensor: shapes, colour modes, metadata round trip, brightness invariance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from station.vision.align import AlignParams, PartNotFound
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec, crop_for_model, prepare, prepare_batch


def _crop(size: int = 64, colour: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((size, size), 185.0, np.float32) + rng.normal(0, 3, (size, size))
    cv2.rectangle(img, (8, size // 2 - 5), (size - 8, size // 2 + 5), 70.0, -1)
    cv2.circle(img, (20, size // 2), 3, 240.0, -1)  # a glint brighter than the background
    img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if colour else img


def test_global_brightness_does_not_change_the_tensor():
    crop = _crop()
    spec = PreprocessSpec(size=64)
    a = prepare(crop, spec)
    for factor in (0.9, 0.7, 1.05):  # 1.05: the glint stays below 255
        b = prepare(np.clip(crop * factor, 0, 255).astype(np.uint8), spec)
        assert np.abs(a - b).max() < 0.02, factor
    # the background maps to the fixed value
    assert np.median(a[0, :8]) == pytest.approx(0.75, abs=0.01)
    # without normalization, brightness shows
    raw = PreprocessSpec(size=64, illumination="none")
    assert np.abs(prepare(crop, raw) - prepare((crop * 0.9).astype(np.uint8), raw)).max() > 0.05


def test_shapes_and_colour_modes():
    gray, bgr = _crop(), _crop(colour=True)
    assert prepare(gray, PreprocessSpec(size=64)).shape == (1, 64, 64)
    assert prepare(bgr, PreprocessSpec(size=32)).shape == (1, 32, 32)  # resized, made gray
    three = prepare(gray, PreprocessSpec(size=64, channels=3))
    assert three.shape == (3, 64, 64) and np.allclose(three[0], three[2])
    bgr[:, :, 2] = np.clip(bgr[:, :, 2].astype(int) + 30, 0, 255)  # more red
    rgb = prepare(bgr, PreprocessSpec(size=64, channels=3, color="rgb"))
    assert rgb.dtype == np.float32 and rgb.shape == (3, 64, 64)
    batch = prepare_batch([gray, gray], PreprocessSpec(size=64))
    assert batch.shape == (2, 1, 64, 64) and batch.dtype == np.float32
    assert prepare_batch([], PreprocessSpec(size=64)).shape == (0, 1, 64, 64)


def test_spec_metadata_round_trip_and_bad_values():
    spec = PreprocessSpec(size=128, channels=3, color="rgb", background_value=0.7)
    assert PreprocessSpec.from_metadata(spec.to_json()) == spec
    assert PreprocessSpec.from_metadata(spec.to_metadata()) == spec
    with pytest.raises(ValueError, match="channels"):
        PreprocessSpec(channels=2)
    with pytest.raises(ValueError, match="rgb"):
        PreprocessSpec(color="rgb", channels=1)
    with pytest.raises(ValueError, match="unknown"):
        PreprocessSpec.from_metadata({"size": 64, "colour": "gray"})
    with pytest.raises(ValueError, match="not JSON"):
        PreprocessSpec.from_metadata("{size")


def test_crop_for_model_is_the_single_frame_to_tensor_call():
    frame = np.full((300, 300), 190, np.uint8)
    cv2.rectangle(frame, (80, 140), (200, 160), 60, -1)
    cv2.rectangle(frame, (200, 125), (225, 175), 60, -1)  # wide head on the right
    spec = PreprocessSpec(size=64)
    aligned, tensor = crop_for_model(frame, LocalizeParams(), AlignParams(head_side="left"), spec)
    assert aligned.crop.shape == (64, 64) and tensor.shape == (1, 64, 64)
    assert tensor[0, :, :20].mean() < tensor[0, :, -20:].mean()  # head (dark mass) on the left
    with pytest.raises(PartNotFound):
        crop_for_model(np.full((300, 300), 190, np.uint8), LocalizeParams(), AlignParams(), spec)
