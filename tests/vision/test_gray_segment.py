"""The one grey converter and the one segmentation: every user sees frames the same way."""

from __future__ import annotations

import doctest

import cv2
import numpy as np
import pytest

import station.vision.gray
from station.sources import Frame
from station.trigger import FreeRunTrigger
from station.vision.gray import to_gray
from station.vision.localize import LocalizeParams, localize
from station.vision.quality import measure


def test_gray_doctests_hold():
    result = doctest.testmod(station.vision.gray)
    assert result.attempted >= 4 and result.failed == 0


def scene() -> np.ndarray:
    """A light noisy belt with one dark bar: 8-bit grey."""
    rng = np.random.default_rng(5)
    image = (180 + rng.integers(0, 20, (160, 320))).astype(np.uint8)
    image[60:100, 110:210] = 50
    return image


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_deep_frames_are_shifted_by_their_own_bit_depth(bits):
    """A 10-, 12- or 16-bit frame of the same scene is the 8-bit frame again, whatever the
    container: the brightest pixel's top bit becomes bit 7."""
    base = scene()
    deep = base.astype(np.uint16) << (bits - 8)
    assert np.array_equal(to_gray(deep), base)
    colour = cv2.cvtColor(deep, cv2.COLOR_GRAY2BGR)
    assert np.abs(to_gray(colour).astype(int) - base).max() <= 1
    assert measure(deep) == measure(base)  # the quality monitor sees the same frame


def test_bad_frames_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="non-empty"):
        to_gray(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(4, 4, 2\)"):
        to_gray(np.zeros((4, 4, 2), np.uint8))


def test_trigger_and_localization_find_the_same_part():
    """The free-run trigger's box and localization's box come from one segmentation."""
    image = scene()
    loc = localize(image, LocalizeParams())
    assert loc.ok, loc.message
    trigger = FreeRunTrigger()
    blobs = trigger.detect(image)
    assert len(blobs) == 1
    bx, by, bw, bh = blobs[0].box
    lx, ly, lw, lh = loc.box
    assert abs(bx - lx) <= 2 and abs(by - ly) <= 2
    assert abs(bw - lw) <= 3 and abs(bh - lh) <= 3
    # a 12-bit camera gives the trigger the same part
    deep = FreeRunTrigger().detect(image.astype(np.uint16) << 4)
    assert [b.box for b in deep] == [b.box for b in blobs]


def test_trigger_takes_localizations_defaults():
    trigger = FreeRunTrigger()
    d = LocalizeParams()
    for key in ("threshold", "min_contrast", "min_area_frac", "max_area_frac", "merge_gap_frac",
                "border_margin_px", "detect_size", "background_sigma_frac"):
        assert getattr(trigger, key) == getattr(d, key), key
    assert trigger.on_frame(Frame(scene(), 0, 0.0, "test")) == []  # past the line at start-up
