"""A data set photographed on the simulated line: parts cut from the conveyor's own frames.

Why: models learn best from the pictures they will judge. Parts drawn one by one
(``station.sim.dataset``) are lit, scaled, turned and sampled differently from the line's
frames, and a threshold set on them does not hold on the belt. A plant records its training
set from its own camera; this is the simulated line doing the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2

from station.sim.conveyor import GOOD, SimulatedConveyor

LABELS = "labels.csv"


def write_line_dataset(
    root: str | Path,
    conveyor: SimulatedConveyor,
    n_train_good: int,
    n_test_good: int,
    n_test_per_defect: int,
    test_line: SimulatedConveyor | None = None,
    overwrite: bool = False,
) -> Path:
    """Write parts from ``conveyor`` as a ``labels.csv`` data set and return its root.

    Each part is taken from the frame nearest to when it crosses mid-frame, cut to a window
    centred on it (the frame's full height, as wide as the part pitch allows), and saved as
    ``img/<seed>_<part id>.png``. The first ``n_train_good`` good parts are split
    ``train``, the next ``n_test_good`` ``test``; ``n_test_per_defect`` of each defect kind the
    conveyor renders are ``test``. Parts beyond a quota are skipped, so the same conveyor
    and counts give the same files.

    ``test_line`` (optional) gives the ``test`` parts from another stretch of belt, as a plant
    would record its validation parts on another day. Then thresholds are set on belt, dust
    and lighting the training parts never showed, as on the line; from the same stretch the
    good parts' scores came out lower than on the line (1 % of good parts above the
    threshold against 2-3 % on the line).

    >>> from station.sim.conveyor import SimulatedConveyor
    >>> import tempfile
    >>> line = SimulatedConveyor(width=320, height=180, pitch_px=160, defect_rate=0.5,
    ...                          defects=("scratch",), seed=3)
    >>> root = write_line_dataset(tempfile.mkdtemp(), line, 2, 1, 1, overwrite=True)
    >>> sorted({row.split(",")[3] for row in (root / "labels.csv").read_text().split()[1:]})
    ['test', 'train']
    """
    root = Path(root)
    if min(n_train_good, n_test_good, n_test_per_defect) < 0:
        raise ValueError("write_line_dataset: counts must be >= 0, got "
                         f"{n_train_good}, {n_test_good}, {n_test_per_defect}")
    tests = test_line or conveyor
    wanted = {GOOD: int(n_test_good)} if test_line else {GOOD: int(n_train_good + n_test_good)}
    wanted.update({kind: int(n_test_per_defect) for kind in tests.defects})
    plan = [(conveyor, {GOOD: int(n_train_good)}), (test_line, wanted)] if test_line else \
        [(conveyor, wanted)]
    for line, quota in plan:
        no_good = quota[GOOD] > 0 and line.defect_rate >= 1.0
        no_defect = any(n > 0 for k, n in quota.items() if k != GOOD) and line.defect_rate <= 0.0
        if no_good or no_defect:
            raise ValueError(f"write_line_dataset: a line with defect_rate {line.defect_rate} "
                             f"cannot give {'good' if no_good else 'defective'} parts")
    if (root / LABELS).exists() or (root / "img").exists():
        if not overwrite:
            raise FileExistsError(f"write_line_dataset: {root} already holds a data set; "
                                  "pass overwrite=True to replace it")
        shutil.rmtree(root / "img", ignore_errors=True)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["file,label,defect_type,split"]
    for line, quota in plan:
        rows += _cut(root, line, quota, int(n_train_good) if line is conveyor else 0)
    (root / LABELS).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _cut(root: Path, line: SimulatedConveyor, wanted: dict[str, int], n_train: int) -> list[str]:
    """Cut parts from ``line`` until each kind's quota is met; the first ``n_train`` good
    parts are ``train``. Returns the labels.csv rows."""
    half = int(min(line.pitch_px, line.width)) // 2
    counts = dict.fromkeys(wanted, 0)
    rows = []
    part_id = 0
    limit = 50 * sum(wanted.values()) + 100  # a quota the line cannot fill ends, never hangs
    while any(counts[k] < wanted[k] for k in wanted):
        part_id += 1
        if part_id > limit:
            raise ValueError(f"write_line_dataset: {limit} parts did not fill {wanted}")
        truth = line.part_truth(part_id)
        kind = truth.defect
        if counts.get(kind, 0) >= wanted.get(kind, 0):
            continue
        split = "train" if kind == GOOD and counts[kind] < n_train else "test"
        counts[kind] += 1
        frame = line.frame(int(round(line.crossing_time(part_id) * line.fps)))
        x0 = max(0, min(line.width - 2 * half, int(truth.center_xy[0]) - half))
        name = f"img/{line.seed}_{part_id:05d}.png"
        if not cv2.imwrite(str(root / name), frame.image[:, x0:x0 + 2 * half]):
            raise OSError(f"write_line_dataset: could not write {root / name}")
        rows.append(f"{name},{truth.label},{'' if kind == GOOD else kind},{split}")
    return rows
