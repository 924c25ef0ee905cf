"""Non-square model inputs: metadata, onnxruntime sessions and the inspector's crop follow the
crop's height x width; square models of before keep loading."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from station.config import DecisionSection
from station.decision import Verdict
from station.models.inference import load_model
from station.models.metadata import ModelMetadata, ModelRefused
from station.pipeline.inspector import Inspector
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec
from tests.vision.test_localize_align import render, u8
from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead
from training.classifier import VGG16, VGGConfig
from training.export import export_onnx

W, H = 64, 24  # the autoencoder's crop (multiples of 2**depth = 4)
CW, CH = 64, 32  # the classifier's (multiples of 32)
LONG = AlignParams(crop_aspect=0.35)


def _meta(kind: str, spec: PreprocessSpec, align: AlignParams = LONG,
          loc: LocalizeParams | None = None) -> ModelMetadata:
    return ModelMetadata(kind=kind, threshold=1.0, preprocess=spec.to_metadata(),
                         localize=(loc or LocalizeParams()).to_dict(), align=align.to_dict(),
                         version=f"{kind}-shapes")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("shapes")
    opts = AutoencoderOptions(depth=2, base_channels=4, latent_channels=4)
    head = ScoringHead(ConvAutoencoder(1, opts), (H, W), opts).eval()
    vgg = VGG16(VGGConfig(size=CW, height=CH, in_channels=1, width=0.05)).eval()
    square = ScoringHead(ConvAutoencoder(1, opts), 32, opts).eval()
    return {
        "autoencoder": export_onnx(head, folder / "autoencoder.onnx",
                                   _meta("autoencoder", PreprocessSpec(size=W, height=H)),
                                   torch.rand(2, 1, H, W)),
        "classifier": export_onnx(vgg, folder / "classifier.onnx",
                                  _meta("classifier", PreprocessSpec(size=CW, height=CH)),
                                  torch.rand(2, 1, CH, CW)),
        "square": export_onnx(square, folder / "square.onnx",
                              _meta("autoencoder", PreprocessSpec(size=32), AlignParams()),
                              torch.rand(2, 1, 32, 32)),
    }


def test_non_square_models_load_and_run_at_their_crop_shape(files):
    ae = load_model(files["autoencoder"])
    assert ae.input_shape == (1, H, W)
    maps, scores = ae.infer(np.random.default_rng(0).random((3, 1, H, W), np.float32))
    assert maps.shape == (3, H, W) and scores.shape == (3,)
    clf = load_model(files["classifier"])
    assert clf.input_shape == (1, CH, CW)
    assert clf.infer(np.zeros((2, 1, CH, CW), np.float32)).shape == (2,)
    with pytest.raises(ValueError, match=rf"expected \[N, 1, {H}, {W}\]"):
        ae.infer(np.zeros((1, 1, W, W), np.float32))  # a square crop is not this model's


def test_square_model_metadata_of_before_still_loads(files):
    model = load_model(files["square"])
    assert "height" not in model.meta.preprocess  # written as before non-square crops
    assert model.input_shape == (1, 32, 32)


def test_metadata_that_does_not_match_the_graph_is_refused(files, tmp_path):
    from training.export import write_metadata

    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(files["autoencoder"].read_bytes())
    write_metadata(wrong, _meta("autoencoder", PreprocessSpec(size=W)))  # says square
    with pytest.raises(ModelRefused, match=rf"preprocess spec makes \[N, 1, {W}, {W}\]"):
        load_model(wrong)


def test_the_inspector_crops_each_model_at_its_own_shape(files):
    ae, clf = load_model(files["autoencoder"]), load_model(files["classifier"])
    inspector = Inspector(ae, clf, LocalizeParams(), None, DecisionSection())
    result = inspector.inspect(u8(render(40.0)), "p1")
    assert result.verdict in (Verdict.PASS, Verdict.REJECT), result.error
    assert result.crop.shape == (H, W) and result.heatmap.shape == (H, W)
    assert result.crop_to_frame is not None and result.cls_score is not None


def test_a_fixed_region_model_crops_the_region_and_ignores_a_trigger_box(files, tmp_path):
    from training.export import write_metadata

    path = tmp_path / "region.onnx"
    path.write_bytes(files["autoencoder"].read_bytes())
    region = AlignParams(crop_mode="region", orientation="none", crop_aspect=H / W)
    fixed = LocalizeParams(method="fixed")
    write_metadata(path, replace(_meta("autoencoder", PreprocessSpec(size=W, height=H), region,
                                       fixed)))
    ae = load_model(path)
    inspector = Inspector(ae, None, fixed, region, DecisionSection(rule="autoencoder"))
    frame = np.full((50, 90), 120, np.uint8)  # a blank surface: nothing a search would find
    result = inspector.inspect(frame, "t1", box=(5, 5, 10, 10))
    assert result.verdict != Verdict.ERROR, result.error
    assert result.box == (0, 0, 90, 50)  # the whole frame, not the trigger's box
    assert result.crop.shape == (H, W)


def test_a_model_trained_on_another_kind_of_product_is_refused(files):
    ae = load_model(files["autoencoder"])  # trained with localize.method = "segment"
    with pytest.raises(ModelRefused, match='localize.method = "segment", but the recipe says '
                                           '"fixed"') as err:
        Inspector(ae, None, LocalizeParams(method="fixed"), None, DecisionSection(rule="autoencoder"))
    assert err.value.key == "localize.method"


def test_two_models_trained_on_different_crops_are_refused_together(files, tmp_path):
    """The station cuts one crop for both models, by the autoencoder's metadata: a
    classifier trained on another crop was handed the autoencoder's without a word."""
    from training.export import write_metadata

    path = tmp_path / "classifier.onnx"
    path.write_bytes(files["classifier"].read_bytes())
    other = AlignParams(crop_aspect=0.5, orientation="none", crop_scale=3.0)
    write_metadata(path, _meta("classifier", PreprocessSpec(size=CW, height=CH), other))
    ae, cls = load_model(files["autoencoder"]), load_model(path)
    with pytest.raises(ModelRefused, match=r"trained on another crop than the autoencoder "
                                           r"autoencoder.onnx \(align crop_aspect, crop_scale, "
                                           r"orientation differ\)") as err:
        Inspector(ae, cls, LocalizeParams(), None, DecisionSection(rule="either"))
    assert err.value.key == "models" and str(path) in str(err.value)
    Inspector(ae, load_model(files["classifier"]), LocalizeParams(), None,
              DecisionSection(rule="either"))  # one training's pair: accepted
