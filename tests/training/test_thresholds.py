"""Threshold rules, score normalization and the fusion rule: what the line's verdicts rest on."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from station.decision import ERROR, PASS, REJECT, Evidence, decide, fused_score
from station.models.scoring import denormalize, normalize
from training.thresholds import choose_threshold, f1_optimal, good_quantile, recall_optimal


def test_all_good_validation_never_rejects_everything():
    rng = np.random.default_rng(0)
    for scores in (rng.normal(5.0, 1.0, 200), rng.exponential(1.0, 30), np.full(25, 3.0),
                   np.array([0.0, 0.0, 0.0]), np.array([0.02, 0.01, 0.03, 0.015])):
        choice = choose_threshold(scores)
        assert choice.rule == "good_quantile"
        assert choice.value > 0
        rejected = (scores >= choice.value).mean()
        assert rejected < 0.05, (scores[:5], choice)
        assert choice.value > np.median(scores)


def test_good_quantile_has_a_margin_above_the_quantile():
    scores = np.linspace(0.0, 10.0, 1001)
    choice = good_quantile(scores, quantile=0.99, margin=0.5)
    q = np.quantile(scores, 0.99)
    assert choice.value == pytest.approx(q + 0.5 * (q - np.median(scores)))
    assert choice.details["good_rejected"] == 0


def test_f1_optimal_separable_sets_cut_between_classes():
    good = np.array([1.0, 1.5, 2.0, 2.2])
    bad = np.array([3.0, 4.0, 5.0])
    choice = choose_threshold(np.r_[good, bad], np.r_[np.zeros(4), np.ones(3)])
    assert choice.rule == "f1_optimal"
    assert 2.2 < choice.value < 3.0
    assert choice.value == pytest.approx(2.6)
    assert choice.details["f_beta"] == pytest.approx(1.0)


def test_f1_optimal_on_overlapping_mixed_set_maximizes_f1():
    rng = np.random.default_rng(1)
    good, bad = rng.normal(0.0, 1.0, 300), rng.normal(2.0, 1.0, 60)
    s = np.r_[good, bad] + 10.0
    y = np.r_[np.zeros(300), np.ones(60)]
    choice = f1_optimal(s, y)

    def f1(t):
        p = s >= t
        tp, fp, fn = (p & (y == 1)).sum(), (p & (y == 0)).sum(), (~p & (y == 1)).sum()
        return 2 * tp / (2 * tp + fp + fn)

    best = max(f1(t) for t in np.unique(s))
    assert f1(choice.value) == pytest.approx(best)
    assert choice.details["f_beta"] == pytest.approx(best)
    # a mixed set must not yield a reject-everything threshold
    assert (s[y == 0] >= choice.value).mean() < 0.5


def test_recall_optimal_cut_spends_the_false_reject_budget_on_defects():
    """Fold 1 of the screws on an AVX-512 machine in miniature: the validation defects all
    score high, one good part scores just under them, and new defects score in between. The
    F1 cut sits just under the validation defects and passes the new ones; the recall cut
    rejects the outlying good part (1 of 30, within 5 %) and catches them."""
    good = np.r_[np.linspace(-8.0, 6.0, 29), 13.6]  # logits
    val_defects = np.array([15.9, 15.9, 20.0, 30.0, 34.5, 34.5, 34.5, 34.5, 34.5, 34.5])
    s, y = np.r_[good, val_defects], np.r_[np.zeros(30), np.ones(10)]
    f1_cut, recall_cut = f1_optimal(s, y, max_false_reject=0.05), recall_optimal(s, y, 0.05)
    assert 13.6 < f1_cut.value < 15.9
    assert recall_cut.rule == "recall_optimal"
    assert 6.0 < recall_cut.value < 13.6 and recall_cut.value == pytest.approx(9.8)
    assert recall_cut.details == {"max_false_reject": 0.05, "n_good": 30, "n_defect": 10,
                                  "tp": 10, "fp": 1}
    new_defects = np.array([8.5, 9.9, 11.0, 12.5])
    assert (new_defects >= f1_cut.value).sum() == 0
    assert (new_defects >= recall_cut.value).sum() == 3
    assert choose_threshold(s, y, aim="recall") == recall_cut


def test_recall_optimal_never_rejects_more_good_parts_than_the_budget():
    rng = np.random.default_rng(4)
    for n_good, cap in ((74, 0.05), (38, 0.05), (19, 0.05), (200, 0.01), (30, 0.0025)):
        good, bad = rng.normal(0.0, 1.0, n_good), rng.normal(1.5, 1.0, 30)
        s, y = np.r_[good, bad], np.r_[np.zeros(n_good), np.ones(30)]
        cut = recall_optimal(s, y, cap)
        rejected = int((good >= cut.value).sum())
        assert rejected == cut.details["fp"] <= int(cap * n_good + 1e-9)
        # no lower cut within the budget: one more good part over it would break the budget
        lower = np.sort(good)[::-1][rejected]
        assert lower < cut.value
        # and never a higher cut than the F1 rule within the same budget
        assert cut.value <= f1_optimal(s, y, max_false_reject=cap).value + 1e-12
    # a score that tells nothing apart (all tied): the cut passes every validation part,
    # where rejecting everything would stop the line
    s, y = np.r_[np.full(20, 5.0), 5.0, 5.0], np.r_[np.zeros(20), 1, 1]
    cut = recall_optimal(s, y, 0.05)
    assert cut.value > 5.0 and cut.details["fp"] == cut.details["tp"] == 0


def test_threshold_input_errors_are_clear():
    with pytest.raises(ValueError, match="no validation scores"):
        choose_threshold([])
    with pytest.raises(ValueError, match="only defective"):
        choose_threshold([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        choose_threshold([1.0, float("nan")])
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        choose_threshold([1.0, 2.0], [0, 1, 1])
    with pytest.raises(ValueError, match="threshold aim 'precision'"):
        choose_threshold([1.0, 2.0], [0, 1], aim="precision")
    with pytest.raises(ValueError, match="both good and defective"):
        recall_optimal([1.0, 2.0], [0, 0])


def test_normalize_puts_threshold_at_one():
    assert normalize(4.0, 4.0) == 1.0
    assert normalize(2.0, 4.0) == 0.5
    np.testing.assert_allclose(normalize(np.array([1.0, 8.0]), 4.0), [0.25, 2.0])
    assert denormalize(normalize(3.3, 1.7), 1.7) == pytest.approx(3.3)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            normalize(1.0, bad)


def test_decide_rules_and_errors():
    assert decide(1.2, 0.1, "either") == REJECT
    assert decide(0.5, 0.1, "either") == PASS
    assert decide(1.0, 0.1, "either") == REJECT  # at the threshold = defective
    assert decide(1.2, 0.1, "both") == PASS
    assert decide(1.2, 1.1, "both") == REJECT
    assert decide(1.2, None, "autoencoder") == REJECT
    assert decide(None, 0.3, "classifier") == PASS
    assert decide(None, 0.3, "either") == ERROR
    assert decide(float("nan"), 0.3, "both") == ERROR
    assert decide(0.3, None, "classifier") == ERROR
    # recipe thresholds on the normalized scale
    assert decide(1.2, 0.1, "either", ae_threshold=1.5) == PASS
    assert decide(0.9, 0.1, "autoencoder", ae_threshold=0.8) == REJECT
    with pytest.raises(ValueError, match="unknown decision rule"):
        decide(1.0, 1.0, "majority")


def test_fused_score_agrees_with_decide():
    rng = np.random.default_rng(2)
    for rule in ("either", "both", "autoencoder", "classifier", "sum"):
        for _ in range(200):
            a, c = rng.uniform(0, 2, 2)
            at, ct = rng.uniform(0.5, 1.5, 2)
            sums = Evidence(*rng.uniform(0.2, 3.0, 2), rng.uniform(-2, 2)) if rule == "sum" else None
            f = fused_score(a, c, rule, at, ct, sums)
            assert (f >= 1.0) == (decide(a, c, rule, at, ct, sums) == REJECT)
    assert math.isnan(fused_score(None, 0.5, "autoencoder"))
    assert math.isnan(fused_score(None, 0.5, "sum", sums=Evidence(1.0, 1.0)))


def test_the_sum_rule_adds_the_two_models_evidence():
    """Each score as log(score / threshold) / its spread over good parts, added: a part each
    model finds a little suspicious is rejected, one a model finds far over its threshold
    while the other finds it clean is not, unless the evidence outweighs it."""
    sums = Evidence(ae_spread=0.5, cls_spread=2.0, threshold=0.0)
    assert decide(0.9, 0.9, "either") == PASS
    assert decide(1.2, 1.2, "sum", sums=sums) == REJECT  # both a little over
    assert decide(1.3, 0.01, "sum", sums=sums) == PASS  # log 1.3/0.5 = 0.52 < log 100/2 = 2.3
    assert decide(1.3, 0.01, "either") == REJECT
    assert decide(3.0, 0.2, "sum", sums=sums) == REJECT  # 2.2 - 0.8: the autoencoder is sure
    assert decide(0.0, 1e9, "sum", sums=sums) == PASS  # a score of 0: little evidence, not -inf
    assert decide(1.2, 1.2, "sum", sums=replace(sums, threshold=1.0)) == PASS  # looser
    assert decide(1.2, None, "sum", sums=sums) == ERROR
    with pytest.raises(ValueError, match="evidence spread"):
        decide(1.2, 1.2, "sum")


def test_the_sum_threshold_spends_the_false_reject_budget_on_the_fusion_images():
    from training.fusion import fusion_rule, sum_threshold

    rng = np.random.default_rng(5)
    n_good, n_bad = 60, 20
    ae = np.r_[np.exp(rng.normal(-1.0, 0.5, n_good)), np.exp(rng.normal(0.5, 0.5, n_bad))]
    cl = np.r_[np.exp(rng.normal(-5.0, 2.0, n_good)), np.exp(rng.normal(3.0, 2.0, n_bad))]
    labels = np.r_[np.zeros(n_good), np.ones(n_bad)].astype(int)
    spreads = (0.5, 2.0)
    t = sum_threshold(ae, cl, labels, spreads, max_false_reject=0.05)
    total = np.array([Evidence(*spreads).total(a, c) for a, c in zip(ae, cl, strict=True)])
    assert (total[labels == 0] >= t).sum() <= 3  # 5 % of 60
    assert (total[labels == 1] >= t).sum() >= 18
    assert sum_threshold(ae, cl, np.zeros_like(labels), spreads) == 0.0  # no defects to set it
    rule, _, _, info = fusion_rule(ae, cl, labels, "sum", spreads)
    assert rule == "sum" and info["sum_threshold"] == t and info["val_f1"] > 0.9
    # measured whatever the rule, so the folder can be judged either way
    assert fusion_rule(ae, cl, labels, "either", spreads)[3]["sum_threshold"] == t
    with pytest.raises(ValueError, match="evidence spreads"):
        fusion_rule(ae, cl, labels, "sum")


def test_weak_scores_with_many_defects_do_not_reject_every_good_part():
    rng = np.random.default_rng(3)
    good, bad = rng.normal(0.0, 1.0, 40), rng.normal(0.2, 1.0, 120)  # nearly useless score
    s, y = np.r_[good, bad] + 5.0, np.r_[np.zeros(40), np.ones(120)]
    unconstrained = f1_optimal(s, y)
    assert (s[y == 0] >= unconstrained.value).mean() > 0.5  # F1 alone says "reject almost all"
    choice = choose_threshold(s, y)
    assert choice.rule == "f1_optimal"
    assert (s[y == 0] >= choice.value).mean() <= 0.2


def test_auto_rule_leaves_a_chance_level_model_out_of_the_verdict():
    """The fusion rule is picked on a few dozen validation images; a model that ranks them no
    better than chance must not take part through a lucky F1 on that small set."""
    from training.fusion import fusion_rule

    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(30), np.ones(30)].astype(int)
    classifier = np.r_[rng.uniform(0.2, 0.9, 30), rng.uniform(0.8, 2.0, 30)]  # good, not perfect
    autoencoder = rng.uniform(0.5, 1.5, 60)  # noise
    rule, _, cls_t, info = fusion_rule(autoencoder, classifier, labels, "auto")
    assert rule == "classifier" and cls_t == 1.0
    assert info["val_auroc"]["autoencoder"] < 0.75 < info["val_auroc"]["classifier"]
    # both useful: both decide (either), each at its own threshold, even where one model
    # alone happens to score a better F1 on these 60 images
    ae_good = np.r_[rng.uniform(0.2, 0.95, 30), rng.uniform(0.9, 2.0, 30)]
    weak_ae = np.r_[rng.uniform(0.2, 1.2, 30), rng.uniform(0.6, 2.0, 30)]
    for ae in (ae_good, weak_ae):
        rule, a, c, info = fusion_rule(ae, classifier, labels, "auto")
        assert rule == "either" and (a, c) == (1.0, 1.0)  # not re-fitted to these images
    assert info["val_auroc"]["autoencoder"] > 0.75
    # a rule asked for is honoured whatever the validation says
    assert fusion_rule(autoencoder, classifier, labels, "either")[0] == "either"
