"""The shown scale: 1.0 is each model's threshold, whichever normalization its file declares."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import station.models.scoring
import station.pipeline.rows
from station.decision import fused_score
from station.models.scoring import ODDS, P_CLIP, RATIO, denormalize, normalize


@pytest.mark.parametrize("module", [station.models.scoring, station.pipeline.rows])
def test_the_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.parametrize("threshold", [0.02, 0.5, 0.9987, 0.999999])
def test_odds_put_the_threshold_at_one_and_keep_the_order(threshold):
    p = np.sort([0.0, 1e-4, 0.3, threshold, 0.99, 0.99999, 1.0])
    n = normalize(p, threshold, ODDS)
    assert normalize(threshold, threshold, ODDS) == pytest.approx(1.0)
    assert np.all(np.isfinite(n)) and np.all(n > 0)  # p = 1.0 from a float32 sigmoid too
    assert np.all(np.diff(n) >= 0)
    # the verdict is the one the raw probability gives: at or above the threshold rejects
    np.testing.assert_array_equal(n >= 1.0, p >= threshold)
    inside = (p > P_CLIP) & (p < 1 - P_CLIP)
    np.testing.assert_allclose(denormalize(n[inside], threshold, ODDS), p[inside], rtol=1e-9)


def test_odds_are_the_exponential_of_the_logit_margin():
    p, t = np.array([0.2, 0.7, 0.995]), 0.9
    logit = np.log(p / (1 - p)) - np.log(t / (1 - t))
    np.testing.assert_allclose(normalize(p, t, ODDS), np.exp(logit), rtol=1e-12)


def test_a_sure_classifier_outranks_an_autoencoder_just_over_its_limit():
    """Why the classifier is shown as odds: fused by the larger score, a part the classifier
    is sure of (p = 0.99999 against a threshold of 0.9987) must rank above a good part the
    autoencoder scores 1.3, and a good part with p = 0.9 must rank below a defect the
    autoencoder scores 0.8. On the probability ratio both orders come out wrong."""
    t = 0.9987
    sure_defect = fused_score(0.2, normalize(0.99999, t, ODDS), "either")
    ae_false_alarm = fused_score(1.3, normalize(0.01, t, ODDS), "either")
    assert sure_defect > ae_false_alarm
    assert fused_score(0.2, normalize(0.99999, t, RATIO), "either") < ae_false_alarm
    cls_doubt = fused_score(0.1, normalize(0.9, t, ODDS), "either")
    ae_defect = fused_score(0.8, normalize(0.05, t, ODDS), "either")
    assert ae_defect > cls_doubt
    assert fused_score(0.8, normalize(0.05, t, RATIO), "either") < fused_score(
        0.1, normalize(0.9, t, RATIO), "either")


@pytest.mark.parametrize("threshold", [1e-6, 0.99999997])  # the floor; between float32 steps
def test_no_part_is_moved_across_a_threshold_at_the_ends(threshold):
    p = np.array([0.0, 1e-9, np.nextafter(np.float32(threshold), np.float32(0)), threshold,
                  np.nextafter(np.float32(threshold), np.float32(1)), 1.0], dtype=np.float64)
    np.testing.assert_array_equal(normalize(p, threshold, ODDS) >= 1.0, p >= threshold)


@pytest.mark.parametrize("method, threshold, message", [
    (ODDS, 1.0, "below 1"), (ODDS, 1e-13, "above 1e-12"), (ODDS, 0.0, "positive"),
    (RATIO, float("inf"), "positive"),
    ("sigmoid", 0.5, "unknown score normalization"),
])
def test_a_threshold_the_method_cannot_use_is_refused(method, threshold, message):
    with pytest.raises(ValueError, match=message):
        normalize(0.5, threshold, method)
