"""Synthetic data sets in the MVTec AD layout, byte-identical for the same arguments."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np

from station.sim.defects import DEFECT_TYPES
from station.sim.render import render_part


def _item_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per file, from the seed and the file's relative path (stable across runs)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def write_mvtec_dataset(
    root: str | Path,
    n_train_good: int = 60,
    n_test_good: int = 20,
    n_test_per_defect: int = 10,
    size: int = 256,
    seed: int = 0,
    color: bool = False,
    defects: tuple[str, ...] | list[str] = DEFECT_TYPES,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic data set in the MVTec AD layout and return its root.

    ``train/good/000.png``, ``test/good/``, ``test/<defect>/NNN.png`` and
    ``ground_truth/<defect>/NNN_mask.png`` (255 = defect). The same arguments give
    byte-identical files. An existing data set at ``root`` is replaced only with
    ``overwrite=True`` (its ``train``, ``test`` and ``ground_truth`` folders are removed).
    """
    root = Path(root)
    for name, n in (("n_train_good", n_train_good), ("n_test_good", n_test_good),
                    ("n_test_per_defect", n_test_per_defect)):
        if int(n) < 0:
            raise ValueError(f"write_mvtec_dataset: {name} must be >= 0, got {n}")
    bad = [d for d in defects if d not in DEFECT_TYPES]
    if bad:
        raise ValueError(
            f"write_mvtec_dataset: unknown defect(s) {bad}; expected some of {list(DEFECT_TYPES)}"
        )
    existing = [root / d for d in ("train", "test", "ground_truth") if (root / d).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"write_mvtec_dataset: {existing[0]} already exists; "
                "pass overwrite=True to replace the data set"
            )
        for folder in existing:
            shutil.rmtree(folder)
    shape = (int(size), int(size))

    def write(rel: str, defect: str | None) -> None:
        part = render_part(_item_rng(seed, rel), shape, defect, color)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), part.image):
            raise OSError(f"write_mvtec_dataset: could not write {path}")
        if defect is not None:
            stem = Path(rel).stem
            mpath = root / "ground_truth" / defect / f"{stem}_mask.png"
            mpath.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(mpath), part.mask.astype(np.uint8) * 255):
                raise OSError(f"write_mvtec_dataset: could not write {mpath}")

    for i in range(int(n_train_good)):
        write(f"train/good/{i:03d}.png", None)
    for i in range(int(n_test_good)):
        write(f"test/good/{i:03d}.png", None)
    for d in defects:
        for i in range(int(n_test_per_defect)):
            write(f"test/{d}/{i:03d}.png", d)
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    return root

