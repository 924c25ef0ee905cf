"""Synthesized defects: visible, masked exactly, on the part, inside the crop, seeded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from station.sim import render_part
from station.vision.align import find_and_align
from training.synth_defects import KINDS, SynthDefect, part_mask, synthesize, transplant


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Good aligned crops of synthetic screw-like parts, as the shared crop makes them."""
    rng = np.random.default_rng(3)
    return [find_and_align(render_part(rng, (160, 160)).image, None, None, 96).crop
            for _ in range(4)]


def test_part_mask_finds_the_dark_part(crops: list[np.ndarray]) -> None:
    for crop in crops:
        part = part_mask(crop)
        assert 0.02 < part.mean() < 0.4
        assert crop[part].mean() < crop[~part].mean() - 30  # dark part on a light background
        assert not part[:4].any() and not part[-4:].any()  # the crop border is background


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_crop_where_its_mask_says(crops, kind: str) -> None:
    rng = np.random.default_rng(11)
    for i, crop in enumerate(crops):
        d = synthesize(crop, rng, kind=kind, donor=crops[(i + 1) % len(crops)])
        assert d.kind == kind
        assert d.image.shape == crop.shape and d.image.dtype == np.uint8
        assert d.mask.shape == crop.shape[:2] and d.mask.dtype == bool
        assert 4 <= d.mask.sum() < 0.15 * d.mask.size  # non-empty, local
        diff = np.abs(d.image.astype(int) - crop.astype(int))
        assert diff[d.mask].mean() >= 8  # visible where masked
        assert diff[~d.mask].mean() < 1.0  # (almost) untouched elsewhere
        # mostly on or at the part (dents/bulges sit on its silhouette)
        near_part = np.zeros_like(d.mask)
        ys, xs = np.nonzero(part_mask(crop))
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                near_part[np.clip(ys + dy, 0, 95), np.clip(xs + dx, 0, 95)] = True
        assert (d.mask & near_part).sum() >= 0.5 * d.mask.sum()


def test_same_seed_same_defect(crops) -> None:
    a = [synthesize(c, np.random.default_rng(5)) for c in crops]
    b = [synthesize(c, np.random.default_rng(5)) for c in crops]
    for x, y in zip(a, b, strict=True):
        assert x.kind == y.kind
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
    c = synthesize(crops[0], np.random.default_rng(6))
    assert not np.array_equal(c.image, a[0].image)


def test_colour_crops_and_bad_input(crops) -> None:
    colour = np.repeat(crops[0][:, :, None], 3, axis=2)
    d = synthesize(colour, np.random.default_rng(0), kind="blob")
    assert d.image.shape == colour.shape and d.mask.any()
    with pytest.raises(ValueError, match="uint8"):
        synthesize(crops[0].astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown synthesized defect kind"):
        synthesize(crops[0], np.random.default_rng(0), kind="rust")
    blank = np.full((64, 64), 200, np.uint8)  # no part found: falls back to the centre
    assert synthesize(blank, np.random.default_rng(0), kind="blob").mask.any()


def test_a_real_defect_moves_onto_another_crop_with_its_contrast(crops) -> None:
    rng = np.random.default_rng(5)
    h, w = crops[0].shape
    mask = np.zeros((h, w), bool)
    mask[h // 2 - 6:h // 2 + 6, w // 2 - 6:w // 2 + 6] = True  # a pit on the part
    bad = crops[0].copy()
    bad[mask] = np.clip(bad[mask].astype(int) - 50, 0, 255)
    made = SynthDefect(image=bad, mask=mask, kind="pit")
    lighter = np.clip(crops[1].astype(int) + 40, 0, 255).astype(np.uint8)  # another light
    moved = transplant(made.image, made.mask, lighter, rng)
    assert moved.kind == "transplant" and moved.image.shape == lighter.shape
    assert moved.mask[made.mask].all()  # the defect and a rim of 1-3 px
    near = cv2.dilate(moved.mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert np.array_equal(moved.image[~near], lighter[~near])  # the rest of the crop as it was
    # inside, the defect's pixels stand out of their new surroundings as they did of the old
    core = cv2.erode(made.mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert core.sum() >= 4
    was = made.image[core].astype(float) - made.image[near & ~moved.mask].mean()
    now = moved.image[core].astype(float) - moved.image[near & ~moved.mask].mean()
    assert abs(np.median(was - now)) < 12
    with pytest.raises(ValueError, match="one size"):
        transplant(made.image, made.mask[:-1], lighter, rng)
