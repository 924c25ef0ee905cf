"""The simulated conveyor: pure frames, part motion and ids, truth, defect rate, real photos."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from station.sim import PartPose, render_part
from station.sim.conveyor import (
    SimulatedConveyor,
    list_part_photos,
    segment_part_photo,
)

W, H, FPS, SPEED, PITCH = 320, 240, 30.0, 240.0, 200.0


def _conveyor(**kw) -> SimulatedConveyor:
    args = dict(width=W, height=H, fps=FPS, speed_px_s=SPEED, pitch_px=PITCH, seed=3)
    args.update(kw)
    return SimulatedConveyor(**args)


def test_frames_are_a_pure_function_of_seed_and_index():
    a, b = _conveyor(), _conveyor()
    late_first = [b.frame(i) for i in (40, 3, 17)]
    for f in late_first:
        g = a.frame(f.seq)
        assert np.array_equal(f.image, g.image) and f.parts == g.parts
        assert f.timestamp == pytest.approx(f.seq / FPS)
    assert a.frame(5).image.shape == (H, W) and a.frame(5).image.dtype == np.uint8
    assert not np.array_equal(a.frame(40).image, _conveyor(seed=4).frame(40).image)
    assert _conveyor(color=True).frame(7).image.shape == (H, W, 3)


def test_parts_move_at_the_belt_speed_and_look_the_same():
    conv = _conveyor()
    step = 6  # frames: 48 px at 8 px per frame
    moved = 0
    for i in range(0, 150, 3):
        f0, f1 = conv.frame(i), conv.frame(i + step)
        for p in f0.parts:
            q = next((q for q in f1.parts if q.part_id == p.part_id), None)
            if q is None or not (p.fully_visible and q.fully_visible):
                continue
            dx = q.center_xy[0] - p.center_xy[0]
            assert dx == pytest.approx(SPEED * step / FPS, abs=1.0)
            assert q.center_xy[1] == p.center_xy[1] and q.angle_deg == p.angle_deg
            # The part's pixels moved too: same patch, shifted by the drawn displacement.
            x, y, ix = int(p.center_xy[0]), int(p.center_xy[1]), int(round(dx))
            patch0 = f0.image[y - 15 : y + 15, x - 15 : x + 15].astype(int)
            patch1 = f1.image[y - 15 : y + 15, x - 15 + ix : x + 15 + ix].astype(int)
            assert np.abs(patch0 - patch1).mean() < 4  # only sensor noise differs
            moved += 1
    assert moved > 10


def test_ids_increase_and_each_part_appears_in_the_frames_expected():
    conv = _conveyor()
    n = 240
    seen: dict[int, list[int]] = {}
    for i in range(n):
        for p in conv.frame(i).parts:
            seen.setdefault(p.part_id, []).append(i)
    ids = sorted(seen)
    assert ids == list(range(1, ids[-1] + 1))  # 1, 2, 3 ... none skipped
    firsts = [seen[k][0] for k in ids]
    assert firsts == sorted(firsts)
    for k in ids:
        frames = seen[k]
        assert frames == list(range(frames[0], frames[-1] + 1))  # one unbroken visit
    # A part whose visit lies wholly inside the run is in view for about (W + its size) / speed.
    full = [seen[k] for k in ids if seen[k][0] > 0 and seen[k][-1] < n - 1]
    assert full
    for frames in full:
        assert W / SPEED * FPS < len(frames) < (W + 1.4 * conv.part_length_px) / SPEED * FPS + 2
    # parts_between agrees with the frames: a part crosses mid-frame between two frames once.
    line = W / 2
    crossed = []
    for i in range(n - 1):
        before = {p.part_id: p.center_xy[0] for p in conv.frame(i).parts}
        after = {p.part_id: p.center_xy[0] for p in conv.frame(i + 1).parts}
        crossed += [k for k in before if k in after and before[k] < line <= after[k]]
    truth = conv.parts_between(0.0, (n - 1) / FPS, line)
    assert [p.part_id for p in truth] == crossed
    assert len(set(crossed)) == len(crossed)
    for p in truth:
        assert p.center_xy[0] == line and p.fully_visible
        assert 0 <= conv.crossing_time(p.part_id, line) * FPS <= n


def test_defect_rate_and_types_follow_the_settings():
    conv = _conveyor(defect_rate=0.3, defects=("scratch", "bent_tip"))
    parts = conv.parts_between(0.0, 1200 * PITCH / SPEED)
    assert len(parts) > 1100
    rate = np.mean([p.label for p in parts])
    assert rate == pytest.approx(0.3, abs=0.04)
    assert {p.defect for p in parts} == {"good", "scratch", "bent_tip"}
    assert all((p.label == 0) == (p.defect == "good") for p in parts)
    assert conv.part_truth(parts[5].part_id).label == parts[5].label
    assert all(p.label == 0 for p in _conveyor(defect_rate=0.0).parts_between(0, 50))


def test_right_to_left_moves_the_other_way():
    conv = _conveyor(direction="right_to_left")
    a, b = conv.frame(30), conv.frame(33)
    common = {p.part_id for p in a.parts} & {p.part_id for p in b.parts}
    assert common
    for k in common:
        xa = next(p.center_xy[0] for p in a.parts if p.part_id == k)
        xb = next(p.center_xy[0] for p in b.parts if p.part_id == k)
        assert xb - xa == pytest.approx(-SPEED * 3 / FPS, abs=1.0)


def test_parts_stay_inside_the_frame_vertically():
    conv = _conveyor()
    for i in range(0, 300, 5):
        f = conv.frame(i)
        for p in f.parts:
            sprite = conv.sprite(p.part_id)
            x0, y0, x1, y1 = sprite.box
            top = p.center_xy[1] - sprite.center[1] + y0
            bottom = p.center_xy[1] - sprite.center[1] + y1
            assert top >= 0 and bottom <= H


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="pitch_px"):
        _conveyor(pitch_px=100)
    with pytest.raises(ValueError, match="direction"):
        _conveyor(direction="up")
    with pytest.raises(ValueError, match="defect_rate"):
        _conveyor(defect_rate=1.5)


def test_frames_render_fast():
    conv = SimulatedConveyor(seed=1)  # 640 x 480
    for i in range(60):
        conv.frame(i)  # parts in view rendered and cached
    start = time.perf_counter()
    for i in range(60, 90):
        conv.frame(i)
    per_frame = (time.perf_counter() - start) / 30
    assert per_frame < 0.015  # about 1 ms on an idle core


def _photo_tree(root):
    """A small MVTec-style tree of rendered 'photos' (dark part on light background)."""
    poses = {}
    for rel, defect, seed in (("train/good/000.png", None, 1), ("test/good/000.png", None, 2),
                              ("test/scratch/000.png", "scratch", 3),
                              ("test/scratch/001.png", "scratch", 4)):
        part = render_part(np.random.default_rng(seed), (200, 200), defect)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), part.image)
        poses[rel] = part.pose
    (root / "ground_truth" / "scratch").mkdir(parents=True)
    cv2.imwrite(str(root / "ground_truth" / "scratch" / "000_mask.png"),
                np.zeros((200, 200), np.uint8))
    return poses


def test_segmenting_a_photo_finds_the_part_and_its_head():
    pose = PartPose((100.0, 100.0), 30.0, 130.0)
    part = render_part(np.random.default_rng(9), (200, 200), None, False, pose)
    mask, ratio = segment_part_photo(part.image)
    assert ratio.shape == (200, 200) and np.median(ratio[~mask]) == pytest.approx(1.0, abs=0.05)
    from station.sim.conveyor import _axis

    (cx, cy), angle, length = _axis(mask)
    assert math.hypot(cx - 100, cy - 100) < 3
    assert abs((angle - 30 + 180) % 360 - 180) < 5
    assert length == pytest.approx(130, rel=0.06)
    with pytest.raises(ValueError, match="no dark part"):
        segment_part_photo(np.full((100, 100), 200, np.uint8), "blank.png")


def test_real_photo_mode_carries_labelled_parts(tmp_path):
    _photo_tree(tmp_path)
    entries = list_part_photos(tmp_path)
    assert [(e.path.relative_to(tmp_path).as_posix(), e.label, e.defect) for e in entries] == [
        ("test/good/000.png", 0, "good"), ("test/scratch/000.png", 1, "scratch"),
        ("test/scratch/001.png", 1, "scratch"), ("train/good/000.png", 0, "good")]
    conv = _conveyor(part_images=tmp_path, defect_rate=0.5, part_scale=0.5)
    assert conv.part_length_px == pytest.approx(min(0.5 * W, 0.72 * H, 0.72 * PITCH))
    parts = conv.parts_between(0.0, 12 * PITCH / SPEED)
    assert {p.defect for p in parts} == {"good", "scratch"}
    assert all((p.label == 1) == (p.defect == "scratch") for p in parts)
    sprite = conv.sprite(parts[0].part_id)
    assert sprite.length == pytest.approx(conv.part_length_px, rel=0.1)
    # In a frame the carried part is dark where the truth says it is.
    k = parts[0].part_id
    frame = conv.frame(int(math.ceil(conv.crossing_time(k) * FPS)))
    truth = next(p for p in frame.parts if p.part_id == k)
    x, y = (int(round(c)) for c in truth.center_xy)
    assert truth.fully_visible and frame.image[y - 2 : y + 3, x - 2 : x + 3].mean() < 140
    again = _conveyor(part_images=tmp_path, defect_rate=0.5, part_scale=0.5)
    assert np.array_equal(again.frame(20).image, conv.frame(20).image)
    # A plain folder of photos: all good.
    plain = tmp_path / "plain"
    plain.mkdir()
    cv2.imwrite(str(plain / "a.png"), cv2.imread(str(tmp_path / "test/scratch/000.png")))
    assert [(e.label, e.defect) for e in list_part_photos(plain)] == [(0, "good")]
    with pytest.raises(FileNotFoundError, match="no images"):
        list_part_photos(tmp_path / "ground_truth")


def test_a_frame_wider_than_the_belt_texture_renders() -> None:
    """A 4096 px wide simulated camera (the recipe allows up to 8192) once failed every frame:
    the belt texture repeats every 1024 px and was not long enough for such a window."""
    conveyor = SimulatedConveyor(width=4096, height=256, fps=30, speed_px_s=480, pitch_px=480)
    for index in (0, 17, 95):
        assert conveyor.frame(index).image.shape == (256, 4096)
