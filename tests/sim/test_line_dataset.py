"""A data set recorded from the simulated line: what the demo's models are trained on."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from station.sim.conveyor import SimulatedConveyor
from station.sim.line_dataset import write_line_dataset
from station.sources.datasets import read_dataset


def _line(**kw) -> SimulatedConveyor:
    settings = dict(width=480, height=270, fps=30, speed_px_s=480, pitch_px=240,
                    defect_rate=0.5, defects=("scratch", "broken_tip"), seed=5)
    return SimulatedConveyor(**{**settings, **kw})


def test_counts_splits_and_labels_are_what_was_asked(tmp_path):
    root = write_line_dataset(tmp_path / "d", _line(), n_train_good=6, n_test_good=3,
                              n_test_per_defect=2)
    samples = read_dataset(root)
    assert samples.layout == "csv"
    kinds = Counter((s.split, s.defect_type) for s in samples)
    assert kinds == {("train", "good"): 6, ("test", "good"): 3, ("test", "scratch"): 2,
                     ("test", "broken_tip"): 2}
    assert all((s.label == 0) == (s.defect_type == "good") for s in samples)


def test_each_image_is_one_whole_part_centred_as_the_line_saw_it(tmp_path):
    line = _line()
    root = write_line_dataset(tmp_path / "d", line, 4, 0, 1)
    for sample in read_dataset(root):
        image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (270, 240)  # the frame's height, the pitch's width
        part_id = int(sample.path.stem.split("_")[1])
        truth = line.part_truth(part_id)
        assert truth.defect == sample.defect_type
        dark = image < 0.6 * np.median(image)
        n, _, stats, centroids = cv2.connectedComponentsWithStats(dark.astype(np.uint8))
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = stats[biggest, :4]
        assert x > 0 and y > 0 and x + w < 240 and y + h < 270, "the part is cut whole"
        assert abs(centroids[biggest][0] - 120) < 30, "and centred in its window"


def test_same_line_same_files_and_an_existing_set_is_kept(tmp_path):
    a = write_line_dataset(tmp_path / "a", _line(), 3, 1, 1)
    b = write_line_dataset(tmp_path / "b", _line(), 3, 1, 1)
    names = sorted(p.name for p in (a / "img").iterdir())
    assert names == sorted(p.name for p in (b / "img").iterdir())
    assert all((a / "img" / n).read_bytes() == (b / "img" / n).read_bytes() for n in names)
    assert (a / "labels.csv").read_text() == (b / "labels.csv").read_text()
    with pytest.raises(FileExistsError, match="already holds a data set"):
        write_line_dataset(a, _line(), 3, 1, 1)


def test_a_line_that_cannot_fill_the_quota_is_refused_not_looped(tmp_path):
    with pytest.raises(ValueError, match="cannot give defective parts"):
        write_line_dataset(tmp_path / "d", _line(defect_rate=0.0), 3, 1, 1)


def test_test_parts_come_from_the_other_stretch_of_belt(tmp_path):
    train_line, test_line = _line(seed=5, defect_rate=0.0), _line(seed=6)
    root = write_line_dataset(tmp_path / "d", train_line, 4, 2, 1, test_line=test_line)
    samples = read_dataset(root)
    assert {s.path.stem.split("_")[0] for s in samples if s.split == "train"} == {"5"}
    assert {s.path.stem.split("_")[0] for s in samples if s.split == "test"} == {"6"}
    assert Counter(s.defect_type for s in samples) == {"good": 6, "scratch": 1, "broken_tip": 1}
