"""The evaluation's per-type and per-map metrics, and the int8 rule, on numbers worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.int8_check import INT8_MAX_AUROC_CHANGE, apply_rule, compare, int8_paths
from training.metrics import aupro, per_type, pixel_metrics


def test_per_type_counts_recall_and_auroc_against_the_good_parts():
    types = ["good", "good", "good", "scratch", "scratch", "dent", "dent", "dent"]
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.2, 0.5, 1.1, 1.5, 0.4, 0.9, 2.0, 0.5]
    predicted = [s >= 1.0 for s in scores]
    out = per_type(labels, types, scores, predicted)
    assert set(out) == {"good", "scratch", "dent"}
    # scratch 1.5 beats all three goods, 0.4 beats one: 4 of 6 pairs
    assert out["scratch"] == {"n": 2, "image_auroc": pytest.approx(4 / 6), "recall": 0.5}
    # dent: 0.9 beats 2, 2.0 beats 3, 0.5 ties 0.5 and beats 0.2 -> (2 + 3 + 1.5) / 9
    assert out["dent"]["image_auroc"] == pytest.approx(6.5 / 9)
    assert out["dent"]["recall"] == pytest.approx(1 / 3)
    assert out["good"] == {"n": 3, "false_reject_rate": pytest.approx(1 / 3)}


def test_pixel_metrics_of_a_map_on_the_defect_and_of_one_beside_it():
    mask = np.zeros((32, 32), bool)
    mask[10:16, 10:16] = True
    on = mask.astype(np.float32) + 0.01 * np.random.default_rng(0).random(mask.shape)
    beside = np.roll(on, 12, axis=1)
    good = np.zeros((32, 32), bool)
    best = pixel_metrics([on, 0.005 * on], [mask, good])
    assert best["pixel_auroc"] == pytest.approx(1.0) and best["aupro"] == pytest.approx(1.0, abs=0.01)
    worst = pixel_metrics([beside], [mask])
    assert worst["pixel_auroc"] < 0.6 and worst["aupro"] < 0.3
    assert pixel_metrics([on], [good]) == {}  # no defect pixel: nothing to measure


def test_int8_compare_counts_own_and_fused_flips_and_applies_the_limit():
    labels = np.array([0, 0, 1, 1])
    f = np.array([0.2, 0.95, 1.4, 0.9])  # AUROC 0.75
    fused_f = np.array([False, False, True, False])
    same = compare(f, f + 0.001, labels, fused_f, fused_f, ["a", "b", "c", "d"])
    assert same["passes"] and same["verdicts_flipped"] == 0 and same["auroc_change"] == 0.0
    flip = compare(f, np.array([0.2, 0.95, 1.4, 1.05]), labels, fused_f,
                   np.array([False, True, True, False]), ["a", "b", "c", "d"])
    # the copy flips d itself, and the fused verdict of b (through the other model's rule)
    assert (flip["verdicts_flipped"], flip["fused_verdicts_flipped"]) == (1, 1)
    assert flip["flipped_images"] == ["b", "d"] and not flip["passes"]
    # AUROC 0.75 -> 1.0 without a verdict flipped: fails on the AUROC limit alone
    ranked = compare(f, np.array([0.2, 0.95, 1.4, 0.97]), labels, fused_f, fused_f, list("abcd"))
    assert ranked["auroc_change"] == pytest.approx(0.25)
    assert ranked["auroc_change"] > INT8_MAX_AUROC_CHANGE
    assert ranked["verdicts_flipped"] == 0 and not ranked["passes"]


def test_apply_rule_deletes_only_failing_copies_and_only_when_asked(tmp_path):
    for kind in ("autoencoder", "classifier"):
        (tmp_path / f"{kind}.int8.onnx").write_bytes(b"x")
    paths = int8_paths(tmp_path)
    assert set(paths) == {"autoencoder", "classifier"}

    def checks():
        return {"autoencoder": {"passes": True, "auroc_change": 0.001, "verdicts_flipped": 0,
                                "fused_verdicts_flipped": 0},
                "classifier": {"passes": False, "auroc_change": -0.02, "verdicts_flipped": 2,
                               "fused_verdicts_flipped": 1}}

    lines = apply_rule(checks(), paths, prune=False)
    assert all(p.is_file() for p in paths.values())
    assert "fails (kept by --keep-int8" in lines[1] and "-0.0200" in lines[1]
    c = checks()
    lines = apply_rule(c, paths, prune=True)
    assert (c["autoencoder"]["action"], c["classifier"]["action"]) == ("kept", "pruned")
    assert paths["autoencoder"].is_file() and not paths["classifier"].exists()
    assert lines[1].startswith("int8 classifier: pruned (deleted, on these images: the line "
                               "runs the float model")  # what it means, where it is printed
    assert int8_paths(tmp_path) == {"autoencoder": paths["autoencoder"]}


def test_aupro_of_a_flat_map_is_chance_not_perfect():
    """A map with one value everywhere (a class activation map with no evidence) ties every
    pixel: its curve is the diagonal, AUPRO 0.15 at FPR 0.3, as a random map scores."""
    mask = np.zeros((40, 40), bool)
    mask[5:12, 5:12] = True
    flat = np.zeros(mask.shape, np.float32)
    assert aupro([flat, flat], [mask, np.zeros_like(mask)]) == pytest.approx(0.15)
    assert pixel_metrics([flat], [mask])["pixel_auroc"] == pytest.approx(0.5)
    # two levels: the defect region and a third of the good pixels high, the rest low
    two = np.zeros(mask.shape, np.float32)
    two[mask] = 1.0
    good = np.flatnonzero(~mask.ravel())
    two.ravel()[good[: len(good) // 3]] = 1.0
    fpr = (len(good) // 3) / len(good)  # ~0.33 > 0.3: full PRO only past the limit
    assert aupro([two], [mask]) == pytest.approx(0.5 * 0.3 / fpr, abs=1e-6)


def test_parts_not_found_rank_as_most_defective_and_tie_with_each_other():
    import warnings

    from training.metrics import average_precision, roc_auc, roc_curve

    # two parts not found (NaN): one defective, one good; they tie above every score
    scores = [np.nan, np.nan, 0.9, 0.2, 0.5]
    labels = [1, 0, 1, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" from inf - inf
        fpr, tpr, thresholds = roc_curve(scores, labels)
        ap = average_precision(scores, labels)
        auc = roc_auc(scores, labels)
    # the tied pair is one step of the curve: (1/3, 1/2) at once, never (0, 1/2) first
    assert list(fpr[:2]) == [0.0, pytest.approx(1 / 3)] and list(tpr[:2]) == [0.0, 0.5]
    assert np.isinf(thresholds[1])
    # average precision: 1/2 at recall 1/2 (the tie), 2/3 at recall 1
    assert ap == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # pairs (defect, good): NaN-defect vs NaN-good ties (1/2), beats 0.2 and 0.5; 0.9 beats 0.2,
    # 0.5 and loses to the NaN-good: (2.5 + 2) / 6
    assert auc == pytest.approx(4.5 / 6)
