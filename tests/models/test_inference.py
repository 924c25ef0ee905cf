"""onnxruntime sessions for both model kinds, as the station uses them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from station.models.inference import AutoencoderModel, ClassifierModel, choose_providers, load_model
from station.models.metadata import ModelMetadata
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec
from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead
from training.classifier import VGG16, VGGConfig
from training.export import export_onnx, over_tolerance, parity

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


def test_the_retrieval_autoencoder_runs_without_the_blocked_layout(models, tmp_path,
                                                                  monkeypatch):
    """onnxruntime's blocked channel layout speeds a network's convolutions and slows the
    nearest-good-parts autoencoder's blurs: evaluation (``load_model``) and the line
    (``load_line_model``) open that one file without it, the rest with it, and the file's
    scores stay torch's."""
    import station.models.inference as inference
    from station.pipeline.inspector import load_line_model
    from training.autoencoder.train import neighbour_head

    rng = np.random.default_rng(0)
    good = rng.random((12, 1, SIZE, SIZE), dtype=np.float32) * 0.1 + 0.5
    head = neighbour_head(good[:8], good[8:], AutoencoderOptions(neighbours=2, jitter_px=1)).head
    meta = replace(_meta("autoencoder", 2.0),
                   architecture={"name": inference.RETRIEVAL_ARCHITECTURE})
    path = export_onnx(head.eval(), tmp_path / "retrieval.onnx", meta, torch.from_numpy(good[:2]))
    opened: list[tuple[str, tuple[str, ...]]] = []
    real = inference.new_session

    def recorded(file, opts=None, providers=None, disabled=()):
        opened.append((Path(file).name, tuple(disabled)))
        return real(file, opts, providers, disabled)

    monkeypatch.setattr(inference, "new_session", recorded)
    monkeypatch.setattr("station.pipeline.inspector.new_session", recorded)
    for load in (load_model, load_line_model):
        opened.clear()
        retrieval = load(path, "cpu", 1)
        assert opened[-1] == ("retrieval.onnx", (inference.BLOCKED_LAYOUT,))
        for kind in ("classifier", "autoencoder"):  # networks: the layout kept
            opened.clear()
            load(models[kind][1], "cpu", 1)
            assert opened == [(f"{kind}.onnx", ())]
        x = np.concatenate([good[8:], rng.random((2, 1, SIZE, SIZE), dtype=np.float32)])
        maps, raw = retrieval.infer(x)
        with torch.no_grad():
            ref_map, ref_raw = head(torch.from_numpy(x))
        assert np.abs(raw - ref_raw.numpy()).max() <= 1e-3 * max(1.0, np.abs(raw).max())
        assert np.abs(maps - ref_map.numpy()[:, 0]).max() <= 1e-3 * max(1.0, np.abs(maps).max())


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


def test_telemetry_is_turned_off_once_before_the_first_session(models, monkeypatch):
    # audit #10: onnxruntime's telemetry events were on
    import station.models.inference as inference
    from station.pipeline.inspector import load_line_model

    calls: list[int] = []
    real = ort.disable_telemetry_events

    def counted() -> None:
        calls.append(1)
        real()

    monkeypatch.setattr(ort, "disable_telemetry_events", counted)
    monkeypatch.setattr(inference, "_telemetry_disabled", False)  # a fresh process
    sessions = [load_model(models["classifier"][1], "cpu"),
                load_line_model(models["autoencoder"][1], "cpu", 1),
                inference.open_session(models["classifier"][1], "cpu", 1)]
    assert all(s is not None for s in sessions)
    assert calls == [1]  # before the first session, and only once
    assert not inference.disable_telemetry()  # idempotent: already off
    assert calls == [1]


def test_every_session_in_station_and_training_is_made_by_the_helper():
    """No module makes an ``InferenceSession`` itself (it would skip the telemetry switch);
    training's quantizer, whose calibration makes its own sessions, turns it off first."""
    import ast

    root = Path(__file__).resolve().parents[2]
    direct = []
    for folder in ("station", "training", "calibration", "scripts"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
                        and getattr(node.func, "attr", getattr(node.func, "id", None))
                        == "InferenceSession"):
                    direct.append(f"{path.relative_to(root)}:{node.lineno}")
    assert len(direct) == 1 and direct[0].startswith("station/models/inference.py:"), direct
    quantize = (root / "training" / "quantize.py").read_text(encoding="utf-8")
    body = quantize[quantize.index("def quantize_static("):]
    assert body.index("disable_telemetry()") < body.index("_ort_quantize_static(")


def test_a_missing_provider_names_itself():
    from station.models.inference import ProviderUnavailable

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ProviderUnavailable) as missing:
        choose_providers("cuda")
    assert missing.value.provider == "cuda" and "CPUExecutionProvider" in missing.value.available


# --- the classifier's Grad-CAM map (optional output ``cam``) ----------------------------------
def _vgg_with_a_head(seed: int) -> VGG16:
    """A tiny VGG16 whose head weights are large enough that its ReLUs gate part of the
    gradient (the default init leaves the logit nearly constant), so the map has structure."""
    torch.manual_seed(seed)
    vgg = VGG16(VGGConfig(size=SIZE, in_channels=1, width=0.05))
    for layer in vgg.classifier:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, 0.0, 0.2)
            torch.nn.init.normal_(layer.bias, 0.0, 0.1)
    return vgg.eval()


@pytest.fixture(scope="module")
def map_files(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """The same classifier exported with its map and without (as files made before it)."""
    from training.export import export_classifier

    folder = tmp_path_factory.mktemp("classifier_map")
    vgg = _vgg_with_a_head(1)
    x = torch.rand(2, 1, SIZE, SIZE)
    with_map, _ = export_classifier(vgg, folder / "with_map.onnx", _meta("classifier", 0.4), x)
    old, _ = export_classifier(vgg, folder / "old.onnx", _meta("classifier", 0.4), x,
                               with_map=False)
    return {"with_map": (with_map, folder / "with_map.onnx"), "old": (old, folder / "old.onnx")}


def test_classifier_map_is_at_crop_resolution_and_peaks_at_p_defect(map_files):
    exported, path = map_files["with_map"]
    model = load_model(path, provider="cpu", threads=1)
    assert isinstance(model, ClassifierModel) and model.has_map
    assert model.meta.output_names == ("p_defect", "cam")
    x = np.random.default_rng(2).random((5, 1, SIZE, SIZE), dtype=np.float32)
    p, maps = model.infer_map(x)
    assert p.shape == (5,) and maps is not None and maps.shape == (5, SIZE, SIZE)
    np.testing.assert_array_equal(model.infer(x), p)  # infer() is unchanged: p_defect only
    assert (maps >= 0).all()  # ReLU'd: only evidence for a defect is drawn
    # on the maps' "1.0 = threshold" colour scale the peak is p_defect / threshold
    np.testing.assert_allclose(maps.max(axis=(1, 2)), p, rtol=1e-5)
    np.testing.assert_allclose(model.normalized_map(maps).max(axis=(1, 2)),
                               p / model.meta.threshold, rtol=1e-5)
    assert np.ptp(maps, axis=(1, 2)).min() > 0.1 * p.min()  # a map, not a flat level
    diffs = parity(exported, path, x)
    assert set(diffs) == {"p_defect", "cam"} and not over_tolerance(diffs), diffs


def test_classifier_file_without_a_map_still_loads_and_says_so(map_files):
    _, old_path = map_files["old"]
    _, new_path = map_files["with_map"]
    old = load_model(old_path, provider="cpu", threads=1)
    assert isinstance(old, ClassifierModel) and not old.has_map
    assert old.meta.output_names == ("p_defect",)
    x = np.random.default_rng(3).random((3, 1, SIZE, SIZE), dtype=np.float32)
    p, maps = old.infer_map(x)
    assert maps is None
    np.testing.assert_allclose(p, load_model(new_path, "cpu", 1).infer(x), atol=1e-6)


def test_a_map_the_metadata_does_not_list_is_refused(map_files, tmp_path):
    from dataclasses import replace

    from station.models.metadata import ModelRefused
    from training.export import write_metadata

    _, path = map_files["with_map"]
    lying = tmp_path / "lying.onnx"
    lying.write_bytes(path.read_bytes())
    write_metadata(lying, replace(_meta("classifier", 0.4), output_names=("p_defect",)))
    with pytest.raises(ModelRefused, match=r"must output \['p_defect'\] or \['p_defect', 'cam'\]; "
                                           r"the graph has \['p_defect', 'cam'\]"):
        load_model(lying, "cpu")


class _CoarseMap(torch.nn.Module):
    """A classifier whose map is not at crop resolution (half of it)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, cam = self.net(x)
        return p, cam[:, :, ::2, ::2]


def test_a_map_not_at_crop_resolution_is_refused(map_files, tmp_path):
    from dataclasses import replace

    from station.models.metadata import ModelRefused

    exported, _ = map_files["with_map"]
    meta = replace(_meta("classifier", 0.4), output_names=("p_defect", "cam"))
    path = export_onnx(_CoarseMap(exported), tmp_path / "coarse.onnx", meta,
                       torch.rand(2, 1, SIZE, SIZE))
    with pytest.raises(ModelRefused, match=rf"cam has shape .*expected \[N, 1, {SIZE}, {SIZE}\]"):
        load_model(path, "cpu")


@pytest.mark.parametrize(("kind", "shift", "says"), [
    ("classifier", -5.0, "P(defect) below 0"), ("classifier", 5.0, "P(defect) above 1"),
    ("autoencoder", -float("inf"), "a score of minus infinity")])
def test_a_score_the_model_cannot_give_is_nan_and_the_part_an_error(tmp_path, kind, shift, says):
    """A broken file's P(defect) of -5 passed every part under any threshold; a score no
    model of the kind can give reads as NaN, which the decision makes an ERROR (rejected)."""
    import onnx
    from onnx import helper, numpy_helper

    from station.decision import ERROR, decide
    from tests.calibration.test_calibration_threshold import tiny_model

    path = tiny_model(tmp_path / f"{kind}.onnx", kind, 0.5)
    model = onnx.load(str(path))
    out = "p_defect" if kind == "classifier" else "score"
    node = next(n for n in model.graph.node if out in n.output)
    node.output[list(node.output).index(out)] = "raw"  # raw + shift -> the file's output
    model.graph.initializer.append(numpy_helper.from_array(np.float32(shift), "shift"))
    model.graph.node.append(helper.make_node("Add", ["raw", "shift"], [out]))
    onnx.save(model, str(path))
    m = load_model(path, "cpu", 1)
    batch = np.zeros((2, *m.input_shape), np.float32)
    scores = m.infer(batch) if kind == "classifier" else m.infer(batch)[1]
    assert np.isnan(scores).all(), says
    norm = float(m.normalized(float(scores[0])))
    ae, cls = (norm, None) if kind == "autoencoder" else (None, norm)
    assert decide(ae, cls, kind, 1.0, 1.0) == ERROR
