"""The autoencoder learns good synthetic parts, separates defects, and exports faithfully."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from station.models.inference import load_model
from station.models.metadata import ModelMetadata
from station.sim import write_mvtec_dataset
from station.sources.datasets import read_dataset
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec, prepare_batch
from training.autoencoder import (
    AutoencoderOptions,
    ConvAutoencoder,
    ScoringHead,
    part_region,
    score_batches,
    train_autoencoder,
)
from training.data import SplitOptions, compute_crops, make_split
from training.export import export_onnx, parity
from training.metrics import roc_auc

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    root = write_mvtec_dataset(tmp_path_factory.mktemp("ae") / "synth", n_train_good=48,
                               n_test_good=12, n_test_per_defect=3, size=160, seed=3)
    samples = read_dataset(root)
    cs = compute_crops(samples, LocalizeParams(), AlignParams(), SIZE, None, progress=False)
    assert cs.ok.all()
    return samples, cs


# Seeds of the fixture's runs (about 2 s each). Measured on 30 held-out parts at 15 epochs,
# the same on default, avx2 and avx512 kernels: image AUROC over every defect type 0.72-0.81
# per seed (subtle kinds, a chipped edge or a damaged thread, sit near chance for an
# autoencoder this small; the old single-seed bar of 0.75 sat inside that spread), while
# contamination, a blob the decoder cannot reproduce, scored 0.94-0.97 on every seed.
AE_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def runs(crops):
    """One training run per seed, and the held-out test crops with labels and defect kinds."""
    samples, cs = crops
    spec = PreprocessSpec(size=SIZE)
    split = make_split(samples, SplitOptions(seed=0, train_on_test=False))
    train = prepare_batch(cs.select(split.roles["train_good"]).good_crops(), spec)
    val = prepare_batch(cs.select(split.roles["val_good"]).good_crops(), spec)
    results = [train_autoencoder(train, val, AutoencoderOptions(
        epochs=15, base_channels=8, depth=3, latent_channels=8, batch_size=8, lr=3e-3,
        seed=seed), progress=False) for seed in AE_SEEDS]
    test = cs.select(split.roles["eval"])
    kinds = np.array([s.defect_type if s.label else "good" for s in test.samples])
    return results, prepare_batch(list(test.crops), spec), kinds


@pytest.fixture(scope="module")
def trained(runs):
    results, x, kinds = runs
    return results[0], x, (kinds != "good").astype(np.int64)


@pytest.mark.learning
def test_autoencoder_separates_synthetic_defects(runs):
    results, x, kinds = runs
    y = (kinds != "good").astype(np.int64)
    contamination = (kinds == "contamination") | (y == 0)
    aucs, blob_aucs = [], []
    for res in results:
        assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"], res.history
        maps, scores = score_batches(res.head, x)
        assert maps.shape == (len(x), SIZE, SIZE)
        aucs.append(roc_auc(scores, y))
        blob_aucs.append(roc_auc(scores[contamination], y[contamination]))
    # every defect kind together: clearly above chance (median of seeds 0.79)
    assert np.median(aucs) >= 0.65, aucs
    # a defect the autoencoder must never miss: a foreign blob on the part (0.94-0.97)
    assert np.median(blob_aucs) >= 0.85, blob_aucs
    assert min(blob_aucs) >= 0.75, blob_aucs


@pytest.mark.learning
def test_scoring_head_is_zero_outside_the_part_region(trained):
    res, x, _ = trained
    roi = res.head.roi[0, 0].numpy()
    assert 0.05 < roi.mean() < 0.9
    maps, _ = score_batches(res.head, x[:4])
    assert np.all(maps[:, roi == 0] == 0)


@pytest.mark.learning
def test_autoencoder_export_parity(trained, tmp_path):
    res, x, _ = trained
    meta = ModelMetadata(kind="autoencoder", threshold=1.0,
                         preprocess=PreprocessSpec(size=SIZE).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict())
    path = export_onnx(res.head, tmp_path / "ae.onnx", meta, torch.from_numpy(x[:2]))
    diffs = parity(res.head, path, x)
    assert set(diffs) == {"anomaly_map", "score"}
    assert max(diffs.values()) <= 1e-4, diffs
    model = load_model(path, "cpu", threads=1)
    maps, raw = model.infer(x[:3])
    t_maps, t_raw = score_batches(res.head, x[:3])
    np.testing.assert_allclose(raw, t_raw, atol=1e-4)
    np.testing.assert_allclose(maps, t_maps, atol=1e-4)


def test_part_region_follows_the_part(crops):
    _, cs = crops
    x = prepare_batch(list(cs.crops[:20]), PreprocessSpec(size=SIZE))
    roi = part_region(x, AutoencoderOptions())
    dark = x.mean(axis=(0, 1)) < 0.6  # where the part is on average
    assert roi[dark].mean() > 0.95
    assert roi[0, :].sum() == 0 and roi[-1, :].sum() == 0  # background rows stay out


def test_architecture_shapes_and_errors():
    opts = AutoencoderOptions(depth=3, base_channels=4, latent_channels=2)
    net = ConvAutoencoder(3, opts)
    assert net(torch.zeros(2, 3, 48, 48)).shape == (2, 3, 48, 48)
    head = ScoringHead(net, 48, opts)
    amap, score = head(torch.zeros(2, 3, 48, 48))
    assert amap.shape == (2, 1, 48, 48) and score.shape == (2,)
    with pytest.raises(ValueError, match="divisible"):
        train_autoencoder(np.zeros((4, 1, 36, 36), np.float32), np.zeros((2, 1, 36, 36), np.float32),
                          AutoencoderOptions(depth=4, epochs=1), progress=False)


def test_a_blur_of_several_maps_blurs_each_alone():
    """The neighbours' differences are blurred as the channels of one map (one convolution,
    not one per neighbour); each must come out as if it had been blurred alone."""
    from training.autoencoder.model import GaussianBlur

    maps = torch.rand(2, 5, 20, 30)
    together = GaussianBlur(2.0, channels=5)(maps)
    alone = torch.cat([GaussianBlur(2.0)(maps[:, i:i + 1]) for i in range(5)], dim=1)
    assert torch.allclose(together, alone, atol=1e-6)
    assert not torch.allclose(together, maps, atol=1e-2)  # it did blur


def test_crop_cache_round_trips(crops, tmp_path: Path):
    samples, cs = crops
    a = compute_crops(samples[:5], LocalizeParams(), AlignParams(), SIZE, tmp_path, progress=False)
    assert len(list(tmp_path.glob("crops-*.npz"))) == 1
    b = compute_crops(samples[:5], LocalizeParams(), AlignParams(), SIZE, tmp_path, progress=False)
    np.testing.assert_array_equal(a.crops, b.crops)
    np.testing.assert_array_equal(a.crop_to_frame, b.crop_to_frame)
    np.testing.assert_array_equal(a.crops, cs.crops[:5])
