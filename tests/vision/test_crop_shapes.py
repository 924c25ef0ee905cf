"""Non-square crops and fixed-region products: the crop <-> frame mapping stays exact."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.config import RecipeError, load_recipe
from station.vision.align import (
    AlignParams,
    align,
    crop_height,
    find_and_align,
    map_points_to_crop,
    map_points_to_frame,
    warp_map_to_frame,
)
from station.vision.localize import LocalizeParams, localize
from station.vision.preprocess import PreprocessSpec, crop_for_model, prepare
from tests.vision.test_localize_align import render, u8

REPO = Path(__file__).resolve().parents[2]
LONG = AlignParams(crop_aspect=0.35)


def test_crop_height_is_the_aspect_rounded_up_to_the_multiple():
    assert crop_height(320, LONG, 8) == 112  # 0.35 x 320 = 112 exactly
    assert crop_height(128, LONG, 8) == 48  # 44.8 -> 48
    assert crop_height(128, LONG, 32) == 64
    assert crop_height(256, AlignParams(), 8) == 256  # the default stays square
    assert crop_height(256, AlignParams(crop_aspect=1.25), 8) == 320
    assert crop_height(16, AlignParams(crop_aspect=0.05)) == 8  # never below 8 px


def test_a_long_crop_holds_the_whole_part_head_left_and_maps_back_exactly():
    img = render(57.0, center=(190.5, 200.25), length=240.0)
    marker = (190.5 + 60 * math.cos(math.radians(57)), 200.25 + 60 * math.sin(math.radians(57)))
    cv2.circle(img, (round(marker[0] * 16), round(marker[1] * 16)), 2 * 16, 250, -1, cv2.LINE_AA, 4)
    aligned = find_and_align(u8(img), LocalizeParams(), LONG, 160, 56)
    assert aligned.crop.shape == (56, 160)
    dark = np.clip(200.0 - aligned.crop.astype(np.float64), 0, None)
    # the part is horizontal, centred on the middle row, head (wide end) on the left
    assert np.average(np.arange(56), weights=dark.sum(axis=1)) == pytest.approx(27.5, abs=1.0)
    assert dark[:, :30].sum() > 1.5 * dark[:, -30:].sum()
    # every part pixel of the frame lands inside the crop: nothing of the part is cut off
    ys, xs = np.nonzero(u8(img) < 130)
    inside = map_points_to_crop(np.stack([xs, ys], 1).astype(float), aligned)
    assert inside[:, 0].min() > 0 and inside[:, 0].max() < 159
    assert inside[:, 1].min() > 0 and inside[:, 1].max() < 55
    # the marker (the brightest pixels) maps back onto itself; the affines are exact inverses
    y, x = np.unravel_index(np.argmax(aligned.crop), aligned.crop.shape)
    back = map_points_to_frame(np.array([[x, y]], float), aligned)[0]
    assert np.hypot(*(back - np.array(marker))) < 2.0
    pts = np.random.default_rng(0).uniform(0, 56, (20, 2))
    assert np.allclose(map_points_to_crop(map_points_to_frame(pts, aligned), aligned), pts)
    # one scale both ways: a non-square crop does not stretch the part
    m = aligned.frame_to_crop[:, :2]
    assert np.allclose(m @ m.T, np.eye(2) * abs(np.linalg.det(m)))


def test_a_map_on_a_long_crop_lands_on_its_frame_point():
    img = u8(render(-30.0, center=(200.0, 190.0)))
    aligned = find_and_align(img, LocalizeParams(), LONG, 128, 48)
    heat = np.zeros((24, 64), np.float32)  # the model's map at half the crop's resolution
    heat[10:12, 40:42] = 1.0
    frame_map = warp_map_to_frame(heat, aligned, img.shape)
    assert frame_map.shape == img.shape
    fy, fx = np.unravel_index(np.argmax(frame_map), frame_map.shape)
    # map pixels (40.5, 10.5) = crop pixels (81.5, 21.5) at twice the resolution
    expected = map_points_to_frame(np.array([[2 * 40.5 + 0.5, 2 * 10.5 + 0.5]]), aligned)[0]
    assert np.hypot(fx - expected[0], fy - expected[1]) < 2.5


def test_a_fixed_region_is_always_found_and_never_turned():
    blank = np.full((90, 140), 128, np.uint8)  # nothing to find: a fixed region needs nothing
    loc = localize(blank, LocalizeParams(method="fixed"))
    assert loc.ok and loc.box == (0, 0, 140, 90) and loc.angle_deg is None
    assert loc.center == (69.5, 44.5)
    roi = localize(blank, LocalizeParams(method="fixed", roi=(10, 20, 50, 40)))
    assert roi.ok and roi.box == (10, 20, 50, 40)
    outside = localize(blank, LocalizeParams(method="fixed", roi=(100, 20, 50, 40)))
    assert outside.status == "none"
    assert "(100, 20, 50, 40)" in outside.message and "140x90" in outside.message
    # segmentation on the same frame finds nothing: the method is what makes the difference
    assert not localize(blank, LocalizeParams()).ok


@pytest.mark.parametrize("shape", [(120, 80), (90, 200), (1200, 300)])
def test_a_region_is_stretched_onto_the_whole_crop_whatever_its_size(shape):
    h, w = shape
    img = np.full(shape, 100, np.uint8)
    # a bright dot at a quarter of the width and three quarters of the height of the face
    cv2.circle(img, (round(0.25 * w), round(0.75 * h)), max(3, min(h, w) // 20), 255, -1)
    params = AlignParams(crop_mode="region", orientation="none", crop_aspect=1.25)
    aligned = find_and_align(img, LocalizeParams(method="fixed"), params, 64, 80)
    assert aligned.crop.shape == (80, 64)
    blur = cv2.GaussianBlur(aligned.crop.astype(np.float32), (0, 0), 1.0)
    y, x = np.unravel_index(np.argmax(blur), blur.shape)
    assert abs(x - (0.25 * 64 - 0.5)) <= 1.5 and abs(y - (0.75 * 80 - 0.5)) <= 1.5
    # the frame's corners are the crop's corners (pixel areas onto pixel areas)
    corners = np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]])
    assert np.allclose(map_points_to_crop(corners, aligned), [[-0.5, -0.5], [63.5, 79.5]])
    back = map_points_to_frame(map_points_to_crop(corners, aligned), aligned)
    assert np.allclose(back, corners)


def test_region_of_interest_inside_a_larger_frame():
    img = np.zeros((300, 400), np.uint8)
    img[50:150, 100:300] = 180  # the face sits at x 100..299, y 50..149
    loc = localize(img, LocalizeParams(method="fixed", roi=(100, 50, 200, 100)))
    crop = align(img, loc, AlignParams(crop_mode="region", crop_aspect=0.5), 64, 32).crop
    assert crop.shape == (32, 64) and crop.min() == 180  # only the face, all of it


def test_preprocess_makes_tensors_of_the_crop_shape():
    spec = PreprocessSpec(size=64, height=24)
    assert spec.crop_height == 24 and spec.shape == (1, 24, 64)
    x = prepare(np.full((40, 100), 150, np.uint8), spec)  # any crop is resized to the spec
    assert x.shape == (1, 24, 64)
    colour = PreprocessSpec(size=32, height=16, channels=3, color="rgb")
    bgr = np.zeros((16, 32, 3), np.uint8)
    bgr[..., 2] = 200  # red
    t = prepare(bgr, colour)
    assert t.shape == (3, 16, 32) and t[0].mean() > t[2].mean()  # RGB order: red first
    img = u8(render(20.0))
    aligned, tensor = crop_for_model(img, LocalizeParams(), LONG, PreprocessSpec(size=96, height=40))
    assert aligned.crop.shape == (40, 96) and tensor.shape == (1, 40, 96)


def test_square_specs_keep_the_old_metadata_and_old_metadata_reads_square():
    assert "height" not in PreprocessSpec(size=128).to_metadata()
    old = {"size": 128, "channels": 1, "color": "gray", "illumination": "background",
           "background_value": 0.75, "ring_frac": 0.125, "version": 1}
    spec = PreprocessSpec.from_metadata(old)
    assert spec.crop_height == 128 and spec.shape == (1, 128, 128)
    long = PreprocessSpec(size=320, height=112)
    assert PreprocessSpec.from_metadata(long.to_json()) == long
    with pytest.raises(ValueError, match="height = 4"):
        PreprocessSpec(size=64, height=4)


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text('[product]\nname = "x"\n' + text)
    return path


def test_a_fixed_region_with_a_free_run_trigger_is_refused_in_one_line(tmp_path):
    path = _recipe(tmp_path, '[localize]\nmethod = "fixed"\n[trigger]\nmode = "free_run"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(path, check_files=False)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:6: trigger.mode = \"free_run\"")
    assert 'localize.method = "fixed"' in lines[0]


def test_a_turn_that_a_fixed_region_cannot_make_is_refused(tmp_path):
    path = _recipe(tmp_path, '[localize]\nmethod = "fixed"\n[align]\norientation = "head"\n'
                             '[trigger]\nmode = "hardware"\n')
    with pytest.raises(RecipeError, match=r':6: align.orientation = "head": expected "none"'):
        load_recipe(path, check_files=False)
    ok = _recipe(tmp_path, '[localize]\nmethod = "fixed"\n[align]\ncrop_mode = "region"\n'
                           'crop_aspect = 1.25\n[trigger]\nmode = "hardware"\n')
    recipe = load_recipe(ok, check_files=False)  # orientation left at its default: not applied
    assert recipe.localize.method == "fixed" and recipe.align.crop_aspect == 1.25
    bad = _recipe(tmp_path, '[localize]\nmethod = "search"\n')
    with pytest.raises(RecipeError, match='localize.method = "search"'):
        load_recipe(bad, check_files=False)


@pytest.mark.parametrize("name", ["mvtec_screw.toml", "magnetic_tile.toml"])
def test_the_shipped_recipes_load(name):
    recipe = load_recipe(REPO / "recipes" / name, check_files=False)
    if name == "magnetic_tile.toml":
        assert (recipe.localize.method, recipe.align.crop_mode) == ("fixed", "region")
        assert recipe.trigger.mode != "free_run"
    else:
        assert recipe.localize.method == "segment" and recipe.align.crop_aspect < 0.6
