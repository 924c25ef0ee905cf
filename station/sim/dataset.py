"""Synthetic data sets in the MVTec AD layout, byte-identical for the same arguments."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from station.sim.defects import DEFECT_TYPES
from station.sim.render import render_part

if TYPE_CHECKING:  # the conveyor imports this package's constants
    from station.sim.conveyor import SimulatedConveyor


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


def write_line_dataset(
    root: str | Path,
    conveyor: SimulatedConveyor,
    n_train_good: int = 150,
    n_test_good: int = 30,
    n_test_per_defect: int = 10,
    overwrite: bool = False,
    max_parts: int = 5000,
) -> Path:
    """A data set from the simulated line itself: each part is the frame in which it crosses
    the middle of the view, exactly as the station's camera sees it (the belt, the lighting,
    the noise), cut to one pitch of belt around the part, labelled by the conveyor's truth, listed in ``labels.csv``
    (``file,label,defect_type,split``; no masks: the conveyor knows each part's defect kind,
    not its pixels).

    Models for the simulated line are then trained on what they will inspect, not on parts
    rendered alone at another scale. Use a conveyor seeded differently from the line's, so the
    parts the station inspects are not the ones it was trained on.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"write_line_dataset: {root} is not empty; pass "
                                  "overwrite=True to replace the data set")
        shutil.rmtree(root)
    want = {"good": int(n_train_good) + int(n_test_good),
            **{d: int(n_test_per_defect) for d in conveyor.defects}}
    got = dict.fromkeys(want, 0)
    rows = ["file,label,defect_type,split"]
    for pid in range(1, int(max_parts) + 1):
        if all(got[k] >= want[k] for k in want):
            break
        truth = conveyor.part_truth(pid)
        kind = truth.defect if truth.label else "good"
        if got.get(kind, 0) >= want.get(kind, 0):
            continue
        index = int(round(conveyor.crossing_time(pid, conveyor.width / 2.0) * conveyor.fps))
        rel = f"{kind}/{got[kind]:03d}.png"
        (root / kind).mkdir(parents=True, exist_ok=True)
        frame = conveyor.frame(index)
        cx = next(p.center_xy[0] for p in frame.parts if p.part_id == pid)
        # one pitch of belt around the part: what the trigger hands the station, without
        # the neighbours that come into view at the frame's edges
        span = int(min(conveyor.width, round(conveyor.pitch_px)))
        x0 = int(min(max(0, round(cx - span / 2)), conveyor.width - span))
        if not cv2.imwrite(str(root / rel), frame.image[:, x0:x0 + span]):
            raise OSError(f"write_line_dataset: could not write {root / rel}")
        split = "train" if kind == "good" and got[kind] < int(n_train_good) else "test"
        rows.append(f"{rel},{int(bool(truth.label))},{kind},{split}")
        got[kind] += 1
    short = {k: f"{got[k]}/{want[k]}" for k in want if got[k] < want[k]}
    if short:
        raise ValueError(f"write_line_dataset: {max_parts} parts gave too few of {short}; "
                         "raise the conveyor's defect_rate or max_parts")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
