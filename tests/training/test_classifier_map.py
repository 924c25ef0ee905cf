"""The classifier's in-graph Grad-CAM: equal to autograd's, exported exactly, and on the defect.

The learning tests train a small classifier on rendered parts where each defective part has
one spot at a known place (a disc of the opposite shade on the part), then ask the exported
file's map, through onnxruntime as the station runs it, to peak on the spot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from station.models.inference import ClassifierModel, load_model
from station.models.metadata import ModelMetadata
from station.sim import render_part
from station.vision.align import AlignParams, find_and_align
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec, prepare_batch
from training.classifier import VGG16, ClassifierOptions, Ensemble, VGGConfig, train_classifier
from training.classifier.cam import ClassifierWithMap
from training.export import export_classifier, float_nodes, over_tolerance, parity
from training.quantize import quantize_static
from training.synth_defects import part_mask

SIZE = 96  # 6 x 6 map cells of 16 px: the last conv block works at 1/16 of the crop
SPEC = PreprocessSpec(size=SIZE)
RADIUS = SIZE / 12  # the spot: 8 px
HIT = RADIUS + 8  # a peak within half a map cell of the spot's edge is on it
pytestmark = pytest.mark.timeout(900)


def _autograd_cam(net: VGG16, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM the textbook way: autograd's gradient of the logit at the last conv block."""
    layers = list(net.features)
    a = x
    for layer in layers[:-1]:
        a = layer(a)
    a = a.detach().requires_grad_(True)
    logit = net.classifier(torch.flatten(net.avgpool(layers[-1](a)), 1)).squeeze(1)
    (grad,) = torch.autograd.grad(logit.sum(), a)
    low = torch.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()
    up = F.interpolate(low, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    p = torch.sigmoid(logit.detach())
    return up / up.amax((2, 3), keepdim=True).clamp_min(1e-12) * p[:, None, None, None]


@pytest.mark.parametrize("size, batch_norm", [(64, True), (96, False), (128, True)])
def test_in_graph_backward_equals_autograd(size: int, batch_norm: bool) -> None:
    """The head's backward written as matmuls with the ReLU masks is Grad-CAM exactly, also
    where the 7x7 pooling does not divide the grid (96 px: 3x3 -> 7x7)."""
    torch.manual_seed(size)
    net = VGG16(VGGConfig(size=size, width=0.0625, batch_norm=batch_norm, dropout=0.5))
    for layer in net.classifier:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, 0.0, 0.2)
            torch.nn.init.normal_(layer.bias, 0.0, 0.1)
    net.eval()
    x = torch.rand(4, 1, size, size)
    with torch.no_grad():
        p, cam = ClassifierWithMap(net).eval()(x)
        torch.testing.assert_close(p, net(x), rtol=0, atol=0)  # p_defect exactly as before
    ref = _autograd_cam(net, x)
    assert int((ref.amax((1, 2, 3)) > 0).sum()) >= 2  # maps to compare (a part may have none)
    torch.testing.assert_close(cam, ref, rtol=1e-4, atol=1e-6)


def _good(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [find_and_align(render_part(rng, (2 * SIZE, 2 * SIZE)).image, None, None, SIZE).crop
            for _ in range(n)]


def _spot(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """The crop with a disc of the opposite shade on a random point of the part; its centre."""
    ys, xs = np.nonzero(part_mask(crop))
    i = int(rng.integers(len(ys)))
    cy, cx = int(ys[i]), int(xs[i])
    yy, xx = np.mgrid[:SIZE, :SIZE]
    alpha = 0.8 * np.clip(RADIUS + 1 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)
    shade = 255.0 if crop[cy, cx] < 128 else 0.0
    return (crop * (1 - alpha) + shade * alpha).astype(np.uint8), (cx, cy)


def test_an_ensembles_map_is_its_members_maps_averaged(tmp_path) -> None:
    """Two networks read as one: p_defect from their mean logit, the map the mean of each
    member's Grad-CAM (autograd's, scaled to a peak of one) scaled to p; the file the station
    opens gives both, with every map node kept float by int8."""
    torch.manual_seed(7)
    nets = [VGG16(VGGConfig(size=SIZE, width=0.0625)).eval() for _ in range(2)]
    for net in nets:
        for layer in net.classifier:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, 0.0, 0.2)
    x = torch.rand(6, 1, SIZE, SIZE)
    ensemble = Ensemble(nets).eval()
    with torch.no_grad():
        p, cam = ClassifierWithMap(ensemble)(x)
        logits = torch.stack([n.logits(x) for n in nets])
    torch.testing.assert_close(p, torch.sigmoid(logits.mean(0)))
    units = []
    for net in nets:
        m = _autograd_cam(net, x)
        units.append(m / m.amax((2, 3), keepdim=True).clamp_min(1e-12))
    mean = torch.stack(units).mean(0)
    expected = mean / mean.amax((2, 3), keepdim=True).clamp_min(1e-12) * p[:, None, None, None]
    assert (expected.amax((2, 3)) > 0).all()  # every part has a map to compare
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=1e-4)

    path = tmp_path / "classifier.onnx"
    exported, written = export_classifier(ensemble, path, _meta(), x[:2])
    assert written.output_names == ("p_defect", "cam")
    diffs = parity(exported, path, x.numpy())
    assert not over_tolerance(diffs), diffs
    assert {n.split("/")[1] for n in float_nodes(path)} == {"gradcam.0", "gradcam.1",
                                                            "gradcam_blend"}
    model = load_model(path, "cpu", 1)
    got_p, maps = model.infer_map(x.numpy())
    np.testing.assert_allclose(got_p, p.numpy(), atol=1e-5)
    np.testing.assert_allclose(maps, cam[:, 0].numpy(), atol=1e-5)
    int8 = quantize_static(path, tmp_path / "classifier.int8.onnx", x.numpy(),
                           nodes_to_exclude=float_nodes(path))
    int8_p, int8_maps = load_model(int8, "cpu", 1).infer_map(x.numpy())
    assert int8_maps is not None and int8_maps.shape == maps.shape
    np.testing.assert_allclose(int8_maps.max(axis=(1, 2)), int8_p, rtol=1e-5)


@pytest.mark.parametrize("flips, mirrors", [("horizontal", [(3,)]),
                                             ("both", [(3,), (2,), (2, 3)])])
def test_a_mirror_invariant_product_reads_each_crop_and_its_mirror_images(
        tmp_path, flips: str, mirrors: list[tuple[int, ...]]) -> None:
    """models.flips: the file's p_defect is the same for a tile and its mirror image, and
    the map of the mirror image is the map mirrored, so the operator's map still sits on the
    defect; the mean over views is what the station runs (file = torch)."""
    torch.manual_seed(3)
    net = VGG16(VGGConfig(size=SIZE, width=0.0625)).eval()
    for layer in net.classifier:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, 0.0, 0.2)
    x = torch.rand(4, 1, SIZE, SIZE)
    wrapped = ClassifierWithMap(Ensemble([net], flips=flips)).eval()
    with torch.no_grad():
        p, cam = wrapped(x)
        views = [x] + [torch.flip(x, dims) for dims in mirrors]
        torch.testing.assert_close(p, torch.sigmoid(torch.stack([net.logits(v) for v in views])
                                                    .mean(0)))
        for dims in mirrors:
            p_m, cam_m = wrapped(torch.flip(x, dims))
            torch.testing.assert_close(p_m, p, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(cam_m, torch.flip(cam, dims), atol=1e-5, rtol=1e-4)
        if flips == "horizontal":  # not turned upside down: a different score
            assert not torch.allclose(wrapped(torch.flip(x, (2,)))[0], p, atol=1e-4)
    path = tmp_path / "classifier.onnx"
    exported, _ = export_classifier(wrapped.net, path, _meta(), x[:2])
    assert not over_tolerance(parity(exported, path, x.numpy()))
    got_p, maps = load_model(path, "cpu", 1).infer_map(x.numpy())
    np.testing.assert_allclose(got_p, p.numpy(), atol=1e-5)
    np.testing.assert_allclose(maps, cam[:, 0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="flips 'diagonal'"):
        Ensemble([net], flips="diagonal")


def test_an_ensemble_refuses_members_of_other_inputs() -> None:
    with pytest.raises(ValueError, match="different inputs"):
        Ensemble([VGG16(VGGConfig(size=64, width=0.0625)), VGG16(VGGConfig(size=96, width=0.0625))])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def _meta() -> ModelMetadata:
    return ModelMetadata(kind="classifier", threshold=0.5, preprocess=SPEC.to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(),
                         version="classifier-map-test")


@pytest.fixture(scope="module")
def spot_model(tmp_path_factory) -> tuple[Path, ClassifierWithMap, np.ndarray, np.ndarray]:
    """A classifier trained (~50 s, one thread) on good parts and parts with one spot, exported
    with its map; and 40 held-out spotted parts (prepared) with their spots' centres."""
    rng = np.random.default_rng(2)
    good = _good(1, 96)
    spotted = [_spot(c, rng)[0] for c in _good(2, 48)]
    held = [_spot(c, rng) for c in _good(4, 40)]
    val_good = _good(3, 24)
    threads = torch.get_num_threads()
    try:
        result = train_classifier(
            good + spotted, np.r_[np.zeros(len(good)), np.ones(len(spotted))],
            val_good + [h[0] for h in held], np.r_[np.zeros(len(val_good)), np.ones(len(held))],
            SPEC, ClassifierOptions(size=SIZE, width=0.125, dropout=0.0, epochs=8, minutes=10.0,
                                    batch_size=16, lr=1e-3, seed=0, threads=1, device="cpu",
                                    synth_ratio=0.0, members=1),
            progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.history[-1]["val_auroc"] >= 0.95, result.history[-1]  # it sees the spots
    path = tmp_path_factory.mktemp("classifier_map") / "classifier.onnx"
    x = prepare_batch([h[0] for h in held], SPEC)
    exported, _ = export_classifier(result.model, path, _meta(), torch.from_numpy(x[:2]))
    assert isinstance(exported, ClassifierWithMap)
    return path, exported, x, np.array([h[1] for h in held], np.float64)


def _peaks(maps: np.ndarray) -> np.ndarray:
    """(x, y) of each map's maximum."""
    ys, xs = np.unravel_index(maps.reshape(len(maps), -1).argmax(1), maps.shape[1:])
    return np.stack([xs, ys], axis=1).astype(np.float64)


def _hits(maps: np.ndarray, centres: np.ndarray) -> tuple[float, float]:
    """Share of maps peaking on their own part's spot, and on another part's (chance)."""
    peaks = _peaks(maps)
    own = np.hypot(*(peaks - centres).T) <= HIT
    other = np.hypot(*(peaks - np.roll(centres, 1, axis=0)).T) <= HIT
    return float(own.mean()), float(other.mean())


@pytest.mark.learning
def test_exported_map_peaks_on_the_defect(spot_model) -> None:
    path, exported, x, centres = spot_model
    model = load_model(path, "cpu", 1)
    assert isinstance(model, ClassifierModel) and model.has_map
    p, maps = model.infer_map(x)
    assert maps is not None and maps.shape == (len(x), SIZE, SIZE)
    # measured on 40 held-out parts: 0.78 / 0.83 / 0.88 of the peaks on the spot (default /
    # avx2 / avx512 kernels); the same peaks scored against another part's spot: 0.25-0.35,
    # so the map follows the spot, not the part's outline
    own, chance = _hits(maps, centres)
    assert own >= 0.65 and own >= chance + 0.3, (own, chance)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), p, rtol=1e-5)  # peak = p_defect
    diffs = parity(exported, path, x)
    assert set(diffs) == {"p_defect", "cam"} and not over_tolerance(diffs), diffs


@pytest.mark.learning
@pytest.mark.parametrize("told", ["map nodes excluded", "nothing excluded"])
def test_int8_copy_keeps_the_map_float_and_on_the_defect(spot_model, tmp_path, told) -> None:
    """train.py excludes the map's nodes; a caller that excludes nothing (as before the map)
    still gets a float map, since its products are Einsums the quantizer never touches."""
    path, _, x, centres = spot_model
    keep = float_nodes(path)
    assert keep and all(n.startswith(("/gradcam.0/", "/gradcam_blend/")) for n in keep)
    out = quantize_static(path, tmp_path / "classifier.int8.onnx", x[:32],
                          nodes_to_exclude=keep if told == "map nodes excluded" else ())
    graph = onnx.load(str(out)).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # the convs are int8

    def map_ops(g: onnx.GraphProto) -> set[tuple[str, str]]:
        """The map's arithmetic (the optimizer may fold its constants and shape reads)."""
        math = {"Einsum", "Greater", "Mul", "Div", "ReduceSum", "ReduceMax", "Relu", "Resize"}
        return {(n.name, n.op_type) for n in g.node
                if n.name.startswith("/gradcam") and n.op_type in math}

    # the map's nodes are the float file's, unchanged (none became an int8 op), and none of
    # their results is quantized: the map is computed in float from the dequantized
    # activations and weights of the int8 network it explains
    ops = map_ops(onnx.load(str(path)).graph)
    assert len(ops) >= 10 and map_ops(graph) == ops
    quantized = {i for n in graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert not quantized & {o for n in graph.node if n.name.startswith("/gradcam")
                            for o in n.output}
    float_p, float_maps = load_model(path, "cpu", 1).infer_map(x)
    int8_p, int8_maps = load_model(out, "cpu", 1).infer_map(x)
    assert float_maps is not None and int8_maps is not None
    own, chance = _hits(int8_maps, centres)  # measured 0.75 / 0.80 / 0.88 (chance 0.28-0.35)
    assert own >= 0.65 and own >= chance + 0.3, (own, chance)
    moved = np.hypot(*(_peaks(int8_maps) - _peaks(float_maps)).T)
    assert np.mean(moved <= 16) >= 0.9, np.round(moved, 1)  # one cell; measured 0.98-1.0
    np.testing.assert_allclose(int8_maps.max(axis=(1, 2)), int8_p, rtol=1e-5)


def test_export_without_map_is_the_old_file(tmp_path) -> None:
    net = VGG16(VGGConfig(size=64, width=0.0625)).eval()
    x = torch.rand(2, 1, 64, 64)
    meta = ModelMetadata(kind="classifier", threshold=0.5,
                         preprocess=PreprocessSpec(size=64).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict())
    exported, written = export_classifier(net, tmp_path / "old.onnx", meta, x, with_map=False)
    assert exported is net and written.output_names == ("p_defect",)
    assert [o.name for o in onnx.load(str(tmp_path / "old.onnx")).graph.output] == ["p_defect"]
    assert float_nodes(tmp_path / "old.onnx") == []
