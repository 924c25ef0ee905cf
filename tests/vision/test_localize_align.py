"""Localization and alignment on rendered parts with a known pose (dark, head wider than tip)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from station.cli import main
from station.vision.align import (
    AlignParams,
    PartNotFound,
    align,
    find_and_align,
    map_points_to_crop,
    map_points_to_frame,
    warp_map_to_frame,
)
from station.vision.localize import LocalizeParams, localize, within

SIZE = 384


def render(
    angle_deg: float,
    center: tuple[float, float] = (192.0, 192.0),
    length: float = 220.0,
    shape: tuple[int, int] = (SIZE, SIZE),
    bg: float = 200.0,
    fg: float = 60.0,
    canvas: np.ndarray | None = None,
) -> np.ndarray:
    """A screw-like part: pointed tip, shaft, head 2.3x wider; ``angle_deg`` points tip -> head."""
    w = 0.1 * length
    hw = 2.3 * w
    half = length / 2
    u_tip, u_neck, u_head = -half, -half + 0.15 * length, half - 0.12 * length
    outline = [(u_tip, 0.0), (u_neck, -w / 2), (u_head, -w / 2), (u_head, -hw / 2), (half, -hw / 2),
               (half, hw / 2), (u_head, hw / 2), (u_head, w / 2), (u_neck, w / 2)]
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    pts = [(center[0] + u * c - v * s, center[1] + u * s + v * c) for u, v in outline]
    img = np.full(shape, bg, np.float32) if canvas is None else canvas
    shift = 4  # sub-pixel vertices
    poly = np.round(np.array(pts) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(img, [poly], fg, lineType=cv2.LINE_AA, shift=shift)
    return img


def u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def test_pose_is_measured_at_every_angle_and_head_lands_on_head_side():
    for angle in range(-180, 180, 25):
        img = u8(render(angle, center=(190.3, 195.7)))
        loc = localize(img, LocalizeParams())
        assert loc.status == "ok", (angle, loc.message)
        assert angle_diff(loc.angle_deg, angle) < 1.0, (angle, loc.angle_deg)
        assert loc.center == pytest.approx((190.3, 195.7), abs=1.0)
        assert loc.length_px == pytest.approx(220.0, abs=3.0)
        assert loc.head_ratio > 1.8
        for side in ("left", "right"):
            crop = align(img, loc, AlignParams(head_side=side), 128).crop
            dark = np.clip(200.0 - crop.astype(np.float64), 0, None)
            left, right = dark[:, :32].sum(), dark[:, -32:].sum()
            assert (left > 1.5 * right) if side == "left" else (right > 1.5 * left), (angle, side)
            # long axis horizontal: the part's rows are centred on the crop's middle row
            rows = dark.sum(axis=1)
            assert np.average(np.arange(128), weights=rows) == pytest.approx(63.5, abs=1.0)


def test_crop_pixels_map_back_to_the_right_frame_pixel():
    img = render(33.0, center=(200.2, 180.6))
    marker = (200.2 + 40 * math.cos(math.radians(33)), 180.6 + 40 * math.sin(math.radians(33)))
    cv2.circle(img, (round(marker[0] * 16), round(marker[1] * 16)), 2 * 16, 250, -1, cv2.LINE_AA, 4)
    aligned = find_and_align(u8(img), LocalizeParams(), AlignParams(crop_mode="fixed", crop_px=256), 256)
    crop = cv2.GaussianBlur(aligned.crop.astype(np.float32), (0, 0), 1.0)
    y, x = np.unravel_index(np.argmax(crop), crop.shape)
    back = map_points_to_frame(np.array([[x, y]]), aligned)[0]
    assert np.hypot(*(back - np.array(marker))) < 1.0
    # the two affines are exact inverses, for points and for the matrices
    pts = np.random.default_rng(0).uniform(0, 256, (20, 2))
    assert np.allclose(map_points_to_crop(map_points_to_frame(pts, aligned), aligned), pts)
    full = np.vstack([aligned.frame_to_crop, [0, 0, 1]]) @ np.vstack([aligned.crop_to_frame, [0, 0, 1]])
    assert np.allclose(full, np.eye(3))
    # the crop region is crop_px frame pixels wide: scale = size / crop_px = 1
    assert np.linalg.det(aligned.frame_to_crop[:, :2]) == pytest.approx(1.0)


@pytest.mark.parametrize("size", [256, 100, 64])  # 1x, 2x and 4x area reduction before the warp
def test_shrunken_crops_keep_the_exact_mapping(size):
    img = render(-40.0, center=(190.4, 200.7))
    a = math.radians(-40.0 + 90.0)
    marker = (190.4 + 70 * math.cos(a), 200.7 + 70 * math.sin(a))  # beside the part
    cv2.circle(img, (round(marker[0] * 16), round(marker[1] * 16)), 8 * 16, 250, -1, cv2.LINE_AA, 4)
    aligned = find_and_align(u8(img), LocalizeParams(), AlignParams(crop_mode="fixed", crop_px=256), size)
    x0, y0 = map_points_to_crop(np.array([marker]), aligned)[0].round().astype(int)
    r = max(3, size // 16)
    win = np.clip(aligned.crop[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1].astype(np.float64) - 200.0, 0, None)
    ys, xs = np.mgrid[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
    found = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
    back = map_points_to_frame(found[None], aligned)[0]
    assert np.hypot(*(back - np.array(marker))) < 1.0


def test_heatmap_on_the_crop_lands_on_the_part_in_the_frame():
    img = u8(render(-70.0, center=(170.0, 200.0)))
    aligned = find_and_align(img, LocalizeParams(), AlignParams(), 128)
    heat = np.zeros((64, 64), np.float32)  # a model map at half the crop resolution
    heat[30:34, 10:14] = 1.0  # near the head (left)
    frame_map = warp_map_to_frame(heat, aligned, img.shape)
    assert frame_map.shape == img.shape and frame_map.dtype == np.float32
    ys, xs = np.nonzero(frame_map > 0.5)
    spot = np.array([xs.mean(), ys.mean()])
    expected = map_points_to_frame(np.array([[(11.5 + 0.5) * 2 - 0.5, (31.5 + 0.5) * 2 - 0.5]]), aligned)[0]
    assert np.hypot(*(spot - expected)) < 1.5
    assert img[int(round(spot[1])), int(round(spot[0]))] < 120  # it lies on the (dark) part


def test_statuses_none_border_several():
    blank = np.full((SIZE, SIZE), 200, np.uint8)
    assert localize(blank, LocalizeParams()).status == "none"
    noisy = u8(blank + np.random.default_rng(1).normal(0, 4, blank.shape))
    assert localize(noisy, LocalizeParams()).status == "none"
    cut = u8(render(0.0, center=(40.0, 192.0)))
    loc = localize(cut, LocalizeParams())
    assert loc.status == "border" and "edge" in loc.message and loc.box is not None
    two = render(0.0, center=(192.0, 100.0), length=150)
    two = u8(render(180.0, center=(192.0, 280.0), length=150, canvas=two))
    loc = localize(two, LocalizeParams())
    assert loc.status == "several" and "2 part-sized" in loc.message
    with pytest.raises(PartNotFound) as err:
        find_and_align(two, LocalizeParams(), AlignParams(), 64)
    assert err.value.localization.status == "several" and "several" in str(err.value)
    # the ROI keeps the second part out
    loc = localize(two, LocalizeParams(roi=(0, 0, SIZE, 190)))
    assert loc.status == "ok" and loc.center == pytest.approx((192.0, 100.0), abs=1.0)
    with pytest.raises(ValueError, match="roi"):
        localize(two, LocalizeParams(roi=(300, 0, 200, 100)))


def test_a_part_thinner_than_a_pixel_at_the_detection_size_is_none_not_a_crash():
    """A long thin strip of a frame shrinks to lines with no area when the part is searched
    for: "no part" with the reason (it crashed, so init-recipe stopped and the line had an
    ERROR with a numpy message)."""
    strip = np.full((40, 2000), 200, np.uint8)
    strip[18:22, 700:1300] = 40
    loc = localize(strip, LocalizeParams())
    assert loc.status == "none" and "no outline with an area" in loc.message


def test_a_part_cut_in_two_by_a_bright_defect_is_still_one_part():
    img = render(30.0)
    a = math.radians(30.0)
    # a bright band (contamination, glare) across the shaft, brighter than the background
    p0 = (192 - 40 * math.sin(a) * -1 - 30 * math.cos(a), 192 - 30 * math.sin(a) - 40 * math.cos(a))
    p1 = (p0[0] - 80 * math.sin(a), p0[1] + 80 * math.cos(a))
    cv2.line(img, (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1])), 240.0, 5)
    loc = localize(u8(img), LocalizeParams())
    assert loc.status == "ok", loc.message
    assert angle_diff(loc.angle_deg, 30.0) < 1.5
    assert loc.length_px == pytest.approx(220.0, abs=4.0)
    # the pieces are merged because they lie within merge_gap_frac of each other
    assert localize(u8(img), LocalizeParams(merge_gap_frac=0.0)).status == "several"


def test_16_bit_and_colour_frames_give_the_same_pose_and_uint8_crops():
    base = render(57.0)
    ref = localize(u8(base), LocalizeParams())
    frames = {
        "16-bit": np.round(base * 257).astype(np.uint16),
        "12-bit": np.round(base * 16).astype(np.uint16),
        "colour": cv2.cvtColor(u8(base), cv2.COLOR_GRAY2BGR),
    }
    ref_crop = align(u8(base), ref, AlignParams(), 96).crop
    for name, frame in frames.items():
        aligned = find_and_align(frame, LocalizeParams(), AlignParams(), 96)
        loc = aligned.localization
        assert angle_diff(loc.angle_deg, ref.angle_deg) < 0.2, name
        assert loc.center == pytest.approx(ref.center, abs=0.3), name
        assert aligned.crop.dtype == np.uint8, name
        if name == "colour":
            assert aligned.crop.shape == (96, 96, 3)
            crop = cv2.cvtColor(aligned.crop, cv2.COLOR_BGR2GRAY)
        else:
            assert aligned.crop.shape == (96, 96)
            crop = aligned.crop
        assert np.abs(crop.astype(int) - ref_crop.astype(int)).mean() < 3.0, name


def test_dust_specks_and_a_lighting_gradient_do_not_move_the_part():
    rng = np.random.default_rng(3)
    img = render(120.0, center=(180.0, 190.0))
    for _ in range(40):
        x, y = rng.uniform(10, SIZE - 10, 2)
        cv2.circle(img, (int(x), int(y)), int(rng.integers(1, 3)), float(rng.uniform(40, 120)), -1)
    ramp = np.linspace(0.45, 1.15, SIZE, dtype=np.float32)[None, :] * np.linspace(0.8, 1.0, SIZE)[:, None]
    for frame in (u8(img), u8(img * ramp)):
        loc = localize(frame, LocalizeParams())
        assert loc.status == "ok", loc.message
        assert angle_diff(loc.angle_deg, 120.0) < 1.0
        assert loc.center == pytest.approx((180.0, 190.0), abs=1.5)
        assert loc.length_px == pytest.approx(220.0, abs=4.0)


def test_light_part_on_dark_background_and_auto_polarity():
    img = u8(render(-20.0, bg=40.0, fg=210.0))
    for polarity in ("light_on_dark", "auto"):
        loc = localize(img, LocalizeParams(polarity=polarity))
        assert loc.status == "ok" and angle_diff(loc.angle_deg, -20.0) < 1.0, polarity
    assert localize(u8(render(-20.0)), LocalizeParams(polarity="auto")).status == "ok"


def test_params_round_trip_and_refuse_unknown_keys():
    lp = LocalizeParams(roi=(1, 2, 3, 4), polarity="auto")
    assert LocalizeParams.from_dict(json.loads(json.dumps(lp.to_dict()))) == lp
    ap = AlignParams(head_side="right", crop_mode="fixed", crop_px=300)
    assert AlignParams.from_dict(ap.to_dict()) == ap
    with pytest.raises(ValueError, match="head_sid"):
        AlignParams.from_dict({"head_sid": "left"})


def _write_set(root, blank_name: str | None):
    for i, angle in enumerate((10.0, 100.0, -135.0)):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "train" / "good" / f"{i:03d}.png"), u8(render(angle)))
    (root / "test" / "good").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "test" / "good" / "000.png"), u8(render(45.0)))
    if blank_name:
        cv2.imwrite(str(root / "test" / "good" / blank_name), np.full((SIZE, SIZE), 200, np.uint8))


def test_station_crops_writes_crops_montage_and_log(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    _write_set(data, None)
    rc = main(["crops", "--data", str(data), "--out", str(out), "--size", "64", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert (out / "train" / "good" / "002.png").is_file() and (out / "montage.png").is_file()
    assert cv2.imread(str(out / "test" / "good" / "000.png"), cv2.IMREAD_UNCHANGED).shape == (64, 64)
    rows = [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["found"] and r["status"] == "ok" for r in rows)
    row = next(r for r in rows if r["file"] == "train/good/001.png")
    assert angle_diff(row["angle"], 100.0) < 1.0 and row["length"] == pytest.approx(220, abs=3)
    assert "aligned crops" in text and "unaligned" in text


def test_station_crops_fails_naming_the_file_without_a_part(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    _write_set(data, "empty_tray.png")
    rc = main(["crops", "--data", str(data), "--out", str(out), "--size", "64", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "empty_tray.png" in err and "none" in err
    rows = [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows if not r["found"]] == ["test/good/empty_tray.png"]


@pytest.mark.parametrize("gap", [5, 12, 13, 26, 38])
def test_pieces_within_the_merge_gap_are_found_alike_at_any_gap(gap):
    # a piece a little nearer than the gap is within it, one a little farther is not, for
    # the small gaps (a disc dilation) and the wide ones (a distance transform) alike
    part = np.zeros((256, 256), np.uint8)
    part[100:156, 40:100] = 1
    near_x, far_x = 99 + gap - 1, 99 + gap + 3
    assert within(part, gap)[128, near_x] and not within(part, gap)[128, far_x]
    assert within(part, gap)[100 - gap + 1, 70] and not within(part, gap)[100 - gap - 3, 70]
