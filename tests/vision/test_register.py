"""Registration: a part's pose corrected onto its product's learned template, so every part is
cut alike whatever error its outline's pose had."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from station.vision.align import AlignParams, align, find_and_align, read_pose, register
from station.vision.localize import LocalizeParams, localize
from station.vision.register import (
    MAX_SHIFT,
    learn_template,
    match,
    template_image,
    template_size,
)
from tests.vision.test_localize_align import render

ASPECT = 0.35


def textured(angle_deg: float, center: tuple[float, float], seed: int = 0) -> np.ndarray:
    """A screw-like part with a thread of light stripes across its shaft, on a noisy plate."""
    img = render(angle_deg, center)
    a = math.radians(angle_deg)
    for k in range(-5, 5):  # the stripes turn and move with the part
        u = 9.0 * k - 20.0
        c = (center[0] + u * math.cos(a), center[1] + u * math.sin(a))
        ends = [(c[0] + t * -math.sin(a), c[1] + t * math.cos(a)) for t in (-8.0, 8.0)]
        pts = np.round(np.array(ends) * 16).astype(np.int32)
        cv2.line(img, tuple(pts[0]), tuple(pts[1]), 120.0, 2, cv2.LINE_AA, shift=4)
    img += np.random.default_rng(seed).normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def product() -> tuple[AlignParams, LocalizeParams]:
    """Align params carrying a template learned, as training learns it, from good parts at
    random angles and sub-pixel places."""
    rng = np.random.default_rng(1)
    loc_p, params = LocalizeParams(), AlignParams(crop_aspect=ASPECT)
    w, h = template_size(ASPECT)
    crops = []
    for i in range(12):
        frame = textured(rng.uniform(-180, 180), tuple(rng.uniform(185, 199, 2)), i)
        crops.append(align(frame, localize(frame, loc_p), params, w, h).crop)
    return replace(params, template=learn_template(np.stack(crops)), template_width=w), loc_p


def test_the_template_is_the_good_parts_mean_at_a_small_size():
    crops = np.stack([np.full((4, 6), 10, np.uint8), np.full((4, 6), 13, np.uint8)])
    t = learn_template(crops)
    assert len(t) == 24 and set(t) == {12}  # 11.5 rounds to even
    assert template_size(0.35) == (160, 56) and template_size(1.0) == (94, 94)
    with pytest.raises(ValueError, match="rows of template_width 5"):
        template_image(t, 5)
    with pytest.raises(ValueError, match="rows of template_width 5"):
        AlignParams(template=t, template_width=5)


def test_match_reads_a_sub_pixel_shift_and_a_small_turn():
    frame = textured(0.0, (192.0, 192.0))
    t = frame[150:234, 70:310]
    m = cv2.getRotationMatrix2D((119.5, 41.5), 0.6, 1.0)
    m[:, 2] += (0.7, -1.2)  # the part 0.7 px right, 1.2 px up, turned 0.6 degrees
    moved = cv2.warpAffine(t, m, (240, 84), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    w = match(moved, template_image(tuple(int(v) for v in t.ravel()), 240))
    assert w is not None
    # W maps template pixels onto the moved crop: the same warp as the one applied
    assert np.allclose(w[:, 2], m[:, 2], atol=0.15)
    assert math.degrees(math.atan2(w[1, 0], w[0, 0])) == pytest.approx(-0.6, abs=0.05)


def test_match_gives_up_rather_than_move_a_part_too_far():
    t = np.full((40, 100), 200, np.uint8)
    t[15:25, 10:90] = 60
    tm = template_image(tuple(int(v) for v in t.ravel()), 100)
    assert match(np.full((40, 100), 128, np.uint8), tm) is None  # nothing to match: no pose
    near = match(np.roll(t, 3, axis=1), tm)  # 3 px: within what an outline gets wrong
    assert near is not None and near[0, 2] == pytest.approx(3.0, abs=0.05)
    # 10 px: ECC finds that shift too (the bar's ends are plain), but no outline is that far
    # off, so the match is not trusted and the outline's pose stands
    assert match(np.roll(t, int(MAX_SHIFT * 100) + 4, axis=1), tm) is None


def test_a_part_is_cut_alike_whatever_its_outlines_pose_error(product):
    params, loc_p = product
    frame = textured(37.0, (190.3, 187.6), seed=5)
    loc = localize(frame, loc_p)
    off = replace(loc, center=(loc.center[0] + 1.3, loc.center[1] - 0.9),
                  angle_deg=loc.angle_deg + 0.7)
    a, b = register(frame, loc, params), register(frame, off, params)
    assert math.dist(a.center, b.center) < 0.2
    assert abs(a.angle_deg - b.angle_deg) < 0.1
    # unregistered, the two poses cut crops 1.6 px and 0.7 degrees apart
    plain = replace(params, registration="none")
    assert register(frame, off, plain) == off
    assert math.dist(register(frame, loc, plain).center, off.center) > 1.5


def test_training_and_the_station_cut_the_same_registered_crops(product):
    """find_and_align (training, evaluation) and read_pose + align(read=False) (the station's
    inspector, one pose for both models' crops) give the same pixels at every size."""
    params, loc_p = product
    frame = textured(-121.0, (193.4, 190.1), seed=7)
    loc = read_pose(frame, localize(frame, loc_p), params)
    assert loc != localize(frame, loc_p)  # registration moved it
    for size in (320, 128):
        height = math.ceil(size * ASPECT)
        ours = align(frame, loc, params, size, height, read=False)
        theirs = find_and_align(frame, loc_p, params, size, height)
        assert np.array_equal(ours.crop, theirs.crop)
        assert np.allclose(ours.crop_to_frame, theirs.crop_to_frame)


def test_a_region_and_a_part_without_template_are_not_moved(product):
    params, loc_p = product
    frame = textured(10.0, (191.0, 192.0))
    loc = localize(frame, loc_p)
    assert register(frame, loc, replace(params, template=(), template_width=0)) == loc
    assert register(frame, loc, replace(params, crop_mode="region")) == loc
    assert not replace(params, crop_mode="region").registers


def test_the_template_travels_in_the_model_metadata_form(product):
    params, _ = product
    d = params.to_dict()
    assert isinstance(d["template"], list) and d["template_width"] == 160
    assert AlignParams.from_dict(d) == params
    with pytest.raises(ValueError, match="template"):
        AlignParams.from_dict({**d, "template": [300] * len(d["template"])})
