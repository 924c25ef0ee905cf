"""A part turned by its pattern: a keyed, textured disc at any angle is read at its angle and
cropped into one pose; a bar with no wider end is turned with its tagged end to one side."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from station.vision import pattern
from station.vision.align import AlignParams, align, pattern_patch, read_pattern
from station.vision.localize import LocalizeParams, localize
from tests.vision.products import keyed_disc_image, tagged_bar_image


def test_pattern_doctests_hold():
    result = doctest.testmod(pattern)
    assert result.attempted >= 5 and result.failed == 0


def test_a_patch_reads_the_same_rings_every_call(monkeypatch):
    """OpenCV's polar warp left two samples of the outer ring unwritten (they fall just off
    the patch), so the rings held whatever memory it was handed: NaN after a NaN-filled
    array was freed, and a replayed good nut turned to a wrong angle and was rejected at
    random. Every call must read the same finite rings."""
    patch = (np.random.default_rng(0).random((pattern.PATCH, pattern.PATCH)) * 255
             ).astype(np.uint8)
    first = pattern.rings(patch)
    assert np.isfinite(first).all()
    for _ in range(50):
        freed = np.full((700, 700, 3), np.nan, np.float32)  # memory the warp may reuse
        del freed
        assert np.array_equal(pattern.rings(patch), first)
    # the same, whatever the allocator does: the warp handed memory that holds NaN
    real = pattern.cv2.warpPolar

    def into_nan(src, dsize, center, radius, flags):
        dst = np.full((dsize[1], dsize[0]), np.nan, np.float32)
        return real(src, dsize, center, radius, flags, dst=dst)

    monkeypatch.setattr(pattern.cv2, "warpPolar", into_nan)
    assert np.array_equal(pattern.rings(patch), first)


def _rings(img: np.ndarray) -> np.ndarray:
    loc = localize(img, LocalizeParams())
    assert loc.ok, loc.message
    return pattern.rings(pattern_patch(img, loc))


def _circular_spread(deg: np.ndarray) -> tuple[float, np.ndarray]:
    """Circular standard deviation (degrees) and each value's offset from the circular mean."""
    z = np.exp(1j * np.radians(deg))
    mean = np.degrees(np.angle(z.mean()))
    return (float(np.degrees(np.sqrt(-2 * np.log(abs(z.mean()))))),
            (deg - mean + 180) % 360 - 180)


@pytest.fixture(scope="module")
def disc_pattern() -> tuple[int, ...]:
    """The pattern learned from 24 good discs at random angles, as init-recipe learns it."""
    rng = np.random.default_rng(3)
    return pattern.learn([_rings(keyed_disc_image(rng)) for _ in range(24)])


def test_a_textured_disc_is_read_at_its_angle(disc_pattern):
    ref = pattern.reference(disc_pattern)
    rng = np.random.default_rng(11)
    angles = rng.uniform(0, 360, 12)
    read = np.array([pattern.turn(_rings(keyed_disc_image(rng, angle_deg=a)), ref)
                     for a in angles])
    # the reading minus the true angle is one constant (the pose the pattern was learned in)
    spread, off = _circular_spread(read - angles)
    assert spread < 3.0 and np.abs(off).max() < 6.0, off


def test_lighting_across_the_frame_does_not_turn_the_part(disc_pattern):
    ref = pattern.reference(disc_pattern)
    flat = keyed_disc_image(np.random.default_rng(5), angle_deg=70.0)
    lit = keyed_disc_image(np.random.default_rng(5), angle_deg=70.0, light=80.0)
    d = pattern.turn(_rings(lit), ref) - pattern.turn(_rings(flat), ref)
    assert abs((d + 180) % 360 - 180) < 2.0


def _notch_angle(crop: np.ndarray) -> float:
    """Where the key notch lies in a crop: the plate showing inside the disc's outer ring."""
    c = (crop.shape[0] - 1) / 2
    yy, xx = np.mgrid[0:crop.shape[0], 0:crop.shape[1]] - c
    r = np.hypot(xx, yy) / crop.shape[0]
    notch = (r > 0.33) & (r < 0.42) & (crop > 160)
    return float(np.degrees(np.arctan2(yy[notch].mean(), xx[notch].mean())))


@pytest.mark.parametrize("orientation", ["pattern", "none"])
def test_pattern_orientation_crops_every_disc_into_one_pose(disc_pattern, orientation):
    rng = np.random.default_rng(8)
    params = AlignParams(orientation=orientation, crop_scale=1.1,
                         pattern=disc_pattern if orientation == "pattern" else ())
    angles = []
    for _ in range(10):
        img = keyed_disc_image(rng)
        angles.append(_notch_angle(align(img, localize(img, LocalizeParams()), params, 96).crop))
    spread, _ = _circular_spread(np.array(angles))
    if orientation == "pattern":
        assert spread < 5.0, angles  # every key in one place
    else:
        assert spread > 60.0, angles  # as they lie, the keys point every way


def test_axis_pattern_puts_the_tagged_end_on_one_side():
    rng = np.random.default_rng(4)
    imgs = [tagged_bar_image(rng) for _ in range(16)]
    locs = [localize(img, LocalizeParams()) for img in imgs]
    parts = [pattern.rings(pattern_patch(img, loc)) for img, loc in zip(imgs, locs, strict=True)]
    ref = pattern.learn(parts, [loc.angle_deg or 0.0 for loc in locs])

    def tag_right(orientation: str) -> list[bool]:
        p = AlignParams(orientation=orientation, pattern=ref, crop_aspect=0.5)
        sides = []
        for img, loc in zip(imgs, locs, strict=True):
            crop = align(img, loc, p, 128, 64).crop.astype(np.float32)
            # the light tag on the dark bar: the lighter half of the bar is the tagged end
            bar = crop[20:44]
            sides.append(bar[:, 64:].mean() > bar[:, :64].mean())
        return sides

    tagged = tag_right("axis_pattern")
    assert all(tagged) or not any(tagged)  # one side, every time
    levelled = tag_right("axis")
    assert any(levelled) and not all(levelled)  # the axis alone leaves either end right


def test_a_pattern_of_another_size_is_refused():
    with pytest.raises(ValueError, match="pattern has 3 values; expected 216"):
        pattern.reference((1, 2, 3))


def test_a_pose_read_once_crops_as_a_pose_read_per_crop(disc_pattern):
    # the inspector reads the pattern once for its two crop sizes; training reads it per crop
    img = keyed_disc_image(np.random.default_rng(2))
    loc = localize(img, LocalizeParams())
    params = AlignParams(orientation="pattern", pattern=disc_pattern)
    posed = read_pattern(img, loc, params)
    assert posed.angle_deg != loc.angle_deg
    for size in (64, 96):
        once = align(img, posed, params, size, read=False)
        each = align(img, loc, params, size)
        assert np.array_equal(once.crop, each.crop)
        assert np.allclose(once.frame_to_crop, each.frame_to_crop)
