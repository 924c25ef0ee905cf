"""The model-file contract: metadata round-trips, and the station refuses what it cannot honour."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from station.models.inference import ModelFileError, load_model, read_metadata
from station.models.metadata import ModelMetadata, ModelRefused
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec
from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead
from training.export import export_onnx, write_metadata

SIZE = 32


def _meta(**changes) -> ModelMetadata:
    meta = ModelMetadata(
        kind="autoencoder", threshold=3.5, preprocess=PreprocessSpec(size=SIZE).to_metadata(),
        localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(), version="ae-test-1",
        created="2026-01-01T00:00:00+00:00", data_fingerprint="sha256:abc",
        metrics={"validation": {"image_auroc": 0.9}}, architecture={"name": "conv_autoencoder"},
    )
    return replace(meta, **changes)


@pytest.fixture(scope="module")
def ae_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    opts = AutoencoderOptions(depth=2, base_channels=4, latent_channels=4)
    head = ScoringHead(ConvAutoencoder(1, opts), SIZE, opts).eval()
    path = tmp_path_factory.mktemp("meta") / "autoencoder.onnx"
    export_onnx(head, path, _meta(), torch.rand(2, 1, SIZE, SIZE))
    return path


def _variant(src: Path, tmp_path: Path, meta: ModelMetadata | None = None,
             props: dict[str, str] | None = None) -> Path:
    import onnx

    dst = tmp_path / "variant.onnx"
    dst.write_bytes(src.read_bytes())
    if meta is not None:
        write_metadata(dst, meta)
    if props is not None:
        model = onnx.load(str(dst))
        del model.metadata_props[:]
        for k, v in props.items():
            e = model.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(model, str(dst))
    return dst


def test_metadata_round_trips_through_the_file(ae_file):
    meta = read_metadata(ae_file)
    assert meta == _meta()
    assert meta.preprocess_spec() == PreprocessSpec(size=SIZE)
    assert meta.localize_params() == LocalizeParams()
    assert meta.align_params() == AlignParams()
    assert meta.normalized(7.0) == pytest.approx(2.0)
    assert meta.output_names == ("anomaly_map", "score")
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert json.loads(props["preprocess"])["size"] == SIZE
    assert ModelMetadata.from_props(props) == meta


def test_bare_quantization_tag_is_understood():
    props = _meta().to_props()
    props["quantization"] = "int8-static-qdq"
    assert ModelMetadata.from_props(props).quantization == {"mode": "int8-static-qdq"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "segmenter"}, "kind = 'segmenter'"),
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"threshold": 0.0}, "threshold = 0.0"),
        ({"threshold": -2.0}, "threshold = -2.0"),
        ({"kind": "classifier"}, "a classifier must output ['p_defect']"),
        ({"preprocess": PreprocessSpec(size=64).to_metadata()}, "preprocess spec makes [N, 1, 64, 64]"),
        ({"preprocess": {"size": SIZE, "colour": "gray"}}, "unknown key"),
        ({"score_normalization": {"method": "sigmoid"}}, "score_normalization method = 'sigmoid'"),
        ({"score_normalization": {"method": "odds"}, "threshold": 1.5}, "below 1 - 1e-12"),
        ({"score_normalization": {"method": "odds"}, "threshold": 0.5},
         "'odds' for kind 'autoencoder': only a classifier's score is a probability"),
        # the sum rule divides by it: 0 or NaN would make every part a certain defect or none
        ({"score_normalization": {"method": "ratio", "evidence_spread": 0.0}},
         "score_normalization evidence_spread = 0.0: expected a number of at least 0.05"),
        ({"score_normalization": {"method": "ratio", "evidence_spread": float("nan")}},
         "evidence_spread = nan"),
        ({"score_normalization": {"method": "ratio", "evidence_spread": "wide"}},
         "evidence_spread = 'wide'"),
        ({"score_normalization": {"method": "ratio", "evidence_offset": 1e9}},
         "evidence_offset = 1000000000.0: expected a number from -100 to 100"),
        ({"align": {"head_side": "left", "tilt": 3}}, "'align' cannot be honoured"),
        ({"align": {"orientation": "pattern", "pattern": [1, 2]}},
         "'align' cannot be honoured: align: pattern has 2 values; expected 216"),
        ({"align": {"orientation": "axis_pattern", "pattern": [0] * 216}},
         "'align' cannot be honoured: align: pattern is all zeros"),
        # a crop no recipe may ask for: 1e9 cropped nothing of the part and passed a defect,
        # 0 failed every part on a division by zero
        ({"align": {"crop_scale": 1e9}},
         "'align' cannot be honoured: AlignParams.crop_scale = 1000000000.0: expected a number "
         "from 0.2 to 10"),
        ({"align": {"crop_aspect": 0}}, "AlignParams.crop_aspect = 0: expected a number from 0.05"),
        ({"align": {"orientation": "sideways"}}, "AlignParams.orientation = 'sideways': expected "
                                                 "one of head"),
        ({"localize": {"roi": [0, 0, -5, 9]}}, "LocalizeParams.roi = (0, 0, -5, 9): expected "
                                               "numbers from 0"),
        ({"localize": {"min_contrast": float("nan")}}, "LocalizeParams.min_contrast = nan"),
    ],
)
def test_metadata_the_station_cannot_honour_is_refused(ae_file, tmp_path, change, message):
    bad = _meta(**change)
    if change.get("kind") == "classifier":
        bad = replace(bad, output_names=("p_defect",))
    path = _variant(ae_file, tmp_path, meta=bad)
    with pytest.raises(ModelRefused) as err:
        load_model(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_malformed_keys_are_named(ae_file, tmp_path):
    props = _meta().to_props()
    del props["threshold"]
    path = _variant(ae_file, tmp_path, props=props)
    with pytest.raises(ModelRefused, match="lacks key\\(s\\) threshold"):
        load_model(path)
    props = _meta().to_props()
    props["localize"] = "{not json"
    path = _variant(ae_file, tmp_path, props=props)
    with pytest.raises(ModelRefused, match="'localize' is not valid JSON"):
        load_model(path)
    path = _variant(ae_file, tmp_path, props={})
    with pytest.raises(ModelRefused, match="was it exported by station train"):
        load_model(path)


def test_corrupt_truncated_and_missing_files_name_the_file(ae_file, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    data = ae_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as err:
        load_model(truncated)
    assert str(truncated) in str(err.value) and "corrupt or truncated" in str(err.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ModelRefused, match="junk.onnx"):
        load_model(junk)
    with pytest.raises(ModelRefused, match="file not found"):
        load_model(tmp_path / "absent.onnx")


def test_export_is_one_self_contained_file(ae_file):
    import onnx

    assert [p.name for p in ae_file.parent.iterdir()] == [ae_file.name]
    model = onnx.load(str(ae_file))
    assert model.opset_import[0].version >= 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param  # dynamic batch axis
    session = load_model(ae_file, "cpu")
    maps, scores = session.infer(np.random.rand(5, 1, SIZE, SIZE).astype(np.float32))
    assert maps.shape == (5, SIZE, SIZE) and scores.shape == (5,)
