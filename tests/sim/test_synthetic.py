"""The synthetic part renderer: determinism, exact defect masks, visibility, MVTec writer."""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.sim import (
    DEFECT_TYPES,
    PartPose,
    render_part,
    write_mvtec_dataset,
)

SIZE = (160, 160)


def _render(seed: int, defect: str | None, color: bool = False, size=SIZE, pose=None):
    return render_part(np.random.default_rng(seed), size, defect, color, pose)


def _part_pixels(image: np.ndarray) -> np.ndarray:
    """The dark part, as the largest dark component (dust specks are tiny and apart)."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    dark = (gray < 135).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    assert n > 1, "no dark part in the image"
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def test_same_seed_gives_the_same_image_and_mask():
    a, b = _render(7, "scratch"), _render(7, "scratch")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.pose == b.pose
    assert not np.array_equal(a.image, _render(8, "scratch").image)


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_is_exactly_the_pixels_the_defect_changed(defect):
    for seed in range(4):
        part = _render(seed, defect)
        clean = _render(seed, None)  # same random state, no defect
        assert np.array_equal(clean.image, part.clean)
        changed = part.image != clean.image
        assert np.array_equal(part.mask, changed), f"{defect} seed {seed}"
        share = part.mask.mean()
        assert 0.0005 < share < 0.03, f"{defect} seed {seed}: mask covers {share:.2%}"
        # Background dust is drawn (identically) in both and never part of the defect.
        assert part.dust_mask.any()
        assert not (part.mask & part.dust_mask).any()
        assert np.array_equal(part.dust_mask, clean.dust_mask)
        # Clearly visible: a real change in grey level, not a faint tint.
        diff = np.abs(part.image.astype(int) - clean.image.astype(int))[part.mask]
        assert diff.mean() > 12, f"{defect} seed {seed}: mean change {diff.mean():.1f}"
        assert part.defect == defect


def test_exact_mask_holds_in_colour_too():
    for i, defect in enumerate(DEFECT_TYPES):
        part = _render(100 + i, defect, color=True)
        clean = _render(100 + i, None, color=True)
        assert part.image.shape == SIZE + (3,) and part.image.dtype == np.uint8
        assert np.array_equal(part.mask, (part.image != clean.image).any(axis=2))
        assert part.mask.any()


def test_good_part_has_an_empty_mask():
    part = _render(3, None)
    assert not part.mask.any() and part.defect is None
    assert np.array_equal(part.image, part.clean)


def test_part_lies_inside_the_image_with_a_wider_head():
    for seed in range(12):
        part = _render(200 + seed, None)
        pixels = _part_pixels(part.image)
        ys, xs = np.nonzero(pixels)
        h, w = SIZE
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < w - 1 and ys.max() < h - 1
        # Widths across the axis near the head and on the threaded shank.
        (cx, cy), ang, length = part.pose.center, math.radians(part.pose.angle_deg), part.pose.length
        e, n = np.array([math.cos(ang), math.sin(ang)]), np.array([-math.sin(ang), math.cos(ang)])
        pts = np.stack([xs - cx, ys - cy], 1)
        u, v = pts @ e + 0.5 * length, pts @ n
        head = np.ptp(v[(u > 0.90 * length) & (u < 0.95 * length)])
        shank = np.ptp(v[(u > 0.30 * length) & (u < 0.40 * length)])
        assert head > 1.6 * shank, f"seed {seed}: head {head:.1f} px, shank {shank:.1f} px"
        assert abs(u.max() - length) < 4 and abs(u.min()) < 4


def test_explicit_pose_is_honoured():
    pose = PartPose((80.0, 80.0), 0.0, 110.0)
    part = _render(5, None, pose=pose)
    assert part.pose == pose
    ys, xs = np.nonzero(_part_pixels(part.image))
    assert abs(xs.min() - 25) <= 3 and abs(xs.max() - 135) <= 3  # tip at left, head at right
    assert np.ptp(ys[xs > 128]) > 1.6 * np.ptp(ys[(xs > 50) & (xs < 70)])


def test_unknown_defect_is_refused():
    with pytest.raises(ValueError, match="unknown defect 'dent'"):
        _render(0, "dent")


def test_rendering_is_fast():
    for seed in range(3):
        _render(seed, "scratch", size=(256, 256))
    times = []
    for seed in range(10):
        start = time.perf_counter()
        _render(seed, DEFECT_TYPES[seed % len(DEFECT_TYPES)], size=(256, 256))
        times.append(time.perf_counter() - start)
    # Well under 20 ms on an idle core; the bound leaves room for a busy shared machine.
    assert float(np.median(times)) < 0.06


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_mvtec_writer_layout_counts_masks_and_determinism(tmp_path):
    defects = ("scratch", "broken_tip")
    root = write_mvtec_dataset(tmp_path / "a", n_train_good=3, n_test_good=2,
                               n_test_per_defect=2, size=96, seed=4, defects=defects)
    assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png",
                                                                           "002.png"]
    assert sorted(p.name for p in (root / "test").iterdir()) == ["broken_tip", "good", "scratch"]
    assert len(list((root / "test" / "good").iterdir())) == 2
    for d in defects:
        images = sorted((root / "test" / d).iterdir())
        masks = sorted((root / "ground_truth" / d).iterdir())
        assert [p.name for p in images] == ["000.png", "001.png"]
        assert [p.name for p in masks] == ["000_mask.png", "001_mask.png"]
        for img_path, mask_path in zip(images, masks, strict=True):
            img = cv2.imread(str(img_path), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert img.shape == (96, 96) and mask.shape == (96, 96) and img.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}
    assert not (root / "ground_truth" / "good").exists()
    again = write_mvtec_dataset(tmp_path / "b", n_train_good=3, n_test_good=2,
                                n_test_per_defect=2, size=96, seed=4, defects=defects)
    assert _files(root) == _files(again)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_mvtec_dataset(root, n_train_good=1, n_test_good=0, n_test_per_defect=0, size=64)
    write_mvtec_dataset(root, n_train_good=1, n_test_good=0, n_test_per_defect=0, size=64,
                        overwrite=True, color=True)
    files = _files(root)
    assert list(files) == ["train/good/000.png"]
    assert cv2.imread(str(root / "train/good/000.png"), cv2.IMREAD_UNCHANGED).shape == (64, 64, 3)
