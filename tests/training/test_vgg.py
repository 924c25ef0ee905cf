"""VGG16 topology: torchvision's names and shapes, local state-dict loading, width, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.classifier import VGG16, PretrainedMismatch, VGGConfig, load_pretrained

# torchvision.models.vgg16().state_dict(): parameter names and shapes, in order.
TORCHVISION_VGG16 = [
    ("features.0.weight", (64, 3, 3, 3)), ("features.2.weight", (64, 64, 3, 3)),
    ("features.5.weight", (128, 64, 3, 3)), ("features.7.weight", (128, 128, 3, 3)),
    ("features.10.weight", (256, 128, 3, 3)), ("features.12.weight", (256, 256, 3, 3)),
    ("features.14.weight", (256, 256, 3, 3)), ("features.17.weight", (512, 256, 3, 3)),
    ("features.19.weight", (512, 512, 3, 3)), ("features.21.weight", (512, 512, 3, 3)),
    ("features.24.weight", (512, 512, 3, 3)), ("features.26.weight", (512, 512, 3, 3)),
    ("features.28.weight", (512, 512, 3, 3)),
    ("classifier.0.weight", (4096, 25088)), ("classifier.3.weight", (4096, 4096)),
    ("classifier.6.weight", (1000, 4096)),
]


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A torchvision-layout vgg16 state dict (RGB input, 1000-way head) written to a file.

    Values are cheap deterministic ramps (distinct per tensor), not random: 138 M of them.
    """
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGG16(VGGConfig(in_channels=3)).state_dict().items()}
    state = {}
    for i, (k, shape) in enumerate(shapes.items()):
        if k.startswith("classifier.6."):
            shape = torch.Size((1000, *shape[1:]) if k.endswith("weight") else (1000,))
        ramp = torch.arange(shape.numel(), dtype=torch.float32).remainder_(997)
        state[k] = ramp.mul_(1e-4).add_(0.01 * i).reshape(shape)
    assert [(k, tuple(v.shape)) for k, v in state.items() if k.endswith("weight")] == \
        TORCHVISION_VGG16
    path = tmp_path_factory.mktemp("weights") / "vgg16-imagenet.pth"
    torch.save(state, path)
    return path, state


def _empty_full_width(in_channels: int) -> VGG16:
    """A full-width VGG16 with uninitialized memory (skips 138 M random inits in tests)."""
    with torch.device("meta"):
        model = VGG16(VGGConfig(size=224, in_channels=in_channels, dropout=0.0))
    return model.to_empty(device="cpu")


def test_state_dict_layout_is_torchvision_vgg16() -> None:
    with torch.device("meta"):
        sd = VGG16(VGGConfig(size=224, in_channels=3, width=1.0)).state_dict()
    weights = [(k, tuple(v.shape)) for k, v in sd.items() if k.endswith(".weight")]
    expected = [(k, s if not k.startswith("classifier.6") else (1, 4096))
                for k, s in TORCHVISION_VGG16]
    assert weights == expected
    assert len(sd) == 32  # 16 weights + 16 biases, nothing else (pool matrices not persistent)


def test_load_pretrained_from_file_adapts_gray_input(imagenet_file) -> None:
    path, state = imagenet_file
    model = _empty_full_width(1)
    torch.nn.init.zeros_(model.classifier[6].weight)
    loaded = load_pretrained(model, path)
    assert "features.28.weight" in loaded and "classifier.0.weight" in loaded
    assert not any(k.startswith("classifier.6") for k in loaded)
    sd = model.state_dict()
    # 1-channel first conv = sum of the RGB filters: a gray image seen as R=G=B responds alike
    assert sd["features.0.weight"].shape == (64, 1, 3, 3)
    torch.testing.assert_close(sd["features.0.weight"], state["features.0.weight"].sum(1, True))
    for key in ("features.28.weight", "features.28.bias", "classifier.0.weight",
                "classifier.3.weight"):
        assert torch.equal(sd[key], state[key]), key
    assert not model.classifier[6].weight.any()  # the fresh 1-logit head is kept
    gray = torch.rand(1, 1, 16, 16)
    rgb_conv = torch.nn.Conv2d(3, 64, 3, padding=1)
    rgb_conv.load_state_dict({"weight": state["features.0.weight"],
                              "bias": state["features.0.bias"]})
    with torch.no_grad():
        torch.testing.assert_close(model.features[0](gray), rgb_conv(gray.repeat(1, 3, 1, 1)),
                                   rtol=1e-5, atol=1e-5)


def test_load_pretrained_refuses_what_cannot_fit(imagenet_file, tmp_path: Path) -> None:
    path, _ = imagenet_file
    with pytest.raises(PretrainedMismatch, match="full width"):
        load_pretrained(VGG16(VGGConfig(size=64, width=0.25)), path)
    small = tmp_path / "plain.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, small)
    with pytest.raises(PretrainedMismatch, match="vgg16_bn"):
        with torch.device("meta"):
            bn_model = VGG16(VGGConfig(size=64, batch_norm=True))
        load_pretrained(bn_model, small)
    model = _empty_full_width(1)
    with pytest.raises(PretrainedMismatch, match="no such"):
        load_pretrained(model, tmp_path / "missing.pth")
    with pytest.raises(PretrainedMismatch, match="missing key 'features.0.bias'"):
        load_pretrained(model, small)
    bad = tmp_path / "bad.pth"
    torch.save({k: torch.zeros(3, 3) for k in model.state_dict()}, bad)
    with pytest.raises(PretrainedMismatch, match="'features.0.weight' has shape"):
        load_pretrained(model, bad)
    notdict = tmp_path / "notdict.pth"
    notdict.write_bytes(b"definitely not a pickle")
    with pytest.raises(PretrainedMismatch, match="not a readable"):
        load_pretrained(model, notdict)


@pytest.mark.parametrize("width", [0.25, 0.125])
def test_width_multiplier_scales_convs_and_mlp(width: float) -> None:
    model = VGG16(VGGConfig(size=64, width=width, batch_norm=True))
    sd = model.state_dict()
    assert sd["features.0.weight"].shape == (int(64 * width), 1, 3, 3)
    c_last = int(512 * width)
    hidden = int(4096 * width)
    assert sd["classifier.0.weight"].shape == (hidden, c_last * 49)
    assert sd["classifier.3.weight"].shape == (hidden, hidden)
    assert sd["classifier.6.weight"].shape == (1, hidden)
    assert "features.1.running_mean" in sd  # vgg16_bn layout: conv, bn, relu
    p = model.eval()(torch.rand(3, 1, 64, 64))
    assert p.shape == (3,) and bool(((p > 0) & (p < 1)).all())


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        VGGConfig(size=100)
    with pytest.raises(ValueError, match="width"):
        VGGConfig(width=2.0)


def test_onnx_export_outputs_p_defect(tmp_path: Path) -> None:
    """Input 96 leaves a 3x3 map that avgpool stretches to 7x7: still a plain ONNX graph."""
    model = VGG16(VGGConfig(size=96, width=0.125, batch_norm=True)).eval()
    path = tmp_path / "clf.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 96, 96), str(path), dynamo=False,
                      input_names=["image"], output_names=["p_defect"],
                      dynamic_axes={"image": {0: "n"}, "p_defect": {0: "n"}})
    x = np.random.default_rng(0).random((2, 1, 96, 96), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (p,) = sess.run(["p_defect"], {"image": x})
    assert p.shape == (2,)
    with torch.no_grad():
        np.testing.assert_allclose(p, model(torch.from_numpy(x)).numpy(), atol=1e-5)
    pool = torch.nn.AdaptiveAvgPool2d(7)
    feats = torch.rand(1, 4, 3, 3)
    torch.testing.assert_close(model.avgpool(feats), pool(feats))
