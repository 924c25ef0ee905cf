"""The split: which image does what in a training run, and that nothing scored was learned."""

from __future__ import annotations

import json

import pytest

from station.sim import write_mvtec_dataset
from station.sources.datasets import read_dataset
from training.data import TRAINED_ROLES, SplitOptions, learned_good, make_split


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = write_mvtec_dataset(tmp_path_factory.mktemp("split") / "data", n_train_good=40,
                               n_test_good=12, n_test_per_defect=3, size=96, seed=5)
    return read_dataset(root)


def paths(items) -> set[str]:
    return {str(s.path) for s in items}


def test_a_share_of_the_labeled_good_images_is_learned_from(samples):
    before = make_split(samples, SplitOptions(folds=3, fold=1))
    split = make_split(samples, SplitOptions(folds=3, fold=1, good_train_share=0.7))
    roles = split.roles
    pool_good = [s for s in before.roles["val_labeled"] if s.label == 0]
    assert len(pool_good) == 8 and before.roles["train_labeled_good"] == []
    # 0.7 of the other folds' 8 good test images: good, and out of the thresholds' images
    learned = roles["train_labeled_good"]
    assert len(learned) == 6 and all(s.label == 0 and s.split == "test" for s in learned)
    assert paths(learned) | paths(s for s in roles["val_labeled"] if s.label == 0) == \
        paths(pool_good)
    assert not paths(learned) & paths(roles["val_labeled"])
    # both models learn from them; the scored fold and everything else are as before
    assert paths(learned_good(roles)) == paths(roles["train_good"]) | paths(learned)
    assert paths(split.trained()) >= paths(learned)
    for role in ("eval", "train_good", "val_good", "thr_good", "holdout_good", "train_defect"):
        assert paths(roles[role]) == paths(before.roles[role]), role
    assert not paths(roles["eval"]) & paths(split.trained())
    assert not paths(roles["holdout_good"]) & paths(split.trained())


def test_a_fold_with_no_test_image_is_refused_before_training(samples):
    """Twelve good test images are the largest group: a 13th fold would train models that
    no image could ever score, so the split says how many folds the data set holds."""
    assert make_split(samples, SplitOptions(folds=12, fold=11)).roles["eval"]
    with pytest.raises(ValueError, match=r"--folds 13 --fold 12: this fold holds none of the "
                                         r"\d+ test images .* use --folds 12 or fewer"):
        make_split(samples, SplitOptions(folds=13, fold=12))


def test_a_split_recorded_before_the_share_reads_as_it_was(samples, tmp_path):
    """``station evaluate`` makes the split again from split.json's options: one written
    before ``good_train_share`` existed has none of the labeled good images learned from."""
    options = SplitOptions(folds=3, fold=0).to_dict()
    del options["good_train_share"]
    recorded = json.loads(json.dumps(options))
    split = make_split(samples, SplitOptions(**recorded))
    assert split.roles["train_labeled_good"] == []
    assert set(TRAINED_ROLES) <= set(split.roles)
    with pytest.raises(ValueError, match="good_train_share = 1.0: expected a share in"):
        make_split(samples, SplitOptions(folds=3, fold=0, good_train_share=1.0))


def test_models_for_the_line_learn_from_every_good_image(samples):
    """Without folds nothing could ever score a held-aside train good image (``station
    evaluate`` refuses the training data set), so every one joins the bank, the per-pixel
    statistics or the threshold goods; with folds a share is held aside, rotating."""
    line = make_split(samples, SplitOptions())
    train_good = paths(s for s in samples if s.split != "test" and s.label == 0)
    assert line.roles["holdout_good"] == []
    assert paths(line.roles["train_good"] + line.roles["val_good"]
                 + line.roles["thr_good"]) == train_good
    assert len(line.roles["train_good"]) > len(make_split(
        samples, SplitOptions(folds=3, fold=0)).roles["train_good"])
    held = [paths(make_split(samples, SplitOptions(folds=3, fold=k)).roles["holdout_good"])
            for k in range(3)]
    assert all(len(h) == 6 for h in held) and not held[0] & held[1]
    assert not held[0] & paths(make_split(samples, SplitOptions(folds=3, fold=0)).trained())
