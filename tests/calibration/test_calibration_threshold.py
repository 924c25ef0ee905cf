"""Threshold calibration holds the requested false-reject rate on FRESH good parts.

Statistics are tested on draws from a known distribution (the true FRR of any threshold is
then exact); the ``station calibrate threshold`` step is tested end to end with a tiny real
ONNX autoencoder (built with ``onnx.helper``) scoring synthetic parts through the shared crop,
preprocessing and onnxruntime code.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.report import CalibrationError
from calibration.threshold import (
    binom_cdf,
    clopper_pearson,
    detection_rate,
    min_good_parts,
    propose_threshold,
)
from station.cli import main
from station.config import load_recipe


def normal_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def test_binomial_helpers_match_exact_values():
    assert binom_cdf(3, 10, 0.5) == pytest.approx(176 / 1024)
    assert binom_cdf(7, 10, 0.5) == pytest.approx(968 / 1024)
    p = Fraction(995, 1000)
    upper = sum(math.comb(3000, i) * p**i * (1 - p) ** (3000 - i) for i in range(2991, 3001))
    assert binom_cdf(2990, 3000, 0.995) == pytest.approx(float(1 - upper), rel=1e-9)
    lo, hi = clopper_pearson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-6)
    assert min_good_parts(0.01) == 299


def test_fresh_sample_false_reject_rate_is_within_sampling_error():
    rng = np.random.default_rng(42)
    frr = 0.01
    prop = propose_threshold(rng.normal(size=3000), frr)
    assert not prop.limited_by_sample
    fresh = rng.normal(size=40000)
    rejected = int(np.count_nonzero(fresh > prop.threshold))
    lo, hi = clopper_pearson(rejected, fresh.size, 0.99)
    # held: the requested rate is not significantly exceeded on fresh parts ...
    assert lo <= frr
    # ... and not thrown away: the bound costs a little margin, not an order of magnitude
    assert hi >= 0.5 * frr
    assert normal_sf(prop.threshold) <= frr  # the exact FRR of this threshold
    assert prop.sample_frr < frr and prop.frr_upper_bound >= normal_sf(prop.threshold)


def test_bound_holds_with_stated_confidence_where_raw_quantile_does_not():
    rng = np.random.default_rng(7)
    frr, n, runs = 0.02, 400, 300
    exceeded_bound = exceeded_raw = 0
    for _ in range(runs):
        scores = rng.normal(size=n)
        prop = propose_threshold(scores, frr, confidence=0.95)
        exceeded_bound += normal_sf(prop.threshold) > frr
        exceeded_raw += normal_sf(prop.raw_quantile) > frr
    # 95 % confidence: at most 5 % of calibrations miss (binomial slack for 300 runs)
    assert exceeded_bound / runs <= 0.05 + 0.04
    assert exceeded_raw / runs > 0.3  # the raw quantile misses often: why the bound is used


def test_small_sample_is_honest_about_what_it_can_vouch_for():
    scores = np.random.default_rng(3).gamma(2.0, 1.0, size=100)
    prop = propose_threshold(scores, 0.005)
    assert prop.limited_by_sample and prop.threshold == scores.max()
    text = "\n".join(prop.report_lines())
    assert "cannot vouch for an FRR of 0.5000%" in text
    assert "1/N = 1.000%" in text
    assert f"at least {min_good_parts(0.005)} good parts" in text
    with pytest.raises(CalibrationError, match="--frr"):
        propose_threshold(scores, 0.0)
    with pytest.raises(CalibrationError, match="NaN"):
        propose_threshold([1.0, float("nan")], 0.1)


def test_detection_rate_reports_an_interval():
    rep = detection_rate([0.5, 2.0, 3.0, 4.0], 1.0)
    assert rep.detected == 3 and rep.rate == 0.75
    assert rep.interval[0] < 0.75 < rep.interval[1]


# --- end to end: tiny real ONNX autoencoder ------------------------------------------------

SIZE = 32


def tiny_model(path: Path, kind: str, threshold: float, normalization: dict | None = None
               ) -> Path:
    """A real graph with real metadata: anomaly_map = |image - background level|, score = its
    mean (autoencoder); p_defect = sigmoid(40 * (that mean - 0.04)) (classifier)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from station.vision.align import AlignParams
    from station.vision.localize import LocalizeParams
    from station.vision.preprocess import PreprocessSpec

    spec = PreprocessSpec(size=SIZE, channels=1)
    inits = [
        helper.make_tensor("bg", TensorProto.FLOAT, [], [float(spec.background_value)]),
        helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("offset", TensorProto.FLOAT, [], [0.04]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [40.0]),
    ]
    nodes = [
        helper.make_node("Sub", ["image", "bg"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["anomaly_map"]),
        helper.make_node("ReduceMean", ["anomaly_map", "axes"], ["score"], keepdims=0),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])
    if kind == "autoencoder":
        outputs = [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, SIZE, SIZE]),
                   helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])]
    else:
        nodes += [
            helper.make_node("Sub", ["score", "offset"], ["centred"]),
            helper.make_node("Mul", ["centred", "gain"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["p_defect"]),
        ]
        outputs = [helper.make_tensor_value_info("p_defect", TensorProto.FLOAT, ["N"])]
    graph = helper.make_graph(nodes, f"tiny_{kind}", [image], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    props = {
        "format_version": "1", "kind": kind, "version": "test", "created": "2026-01-01",
        "preprocess": spec.to_json(), "localize": json.dumps(LocalizeParams().to_dict()),
        "align": json.dumps(AlignParams().to_dict()), "threshold": repr(threshold),
        "score_normalization": json.dumps(normalization or {"method": "ratio"}),
    }
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def write_parts(folder: Path, n: int, seed: int, defect: str | None = None) -> None:
    from station.sim import render_part

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        part = render_part(rng, (96, 128), defect=defect)
        cv2.imwrite(str(folder / f"{i:03d}.png"), part.image)


def test_threshold_step_end_to_end_with_a_real_onnx_model(tmp_path: Path, capsys):
    from station.sim import DEFECT_TYPES

    ae_threshold, cls_threshold = 0.5, 0.8
    tiny_model(tmp_path / "ae.onnx", "autoencoder", ae_threshold)
    tiny_model(tmp_path / "cls.onnx", "classifier", cls_threshold)
    write_parts(tmp_path / "good", 40, seed=1)
    write_parts(tmp_path / "bad", 10, seed=2, defect=DEFECT_TYPES[0])
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text('[product]\nname = "p"\n[models]\nautoencoder = "ae.onnx"\n'
                           'classifier = "cls.onnx"\nprovider = "cpu"\nthreads = 1\n', encoding="utf-8")
    report = tmp_path / "rep"
    args = ["calibrate", "threshold", "--recipe", str(recipe_path), "--good", str(tmp_path / "good"),
            "--defects", str(tmp_path / "bad"), "--frr", "0.05", "--report", str(report)]

    assert main([*args, "--dry-run"]) == 0, capsys.readouterr().err
    decision = load_recipe(recipe_path).decision
    assert decision.autoencoder_threshold == decision.classifier_threshold == 1.0  # dry run: unchanged
    assert not list(tmp_path.glob("r.*.bak.toml"))

    assert main(args) == 0, capsys.readouterr().err
    text = (report / "report.txt").read_text()
    assert "good parts scored: 40" in text and "defective parts detected:" in text
    assert "smallest meaningful FRR is about 1/N = 2.500%" in text
    assert "--- classifier (cls.onnx) ---" in text
    assert (report / "autoencoder_scores.png").stat().st_size > 1000
    assert (report / "classifier_scores.png").stat().st_size > 1000

    # the normalized threshold written is the proposal on the same scores / the model's own
    from calibration.scoring_run import recipe_models, score_folder

    recipe = load_recipe(recipe_path)
    scored = score_folder(tmp_path / "good", recipe, recipe_models(recipe))
    for kind, own in (("autoencoder", ae_threshold), ("classifier", cls_threshold)):
        expected = propose_threshold(scored.scores[kind], 0.05).threshold / own
        assert getattr(recipe.decision, f"{kind}_threshold") == pytest.approx(expected, rel=1e-6)
    assert len(list(tmp_path.glob("r.*.bak.toml"))) == 1

    # a recipe whose classifier crop width is not the model file's scores as the line does
    # (the file's crop; station run accepts such a recipe too) and the report says so
    recipe_path.write_text(recipe_path.read_text().replace("[models]\n",
                                                           "[models]\nclassifier_size = 999\n"))
    recipe = load_recipe(recipe_path)
    again = score_folder(tmp_path / "good", recipe, recipe_models(recipe))
    np.testing.assert_array_equal(again.scores["classifier"], scored.scores["classifier"])
    assert main([*args, "--dry-run"]) == 0, capsys.readouterr().err
    assert ("note: models.classifier_size = 999 but cls.onnx was trained on"
            in capsys.readouterr().out)


def test_under_the_sum_rule_the_step_proposes_the_sum_threshold(tmp_path: Path, capsys):
    """Rule sum decides by the evidence added: the step proposes decision.sum_threshold for
    the FRR target on that evidence, as the line computes it, and leaves each model's own
    threshold as it is (reported only)."""
    from station.decision import Evidence
    from station.sim import DEFECT_TYPES

    tiny_model(tmp_path / "ae.onnx", "autoencoder", 0.5,
               {"method": "ratio", "evidence_spread": 0.4, "evidence_offset": 0.1})
    tiny_model(tmp_path / "cls.onnx", "classifier", 0.8,
               {"method": "ratio", "evidence_spread": 0.2, "evidence_offset": -0.3})
    write_parts(tmp_path / "good", 40, seed=1)
    write_parts(tmp_path / "bad", 10, seed=2, defect=DEFECT_TYPES[0])
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text('[product]\nname = "p"\n[models]\nautoencoder = "ae.onnx"\n'
                           'classifier = "cls.onnx"\nprovider = "cpu"\nthreads = 1\n'
                           '[decision]\nrule = "sum"\n', encoding="utf-8")
    report = tmp_path / "rep"
    assert main(["calibrate", "threshold", "--recipe", str(recipe_path), "--good",
                 str(tmp_path / "good"), "--defects", str(tmp_path / "bad"), "--frr", "0.05",
                 "--report", str(report)]) == 0, capsys.readouterr().err
    decision = load_recipe(recipe_path).decision
    assert decision.autoencoder_threshold == decision.classifier_threshold == 1.0
    text = (report / "report.txt").read_text()
    assert "--- sum (decision.rule = sum) ---" in text and "not written: the recipe's rule is sum" in text
    assert (report / "sum_scores.png").stat().st_size > 1000
    # the proposal is the FRR rule on the evidence the line adds
    from calibration.scoring_run import recipe_models, score_folder

    recipe = load_recipe(recipe_path)
    models = recipe_models(recipe)
    scored = score_folder(tmp_path / "good", recipe, models)
    sums = Evidence(0.4, 0.2, 0.0, 0.1, -0.3)
    totals = [sums.total(a, c) for a, c in zip(models["autoencoder"].normalized(
        scored.scores["autoencoder"]), models["classifier"].normalized(
        scored.scores["classifier"]), strict=True)]
    assert decision.sum_threshold == pytest.approx(propose_threshold(totals, 0.05).threshold)


def test_threshold_step_refuses_a_missing_model(tmp_path: Path, capsys):
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text('[product]\nname = "p"\n[models]\nautoencoder = "ae.onnx"\n', encoding="utf-8")
    (tmp_path / "good").mkdir()
    rc = main(["calibrate", "threshold", "--recipe", str(recipe_path), "--good", str(tmp_path / "good")])
    assert rc == 2 and "ae.onnx" in capsys.readouterr().err
