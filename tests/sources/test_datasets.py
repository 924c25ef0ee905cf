"""Data set readers and image loading on small trees the tests write themselves."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.sources.datasets import (
    DatasetError,
    Sample,
    dataset_fingerprint,
    load_image,
    load_mask,
    load_sample,
    read_dataset,
    to_uint8,
)


def gray8(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def gray16(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, size, dtype=np.uint16)


def color8(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def mask_img(size: tuple[int, int] = (24, 32)) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    m[5:10, 8:20] = 255
    return m


def put(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def make_mvtec(root: Path) -> Path:
    """A small MVTec-layout tree: 8-bit and 16-bit greys, two defect types with masks."""
    put(root / "train/good/000.png", gray8(0))
    put(root / "train/good/001.png", gray16(1))
    put(root / "test/good/000.png", gray8(2))
    put(root / "test/scratch/000.png", gray8(3))
    put(root / "test/scratch/001.png", gray16(4))
    put(root / "test/bent/000.png", gray8(5))
    put(root / "ground_truth/scratch/000_mask.png", mask_img())
    put(root / "ground_truth/scratch/001_mask.png", mask_img())
    put(root / "ground_truth/bent/000_mask.png", mask_img())
    (root / "readme.txt").write_text("about this set")
    return root


def test_mvtec_layout(tmp_path):
    root = make_mvtec(tmp_path / "screw")
    samples = read_dataset(root)
    assert samples.layout == "mvtec" and samples.warnings == []
    assert [str(s.path.relative_to(root)) for s in samples] == sorted(
        str(s.path.relative_to(root)) for s in samples)
    by_rel = {str(s.path.relative_to(root)): s for s in samples}
    assert set(by_rel) == {"train/good/000.png", "train/good/001.png", "test/good/000.png",
                           "test/scratch/000.png", "test/scratch/001.png", "test/bent/000.png"}
    assert by_rel["train/good/001.png"] == Sample(root / "train/good/001.png", 0, "good", None,
                                                  "train")
    scratch = by_rel["test/scratch/001.png"]
    assert (scratch.label, scratch.defect_type, scratch.split) == (1, "scratch", "test")
    assert scratch.mask_path == root / "ground_truth/scratch/001_mask.png"
    assert by_rel["test/good/000.png"].split == "test"
    assert read_dataset(root) == samples  # deterministic
    image, mask = load_sample(scratch)
    assert image.dtype == np.uint16 and mask.dtype == bool and mask.sum() == 5 * 12


def test_mvtec_missing_mask_is_an_error_or_a_warning(tmp_path, caplog):
    root = make_mvtec(tmp_path / "set")
    (root / "ground_truth/bent/000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"test/bent/000\.png: defect image without its mask"):
        read_dataset(root)
    with caplog.at_level(logging.WARNING, logger="station.sources.datasets"):
        samples = read_dataset(root, strict=False)
    bent = [s for s in samples if s.defect_type == "bent"]
    assert len(bent) == 1 and bent[0].mask_path is None
    assert any("test/bent/000.png" in w for w in samples.warnings)
    assert any("test/bent/000.png" in r.getMessage() for r in caplog.records)


def test_mvtec_without_any_masks_is_labels_only(tmp_path):
    # a product nobody outlined: no ground_truth/ at all; the images are judged on their
    # labels (training, image metrics), the maps cannot be, and the reader says so once
    root = make_mvtec(tmp_path / "set")
    shutil.rmtree(root / "ground_truth")
    samples = read_dataset(root)
    defects = [s for s in samples if s.label == 1]
    assert defects and all(s.mask_path is None for s in defects)
    assert len(samples) == 6
    assert len(samples.warnings) == 1 and "no pixel metrics" in samples.warnings[0]


def test_mvtec_mask_without_image_is_a_warning(tmp_path):
    root = make_mvtec(tmp_path / "set")
    put(root / "ground_truth/scratch/007_mask.png", mask_img())
    samples = read_dataset(root)
    assert len(samples) == 6
    assert len(samples.warnings) == 1 and "ground_truth/scratch/007_mask.png" in samples.warnings[0]


def test_plain_folders_with_types_masks_and_colour(tmp_path):
    root = tmp_path / "plain"
    put(root / "good/a.jpg", color8(0))
    put(root / "good/b.bmp", gray8(1))
    put(root / "defect/c.png", color8(2))
    put(root / "defect/dent/d.tif", gray16(3))
    put(root / "masks/dent/d.png", mask_img())
    put(root / "masks/orphan.png", mask_img())
    (root / "good/notes.csv").write_text("x")
    samples = read_dataset(root)
    assert samples.layout == "folders"
    got = {s.path.name: (s.label, s.defect_type, s.mask_path and s.mask_path.name) for s in samples}
    assert got == {"a.jpg": (0, "good", None), "b.bmp": (0, "good", None),
                   "c.png": (1, "defect", None), "d.tif": (1, "dent", "d.png")}
    text = "\n".join(samples.warnings)
    assert "orphan.png: mask without its image" in text and "notes.csv: not an image" in text
    assert "c.png: no mask" in text
    image, mask = load_sample(next(s for s in samples if s.path.name == "d.tif"))
    assert image.dtype == np.uint16 and mask.shape == image.shape


def test_csv_layout_and_bad_rows(tmp_path):
    root = tmp_path / "csvset"
    put(root / "img/g.png", gray8(0))
    put(root / "img/d.png", gray8(1))
    put(root / "img/d_mask.png", mask_img())
    (root / "labels.csv").write_text(
        "file,label,defect_type,mask\nimg/g.png,0,,\n# a comment row\nimg/d.png,1,crack,img/d_mask.png\n")
    samples = read_dataset(root)
    assert samples.layout == "csv"
    assert [(s.path.name, s.label, s.defect_type) for s in samples] == [
        ("d.png", 1, "crack"), ("g.png", 0, "good")]
    assert samples[0].mask_path == (root / "img/d_mask.png").resolve()
    assert read_dataset(root / "labels.csv") == samples  # the CSV itself may be given

    def bad(rows: str, match: str) -> None:
        (root / "labels.csv").write_text("file,label\nimg/g.png,0\n" + rows)
        with pytest.raises(DatasetError, match=match):
            read_dataset(root)

    bad("img/d.png,maybe\n", r"labels\.csv:3: label = 'maybe': expected 0 \(good\) or 1")
    bad("img/d.png,1\nimg/none.png,1\n", r"labels\.csv:4: file = 'img/none\.png': image not found")
    bad("img/d.png,1,extra\n", r"labels\.csv:3: 3 fields, expected 2")
    bad("img/g.png,1\n", r"labels\.csv:3: .*already listed on line 2")
    (root / "labels.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match=r"labels\.csv:1: header"):
        read_dataset(root)


def test_dataset_errors_missing_unknown_empty(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(tmp_path / "nope")
    (tmp_path / "odd").mkdir()
    with pytest.raises(DatasetError, match=r"unknown data set layout; expected one of: MVTec"):
        read_dataset(tmp_path / "odd")
    (tmp_path / "empty/train/good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        read_dataset(tmp_path / "empty")


def test_a_folder_of_images_reads_as_good_only_when_asked(tmp_path):
    folder = tmp_path / "photos"
    put(folder / "b.png", gray8(1))
    put(folder / "a.jpg", gray8(0))
    (folder / "notes.csv").write_text("x")  # not labels.csv: a stray file, reported
    with pytest.raises(DatasetError, match="unknown data set layout.*images only, with no l"):
        read_dataset(folder)  # training and evaluation need labels
    samples = read_dataset(folder, images_as_good=True)
    assert samples.layout == "images"
    assert [(s.path.name, s.label, s.defect_type, s.split) for s in samples] == [
        ("a.jpg", 0, "good", "train"), ("b.png", 0, "good", "train")]
    assert any("notes.csv: not an image" in w for w in samples.warnings)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        read_dataset(tmp_path / "nothing", images_as_good=True)
    layouts = {tmp_path / "mv" / "train": "mvtec", tmp_path / "pf" / "good": "folders"}
    for sub, layout in layouts.items():  # a known layout is read as itself
        put(sub / "good" / "x.png" if layout == "mvtec" else sub / "x.png", gray8(2))
        assert read_dataset(sub.parent, images_as_good=True).layout == layout
    # an MVTec set's train/good given where the set belongs: the error points at the set
    with pytest.raises(DatasetError, match=r"images only; the data set is probably .*mv\)$"):
        read_dataset(tmp_path / "mv" / "train" / "good")
    with pytest.raises(DatasetError, match=r"images only; the data set is probably .*pf\)$"):
        read_dataset(tmp_path / "pf" / "good")


def test_load_image_depths_channels_and_modes(tmp_path):
    g8 = put(tmp_path / "g8.png", gray8(0))
    g16 = put(tmp_path / "g16.png", gray16(1))
    c8 = put(tmp_path / "c8.jpg", color8(2))
    c16 = put(tmp_path / "c16.tif", (color8(3).astype(np.uint16) * 257))
    a = load_image(g8)
    assert a.shape == (24, 32) and a.dtype == np.uint8 and np.array_equal(a, gray8(0))
    b = load_image(g16)
    assert b.dtype == np.uint16 and np.array_equal(b, gray16(1))
    c = load_image(c8)
    assert c.shape == (24, 32, 3) and c.dtype == np.uint8
    d = load_image(c16)
    assert d.shape == (24, 32, 3) and d.dtype == np.uint16
    assert load_image(c8, "gray").shape == (24, 32)
    assert load_image(g16, "color").shape == (24, 32, 3)
    assert load_image(g16, "color").dtype == np.uint16
    assert np.array_equal(to_uint8(d), color8(3))
    assert to_uint8(np.array([[0, 4095, 65535]], np.uint16), bits=12).tolist() == [[0, 255, 255]]
    assert to_uint8(a) is a


def test_load_image_refuses_bad_files_naming_them(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.png: empty file"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(DatasetError, match=r"junk\.png: not a readable image"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "junk.bmp").write_bytes(b"nonsense" * 10)
    with pytest.raises(DatasetError, match=r"junk\.bmp: not a readable image"):
        load_image(tmp_path / "junk.bmp")
    whole = put(tmp_path / "whole.png", gray8(0, (64, 64))).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match=r"cut\.png: PNG without its IEND"):
        load_image(tmp_path / "cut.png")
    jpeg = put(tmp_path / "whole.jpg", color8(1, (64, 64))).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    with pytest.raises(DatasetError, match=r"cut\.jpg: JPEG without its end-of-image marker"):
        load_image(tmp_path / "cut.jpg")
    bmp = put(tmp_path / "whole.bmp", gray8(2, (64, 64))).read_bytes()
    (tmp_path / "cut.bmp").write_bytes(bmp[:-100])
    with pytest.raises(DatasetError, match=r"cut\.bmp: BMP is .* bytes but declares"):
        load_image(tmp_path / "cut.bmp")
    with pytest.raises(DatasetError, match=r"gone\.png: image file not found"):
        load_image(tmp_path / "gone.png")


def test_mask_size_mismatch_names_mask_and_image(tmp_path):
    root = make_mvtec(tmp_path / "set")
    put(root / "ground_truth/bent/000_mask.png", mask_img((20, 32)))
    bent = next(s for s in read_dataset(root) if s.defect_type == "bent")
    with pytest.raises(DatasetError) as info:
        load_sample(bent)
    message = str(info.value)
    assert "ground_truth/bent/000_mask.png" in message and "test/bent/000.png" in message
    assert "32x20" in message and "32x24" in message
    assert load_mask(root / "ground_truth/scratch/000_mask.png", (24, 32)).dtype == bool


def test_fingerprint_follows_content_not_location(tmp_path):
    a = make_mvtec(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    fa, fb = dataset_fingerprint(read_dataset(a)), dataset_fingerprint(read_dataset(b))
    assert fa == fb and fa.startswith("sha256:") and len(fa) == 7 + 64
    put(b / "test/good/000.png", gray8(99))
    assert dataset_fingerprint(read_dataset(b)) != fa
    relabelled = [Sample(s.path, s.label, s.defect_type, s.mask_path, "test")
                  for s in read_dataset(a)]
    assert dataset_fingerprint(relabelled) != fa
