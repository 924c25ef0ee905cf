"""onnxruntime sessions for both model kinds, as the station uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from station.align import AlignParams
from station.inference import AutoencoderModel, ClassifierModel, choose_providers, load_model
from station.localize import LocalizeParams
from station.modelmeta import ModelMetadata
from station.preprocess import PreprocessSpec
from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead
from training.export import export_onnx, parity
from training.vgg import VGG16, VGGConfig

SIZE = 32


def _meta(kind: str, threshold: float) -> ModelMetadata:
    return ModelMetadata(kind=kind, threshold=threshold,
                         preprocess=PreprocessSpec(size=SIZE).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(),
                         version=f"{kind}-test")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path]]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("inference")
    vgg = VGG16(VGGConfig(size=SIZE, in_channels=1, width=0.05)).eval()
    opts = AutoencoderOptions(depth=2, base_channels=4, latent_channels=4)
    head = ScoringHead(ConvAutoencoder(1, opts), SIZE, opts).eval()
    x = torch.rand(2, 1, SIZE, SIZE)
    return {
        "classifier": (vgg, export_onnx(vgg, folder / "classifier.onnx", _meta("classifier", 0.4), x)),
        "autoencoder": (head, export_onnx(head, folder / "autoencoder.onnx", _meta("autoencoder", 2.0), x)),
    }


def test_classifier_model_infers_probabilities_like_torch(models):
    net, path = models["classifier"]
    model = load_model(path, provider="cpu", threads=1)
    assert isinstance(model, ClassifierModel) and model.kind == "classifier"
    assert model.provider == "CPUExecutionProvider"
    x = np.random.default_rng(0).random((6, 1, SIZE, SIZE), dtype=np.float32)
    p = model.infer(x)
    assert p.shape == (6,) and np.all((p >= 0) & (p <= 1))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(p - ref)) <= 1e-4
    assert parity(net, path, x)["p_defect"] <= 1e-4
    np.testing.assert_allclose(model.normalized(p), p / 0.4)
    assert model.infer(x[0]).shape == (1,)  # a single (C, H, W) crop is a batch of one


def test_autoencoder_model_returns_maps_and_raw_scores(models):
    _, path = models["autoencoder"]
    model = load_model(path)
    assert isinstance(model, AutoencoderModel)
    model.warmup()
    maps, raw = model.infer(np.zeros((3, 1, SIZE, SIZE), np.float32))
    assert maps.shape == (3, SIZE, SIZE) and raw.shape == (3,)
    assert model.normalized(4.0) == pytest.approx(2.0)
    assert model.meta.version == "autoencoder-test"


def test_wrong_batch_shape_says_what_was_expected(models):
    model = load_model(models["autoencoder"][1], "cpu")
    with pytest.raises(ValueError, match=r"expected \[N, 1, 32, 32\]"):
        model.infer(np.zeros((2, 3, SIZE, SIZE), np.float32))


def test_provider_choice():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    auto = choose_providers("auto")
    assert auto[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert auto[0] == "CUDAExecutionProvider"
    else:
        assert auto == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match="no CUDA"):
            choose_providers("cuda")
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda"):
        choose_providers("tpu")
