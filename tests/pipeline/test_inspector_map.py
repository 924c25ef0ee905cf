"""Every reject shows where: the part's map is the one of the model that decided its verdict.

Real onnxruntime sessions on tiny exported models (an autoencoder at 32 px and a classifier
with its Grad-CAM output at 64 px, so the classifier's map is also resized to the shown
crop), a rendered part, real SQLite records and real Qt widgets offscreen.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from station.config import DecisionSection
from station.models.inference import load_model
from station.models.metadata import ModelMetadata
from station.pipeline.inspector import Inspector, PartResult, deciding_map
from station.pipeline.overlay import MAP_IMAGE_KINDS, map_label
from station.pipeline.rows import part_images, part_row
from station.sim import render_part
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec
from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead
from training.classifier import VGG16, VGGConfig
from training.export import export_classifier, export_onnx

AE_SIZE, CLS_SIZE = 32, 64


def _meta(kind: str, size: int, threshold: float, spread: float | None = None,
          offset: float = 0.0) -> ModelMetadata:
    # the normalization station train writes: the classifier's score as an odds ratio, and
    # (since the sum rule) each model's spread over good parts and half the sum's threshold
    norm: dict = {"method": "odds" if kind == "classifier" else "ratio"}
    if spread is not None:
        norm.update(evidence_spread=spread, evidence_offset=offset)
    return ModelMetadata(kind=kind, threshold=threshold,
                         preprocess=PreprocessSpec(size=size).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(),
                         version=f"{kind}-map-test", score_normalization=norm)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """An autoencoder, a classifier with its map, and the same classifier without one."""
    folder = tmp_path_factory.mktemp("inspector_map")
    torch.manual_seed(0)
    opts = AutoencoderOptions(depth=2, base_channels=4, latent_channels=4)
    head = ScoringHead(ConvAutoencoder(1, opts), AE_SIZE, opts).eval()
    export_onnx(head, folder / "ae.onnx", _meta("autoencoder", AE_SIZE, 1.0),
                torch.rand(2, 1, AE_SIZE, AE_SIZE))
    vgg = VGG16(VGGConfig(size=CLS_SIZE, width=0.0625))
    for layer in vgg.classifier:  # a head whose ReLUs gate the gradient: a map with structure
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, 0.0, 0.2)
    vgg.eval()
    x = torch.rand(2, 1, CLS_SIZE, CLS_SIZE)
    export_classifier(vgg, folder / "cls.onnx", _meta("classifier", CLS_SIZE, 0.5), x)
    export_classifier(vgg, folder / "cls_old.onnx", _meta("classifier", CLS_SIZE, 0.5), x,
                      with_map=False)
    export_onnx(head, folder / "ae_sum.onnx", _meta("autoencoder", AE_SIZE, 1.0, 0.5, 0.3),
                torch.rand(2, 1, AE_SIZE, AE_SIZE))
    export_classifier(vgg, folder / "cls_sum.onnx", _meta("classifier", CLS_SIZE, 0.5, 2.0), x)
    return {"ae": folder / "ae.onnx", "cls": folder / "cls.onnx",
            "cls_old": folder / "cls_old.onnx", "ae_sum": folder / "ae_sum.onnx",
            "cls_sum": folder / "cls_sum.onnx"}


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return render_part(np.random.default_rng(7), (160, 160)).image


def _inspector(files, rule: str = "either", ae: bool = True, cls: str = "cls",
               ae_limit: float = 1.0, cls_limit: float = 1.0, sum_limit: float = 0.0,
               ae_file: str = "ae") -> Inspector:
    return Inspector(load_model(files[ae_file], "cpu", 1) if ae else None,
                     load_model(files[cls], "cpu", 1) if cls else None,
                     LocalizeParams(), AlignParams(),
                     DecisionSection(rule=rule, autoencoder_threshold=ae_limit,
                                     classifier_threshold=cls_limit, sum_threshold=sum_limit))


@pytest.fixture(scope="module")
def scores(files, frame) -> tuple[float, float]:
    """The part's normalized (autoencoder, classifier) scores: the limits are set around them."""
    r = _inspector(files).inspect(frame)
    assert r.ae_score is not None and r.cls_score is not None and r.cls_score > 0
    return r.ae_score, r.cls_score


def _expected_maps(insp: Inspector, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both models' normalized maps at the shown crop's size, straight from their sessions."""
    part = insp.crop(frame)
    assert insp.autoencoder is not None and insp.classifier is not None
    ae_maps, _ = insp.autoencoder.infer(part.ae_input)
    p, cams = insp.classifier.infer_map(part.cls_input)
    assert cams is not None and cams.shape == (1, CLS_SIZE, CLS_SIZE)
    cam = np.asarray(insp.classifier.normalized_map(cams[0]), np.float32)
    return (insp.autoencoder.normalized_map(ae_maps[0]),
            cv2.resize(cam, (AE_SIZE, AE_SIZE), interpolation=cv2.INTER_LINEAR))


def test_a_reject_the_classifier_decides_shows_the_classifier_map(files, frame, scores):
    ae, cls = scores
    insp = _inspector(files, ae_limit=ae * 2.0, cls_limit=cls * 0.5)
    r = insp.inspect(frame)
    assert r.verdict == "REJECT" and r.map_source == "classifier"
    _, cam = _expected_maps(insp, frame)
    assert r.heatmap is not None and r.crop is not None and r.heatmap.shape == r.crop.shape
    np.testing.assert_allclose(r.heatmap, cam, rtol=1e-5, atol=1e-6)
    # on the maps' colour scale (1.0 = threshold) the map peaks at p_defect / threshold (a
    # resize to the shown crop can only lower the peak a little); the score beside it is the
    # odds ratio, on the same side of 1.0
    assert r.cls_raw is not None and r.cls_score is not None
    peak = r.cls_raw / 0.5
    assert 0.5 * peak <= r.heatmap.max() <= peak + 1e-5
    assert r.cls_score == pytest.approx((r.cls_raw / (1 - r.cls_raw)) / 1.0, rel=1e-5)


def test_a_reject_the_autoencoder_decides_shows_the_autoencoder_map(files, frame, scores):
    ae, cls = scores
    insp = _inspector(files, ae_limit=ae * 0.5, cls_limit=cls * 2.0)
    r = insp.inspect(frame)
    assert r.verdict == "REJECT" and r.map_source == "autoencoder"
    ae_map, _ = _expected_maps(insp, frame)
    np.testing.assert_allclose(r.heatmap, ae_map, rtol=1e-6)


@pytest.mark.parametrize("ae_over, cls_over", [(1.1, 1000.0), (3.0, 2.0)])
def test_both_over_their_limits_show_where_the_part_differs(files, frame, scores, ae_over,
                                                            cls_over):
    ae, cls = scores
    for rule in ("either", "both"):
        r = _inspector(files, rule, ae_limit=ae / ae_over, cls_limit=cls / cls_over).inspect(frame)
        assert r.verdict == "REJECT" and r.map_source == "autoencoder", rule


def test_a_pass_shows_the_autoencoder_map_as_always(files, frame, scores):
    ae, cls = scores
    insp = _inspector(files, ae_limit=ae * 2.0, cls_limit=cls * 2.0)
    r = insp.inspect(frame)
    assert r.verdict == "PASS" and r.map_source == "autoencoder"
    np.testing.assert_allclose(r.heatmap, _expected_maps(insp, frame)[0], rtol=1e-6)


def test_a_model_the_rule_does_not_count_never_shows_its_map(files, frame, scores):
    ae, cls = scores
    r = _inspector(files, "autoencoder", ae_limit=ae * 0.5, cls_limit=cls * 0.1).inspect(frame)
    assert r.verdict == "REJECT" and r.map_source == "autoencoder"


def test_a_classifier_file_without_a_map_falls_back_to_the_autoencoder_map(files, frame, scores):
    ae, cls = scores
    insp = _inspector(files, "classifier", cls="cls_old", cls_limit=cls * 0.5)
    r = insp.inspect(frame)
    assert r.verdict == "REJECT" and r.cls_score == pytest.approx(cls, rel=1e-5)
    assert r.map_source == "autoencoder"  # honest: the label names the map that is shown
    np.testing.assert_allclose(r.heatmap, _expected_maps(_inspector(files), frame)[0], rtol=1e-6)


def test_a_classifier_alone_shows_its_map_on_a_reject_and_none_on_a_pass(files, frame, scores):
    _, cls = scores
    r = _inspector(files, "classifier", ae=False, cls_limit=cls * 0.5).inspect(frame)
    assert r.verdict == "REJECT" and r.map_source == "classifier"
    assert r.heatmap is not None and r.crop is not None
    assert r.heatmap.shape == r.crop.shape == (CLS_SIZE, CLS_SIZE)
    r = _inspector(files, "classifier", ae=False, cls_limit=cls * 2.0).inspect(frame)
    assert r.verdict == "PASS" and r.heatmap is None and r.map_source == ""


def test_deciding_map_reads_the_limits_and_the_rule() -> None:
    ae_map, cls_map = np.full((4, 4), 0.5, np.float32), np.ones((4, 4), np.float32)
    d = DecisionSection(rule="either", autoencoder_threshold=2.0, classifier_threshold=1.0)
    # both over their limits: the autoencoder's map, however far over the classifier is
    assert deciding_map("REJECT", 3.0, 1.2, ae_map, cls_map, d)[1] == "autoencoder"
    assert deciding_map("REJECT", 2.2, 5e6, ae_map, cls_map, d)[1] == "autoencoder"
    assert deciding_map("REJECT", 1.9, 1.2, ae_map, cls_map, d)[1] == "classifier"
    assert deciding_map("REJECT", 2.2, 1.2, ae_map, cls_map, replace(d, rule="autoencoder"))[1] \
        == "autoencoder"
    assert deciding_map("REJECT", 3.0, 1.2, ae_map, cls_map, replace(d, rule="classifier")) \
        == (cls_map, "classifier")
    assert deciding_map("ERROR", None, 5.0, ae_map, cls_map, d)[1] == "autoencoder"
    assert deciding_map("REJECT", float("nan"), 1.2, ae_map, cls_map, d)[1] == "classifier"
    assert deciding_map("PASS", None, 0.2, None, cls_map, d) == (None, "")
    # an all-zero Grad-CAM (nothing spoke for a defect) yields to the other model's map
    shown, source = deciding_map("REJECT", 1.9, 5.0, cls_map, np.zeros((4, 4)), d)
    assert source == "autoencoder" and shown is cls_map


def test_the_sum_rule_judges_with_the_spreads_in_the_model_files(files, frame, scores):
    """The line's sum: log(score / limit) / spread - offset of each model, from the two
    files (spreads 0.5 and 2.0, the autoencoder's offset 0.3 here) against the recipe's
    sum_threshold; the map is the one of the model that brought more of the evidence."""
    import math

    from station.models.metadata import ModelRefused

    ae, cls = scores
    total = math.log(ae) / 0.5 - 0.3 + math.log(cls) / 2.0  # at the limits 1.0
    from station.pipeline.rows import reasons

    for margin, verdict, sign in ((-0.01, "REJECT", ">="), (0.01, "PASS", "<")):
        insp = _inspector(files, "sum", cls="cls_sum", ae_file="ae_sum", sum_limit=total + margin)
        r = insp.inspect(frame)
        assert r.verdict == verdict and r.evidence == pytest.approx(total, abs=1e-4), margin
        # the record says why, in the rule's own terms
        assert f"evidence {r.evidence:+.2f} {sign} {total + margin:+.2f} (sum)" in reasons(
            r, insp.decision)
    # the autoencoder's evidence the larger (its limit far under its score): its map
    r = _inspector(files, "sum", cls="cls_sum", ae_file="ae_sum", ae_limit=ae / 20,
                   cls_limit=cls * 2, sum_limit=0.0).inspect(frame)
    assert r.verdict == "REJECT" and r.map_source == "autoencoder"
    r = _inspector(files, "sum", cls="cls_sum", ae_file="ae_sum", ae_limit=ae * 1.1,
                   cls_limit=cls / 1e4, sum_limit=0.0).inspect(frame)
    assert r.verdict == "REJECT" and r.map_source == "classifier"
    # files trained before the spread was measured cannot serve it: refused, naming them
    with pytest.raises(ModelRefused, match="cls.onnx does not carry") as info:
        _inspector(files, "sum", ae_file="ae_sum")
    assert info.value.key == "decision.rule"
    for rule in ("sum", "either", "both"):  # a rule that needs both, with one: refused, saying so
        with pytest.raises(ModelRefused, match="needs the classifier model, but the recipe "
                                               "does not set models.classifier"):
            _inspector(files, rule, cls="", ae_file="ae_sum")
    insp = _inspector(files, "either")
    with pytest.raises(ValueError, match="ae.onnx and cls.onnx do not carry"):
        insp.set_decision(DecisionSection(rule="sum"))
    assert insp.decision.rule == "either"  # unchanged


def test_the_reject_image_is_named_and_captioned_by_the_deciding_model(files, frame, scores,
                                                                       tmp_path):
    from station.records import Records

    ae, cls = scores
    decision = DecisionSection(rule="either", autoencoder_threshold=ae * 2.0,
                               classifier_threshold=cls * 0.5)
    r = replace(_inspector(files, ae_limit=ae * 2.0, cls_limit=cls * 0.5).inspect(frame),
                part_id="7")
    images = part_images(r)
    assert set(images) == {"crop", MAP_IMAGE_KINDS["classifier"]}
    shown = images[MAP_IMAGE_KINDS["classifier"]]
    assert shown.shape[1] == r.crop.shape[1] and shown.shape[0] > r.crop.shape[0]  # + caption
    ae_only = replace(r, map_source="autoencoder")
    assert set(part_images(ae_only)) == {"crop", "heatmap"}  # the kind it always had
    with Records(tmp_path / "r.sqlite", tmp_path / "img", 50, pass_sample_rate=1.0) as records:
        assert records.submit(part_row(r, "screws", {}, decision), images)
        assert records.flush(30.0)
        (row,) = records.recent(5, "REJECT")
        kinds = {i["kind"]: Path(i["path"]) for i in row["images"]}
        assert kinds.keys() == {"crop", "heatmap_classifier"}
        assert kinds["heatmap_classifier"].name.endswith("_heatmap_classifier.png")
        assert cv2.imread(str(kinds["heatmap_classifier"])).shape == shown.shape


def test_the_window_and_the_rejects_browser_name_the_map(files, frame, scores, qtbot, tmp_path):
    from station.records import Records
    from station.ui.part_view import PartView
    from station.ui.rejects_browser import RejectsBrowser

    ae, cls = scores
    decision = DecisionSection(rule="either", autoencoder_threshold=ae * 2.0,
                               classifier_threshold=cls * 0.5)
    r: PartResult = replace(_inspector(files, ae_limit=ae * 2.0, cls_limit=cls * 0.5)
                            .inspect(frame), part_id="9")
    view = PartView()
    qtbot.addWidget(view)
    view.show_result(r, decision)
    assert view.source.text() == map_label("classifier")
    assert view.image.pixmap() is not None and not view.image.pixmap().isNull()
    passed = replace(r, verdict="PASS", map_source="autoencoder")
    view.show_result(passed, decision)
    assert view.source.text() == map_label("autoencoder")
    with Records(tmp_path / "r.sqlite", tmp_path / "img", 50, pass_sample_rate=1.0) as records:
        assert records.submit(part_row(r, "screws", {}, decision), part_images(r))
        assert records.flush(30.0)
        browser = RejectsBrowser(records)
        qtbot.addWidget(browser)
        assert browser.map_source.text() == map_label("classifier")
        assert browser.heat.pixmap() is not None and not browser.heat.pixmap().isNull()
