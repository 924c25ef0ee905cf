"""The retrieval reference: good parts reconstruct good parts, and a missing stretch of thread
shows when a neighbour must match it as a patch (``match_sigma``), in torch and in ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from station.models.metadata import ModelMetadata
from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams
from station.vision.preprocess import PreprocessSpec
from training.autoencoder import AutoencoderOptions
from training.autoencoder.model import score_batches
from training.autoencoder.train import left_out_residuals, neighbour_head
from training.export import export_onnx, parity

H, W, PITCH = 24, 64, 8
GAP = slice(20, 44)  # three pitches of thread with no crests


def threaded(phase: int, rng: np.random.Generator, missing: slice | None = None) -> np.ndarray:
    """A grey crop [1, H, W]: a dark bar (the core) with crests on its upper edge every
    ``PITCH`` px from ``phase`` on (a thread turned by a random angle), plus sensor noise."""
    img = np.full((H, W), 0.8, np.float32)
    img[9:17] = 0.2
    for x0 in range(phase % PITCH, W, PITCH):
        img[5:9, x0:x0 + PITCH // 2] = 0.2
    if missing is not None:
        img[5:9, missing] = 0.8
    img += rng.normal(0.0, 0.03, img.shape).astype(np.float32)
    return img[None]


@pytest.fixture(scope="module")
def parts() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        # few good parts per thread phase: a part's nearest goods have other phases too
        "train": np.stack([threaded(p, rng) for p in (*range(PITCH), 1, 3, 5, 7)]),
        "val": np.stack([threaded(int(p), rng) for p in rng.integers(0, PITCH, 16)]),
        "good": np.stack([threaded(int(p), rng) for p in rng.integers(0, PITCH, 8)]),
        "gap": np.stack([threaded(int(p), rng, GAP) for p in rng.integers(0, PITCH, 8)]),
    }


def head(parts: dict[str, np.ndarray], match_sigma: float):
    options = AutoencoderOptions(neighbours=5, jitter_px=1, input_blur=0.5, blur_sigma=1.0,
                                 sd_blur_sigma=1.0, whole_region=True, match_sigma=match_sigma)
    return neighbour_head(parts["train"], parts["val"], options).head


def scores(h, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return h(torch.from_numpy(x))[1].numpy()


def test_a_missing_stretch_of_thread_needs_patch_matching(parts):
    """Pixel by pixel, each missing crest matches a gap between some other part's crests,
    so the stretch hides; matched as a patch, no single good part has it and it stands out."""
    ratio = {}  # the weakest defect over the strongest good part (both z-scores)
    for sigma in (0.0, 2.0):
        h = head(parts, sigma)
        ratio[sigma] = float(scores(h, parts["gap"]).min() / scores(h, parts["good"]).max())
    assert ratio[2.0] > 4.0, ratio  # measured 32 here
    assert ratio[2.0] > 3 * ratio[0.0], ratio  # pixel by pixel: 3.1


@pytest.mark.parametrize("regions", [(1, 1), (2, 3)])
def test_patch_matching_exports_in_graph(parts, tmp_path: Path, regions):
    """The map and score stay in the ONNX graph: patch matching, and regions that each find
    their own neighbours."""
    h = head(parts, 2.0) if regions == (1, 1) else region_head(parts, regions)
    import torch

    meta = ModelMetadata(kind="autoencoder", threshold=1.0,
                         preprocess=PreprocessSpec(size=W, height=H).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict())
    path = export_onnx(h, tmp_path / "ae.onnx", meta, torch.from_numpy(parts["good"][:2]))
    diffs = parity(h, path, np.concatenate([parts["good"], parts["gap"]]))
    assert max(diffs.values()) <= 1e-3, diffs


def headed(mark: int, phase: int, rng: np.random.Generator, missing: bool = False
           ) -> np.ndarray:
    """A part with a head (left half: a mark at one of 8 places) and a thread (right half:
    crests from ``phase``, a pitch clear of the middle; ``missing``: two pitches of it
    without crests); noise as above."""
    img = np.full((H, W), 0.8, np.float32)
    img[9:17] = 0.2
    img[17:24, 2 + 2 * mark:6 + 2 * mark] = 0.2
    for x0 in range(W // 2 + PITCH + phase % PITCH, W, PITCH):
        img[5:9, x0:x0 + PITCH // 2] = 0.2
    if missing:
        img[5:9, 44:60] = 0.8
    img += rng.normal(0.0, 0.03, img.shape).astype(np.float32)
    return img[None]


@pytest.fixture(scope="module")
def headed_parts() -> dict[str, np.ndarray]:
    """Good parts whose head mark and thread phase go together in every part the bank has;
    the "mixed" parts combine them another way: good in each stretch, new as a whole."""
    rng = np.random.default_rng(1)
    pairs = [(v, v) for v in range(PITCH)]
    return {
        "train": np.stack([headed(m, p, rng) for m, p in pairs * 2]),
        "val": np.stack([headed(m, p, rng) for m, p in pairs * 2]),
        "good": np.stack([headed(m, p, rng) for m, p in pairs]),
        "mixed": np.stack([headed(v, (v + PITCH // 2) % PITCH, rng) for v in range(PITCH)]),
        "gap": np.stack([headed(v, v, rng, missing=True) for v in range(PITCH)]),
    }

def region_head(parts: dict[str, np.ndarray], regions: tuple[int, int]):
    options = AutoencoderOptions(neighbours=1, jitter_px=1, input_blur=0.5, blur_sigma=1.0,
                                 sd_blur_sigma=1.0, whole_region=True, match_sigma=2.0,
                                 regions=regions)
    return neighbour_head(parts["train"], parts["val"], options).head


def test_each_region_finds_its_own_neighbours(headed_parts):
    """Whole-crop retrieval gives a part ONE set of neighbours, wrong on its head or on its
    thread when the part combines them in a way no good part in the bank does; with two
    regions each half finds the good parts that match it there, so the part scores like a
    good part, and a missing stretch of thread still stands out."""
    p = headed_parts
    whole, halves = region_head(p, (1, 1)), region_head(p, (1, 2))
    good = scores(halves, p["good"]).max()
    assert scores(halves, p["mixed"]).max() < 1.5 * good  # measured 0.9x
    assert scores(whole, p["mixed"]).min() > 3 * scores(whole, p["good"]).max()  # 25x
    assert scores(halves, p["gap"]).min() > 3 * good  # 16x



def test_regions_follow_the_product_kind():
    """A found and turned part is cut along its length; a fixed region (a surface) is one
    region, its neighbours given its level and contrast; regions the engineer set are kept."""
    from training.train import TrainOptions, _ae_options

    spec = PreprocessSpec(size=320, height=112)
    opts = TrainOptions(data=Path("d"), out=Path("o"))
    found = _ae_options(opts, LocalizeParams(), 1.0, spec)
    assert (tuple(found.regions), found.jitter_px) == ((1, 6), 1)
    fixed = _ae_options(opts, LocalizeParams(method="fixed"), 1.0, spec)
    assert (tuple(fixed.regions), fixed.jitter_px, fixed.whole_region) == ((1, 1), 6, True)
    assert (fixed.photometric, found.photometric) == (True, False)
    opts.ae.regions = (2, 3)
    assert tuple(_ae_options(opts, LocalizeParams(), 1.0, spec).regions) == (2, 3)


def test_the_band_forgives_what_alignment_leaves_and_no_more():
    """A good part moved by up to ``jitter_px`` lies inside its neighbour's band (residual
    0), grey or colour; a pixel darker than anything within that reach shows by exactly how
    much darker it is."""
    import torch

    from training.autoencoder.neighbours import NeighbourReference

    rng = np.random.default_rng(2)
    for c in (1, 3):  # values a float16 bank holds exactly
        bank = rng.uniform(0.2, 0.8, (1, c, 20, 20)).astype(np.float16).astype(np.float32)
        ref = NeighbourReference(bank, k=1, jitter_px=2, input_blur=0.0)
        moved = torch.from_numpy(np.roll(bank, (1, -2), axis=(2, 3)).copy())
        assert float(ref.residual(moved)[..., 3:-3, 3:-3].abs().max()) == 0.0
        lowest = torch.from_numpy(bank[0, :, 8:13, 8:13]).amin(dim=(1, 2))  # within 2 px
        moved[0, :, 10, 10] = lowest - 0.1
        assert float(ref.residual(moved)[0, 0, 10, 10]) == pytest.approx(0.1, abs=1e-5)


def test_a_colour_part_exports_in_graph(tmp_path: Path):
    """Colour crops take the same path: each channel has its band, the map is their mean,
    and onnxruntime agrees with torch."""
    import torch

    rng = np.random.default_rng(3)
    parts = rng.uniform(0.2, 0.8, (12, 3, H, W)).astype(np.float32)
    options = AutoencoderOptions(neighbours=2, jitter_px=2, input_blur=0.5, blur_sigma=1.0,
                                 sd_blur_sigma=1.0, whole_region=True, match_sigma=1.0)
    h = neighbour_head(parts[:8], parts[8:], options).head
    meta = ModelMetadata(kind="autoencoder", threshold=1.0,
                         preprocess=PreprocessSpec(size=W, height=H, channels=3).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict())
    path = export_onnx(h, tmp_path / "ae.onnx", meta, torch.from_numpy(parts[:2]))
    diffs = parity(h, path, parts)
    assert max(diffs.values()) <= 1e-3, diffs


def test_the_search_is_batched_within_its_memory_budget(tmp_path: Path, monkeypatch):
    """The nearest-parts search holds every query's difference to every bank crop, and its
    square ([N, bank, H/2 x W/2] float32, twice): a colour product with hundreds of good
    parts would pass the 4 GB a training may peak at in batches of 16. Batches shrink to
    stay within the budget, in training and in the station's model file alike, and the
    scores do not depend on the batch."""
    import torch

    import station.models.inference as inference
    from station.models.inference import load_model

    rng = np.random.default_rng(5)
    parts = rng.uniform(0.2, 0.8, (20, 3, H, W)).astype(np.float32)
    options = AutoencoderOptions(neighbours=2, jitter_px=1, whole_region=True)
    head = neighbour_head(parts[:10], parts[10:14], options).head
    per_crop = 14 * (H // 2) * (W // 2) * 4 * 2  # bank 10 + the 4 statistics crops, grey view
    monkeypatch.setattr(inference, "RETRIEVAL_BYTES", 3 * per_crop)
    assert head.batch_limit() == 3
    maps, scores = score_batches(head, parts)  # 3 crops a pass
    whole_maps, whole_scores = score_batches(head, parts, batch_size=20)
    np.testing.assert_allclose(scores, whole_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps, whole_maps, rtol=1e-5, atol=1e-5)

    meta = ModelMetadata(kind="autoencoder", threshold=1.0,
                         preprocess=PreprocessSpec(size=W, height=H, channels=3).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(),
                         architecture={"calibration": {"bank": 14}})
    path = export_onnx(head, tmp_path / "ae.onnx", meta, torch.from_numpy(parts[:2]))
    model = load_model(path, provider="cpu", threads=1)
    assert model.batch_limit() == 3  # the bank's size travels in the file
    monkeypatch.setattr(inference, "RETRIEVAL_BYTES", 100 * per_crop)
    assert model.batch_limit() == head.batch_limit() == 16  # small banks: batches as before


def test_a_colour_defect_at_the_same_grey_level_still_shows():
    """The nearest parts are found on a grey view (a third of the search), the residual is
    taken per channel: a patch that changes hue but not brightness is found by its colour."""
    import torch

    from training.autoencoder.neighbours import NeighbourReference

    rng = np.random.default_rng(4)
    ramp = np.linspace(0.0, 0.1, W, dtype=np.float32)[None, :]  # smooth: a narrow band
    base = np.stack([np.broadcast_to(level + ramp, (H, W)) for level in (0.3, 0.5, 0.6)])[None]
    bank = np.concatenate([base + rng.normal(0, 0.01, base.shape).astype(np.float32)
                           for _ in range(6)])
    ref = NeighbourReference(bank, k=2, jitter_px=1, input_blur=0.0)
    good = torch.from_numpy(base.copy())
    hue = good.clone()
    hue[0, 0, 8:14, 20:30] += 0.2  # redder and
    hue[0, 2, 8:14, 20:30] -= 0.2  # less blue: the channels' mean is unchanged
    assert torch.allclose(ref._retrieval_view(hue), ref._retrieval_view(good), atol=1e-6)
    with torch.no_grad():
        quiet, shown = ref.residual(good), ref.residual(hue)
    assert float(quiet.max()) < 0.02
    assert float(shown[0, 0, 9:13, 21:29].min()) > 0.08  # mean over channels of 0.2, 0, 0.2


def grain(level: float, gain: float, rng: np.random.Generator) -> np.ndarray:
    """A surface crop [1, H, W]: grinding marks (rows of a fixed random profile) at a
    brightness ``level`` and a contrast ``gain`` (a batch of tiles lit or fired a little
    differently), plus sensor noise."""
    marks = np.random.default_rng(7).normal(0.0, 0.08, (H, 1)).astype(np.float32)
    img = level + gain * np.broadcast_to(marks, (H, W))
    return (img + rng.normal(0.0, 0.01, (H, W))).astype(np.float32)[None]


def test_a_surface_lit_differently_is_compared_by_its_texture(tmp_path: Path):
    """A good surface brighter and more contrasted than every good one in the bank lies
    outside all their bands; each neighbour given the crop's level and contrast first
    (``photometric``), it scores like the other good ones, while a stain on it still
    stands out; in torch and in ONNX alike."""
    import torch

    rng = np.random.default_rng(8)
    bank = np.stack([grain(0.5, 1.0, rng) for _ in range(8)])
    val = np.stack([grain(0.5, 1.0, rng) for _ in range(8)])
    good = np.stack([grain(0.5, 1.0, rng) for _ in range(4)])
    lit = np.stack([grain(0.62, 1.3, rng) for _ in range(4)])
    stained = lit.copy()
    stained[:, 0, 8:14, 24:34] -= 0.15
    worst = {}
    for photometric in (False, True):
        options = AutoencoderOptions(neighbours=3, jitter_px=1, input_blur=0.5, blur_sigma=1.0,
                                     sd_blur_sigma=1.0, whole_region=True, match_sigma=1.0,
                                     photometric=photometric)
        h = neighbour_head(bank, val, options).head
        top = scores(h, good).max()
        worst[photometric] = (scores(h, lit).max() / top, scores(h, stained).min() / top)
    assert worst[False][0] > 10.0, worst  # measured 94x the good ones' top score
    assert worst[True][0] < 1.5, worst  # measured 1.15x
    assert worst[True][1] > 10.0, worst  # measured 55x
    meta = ModelMetadata(kind="autoencoder", threshold=1.0,
                         preprocess=PreprocessSpec(size=W, height=H).to_metadata(),
                         localize=LocalizeParams(method="fixed").to_dict(),
                         align=AlignParams().to_dict())
    path = export_onnx(h, tmp_path / "ae.onnx", meta, torch.from_numpy(good[:2]))
    diffs = parity(h, path, np.concatenate([good, lit, stained]))
    assert max(diffs.values()) <= 1e-3, diffs


def test_the_search_finds_the_nearest_parts_of_near_identical_bright_parts():
    """The search is one MatMul (2 q.b - |b|^2), not every difference: on bright parts that
    differ by little (the case float32 rounding breaks unless the bank's mean is taken off)
    it must pick exactly the parts the plain squared distances pick, each region on its own."""
    import torch

    from training.autoencoder.neighbours import NeighbourReference

    rng = np.random.default_rng(4)
    base = np.full((1, 32, 96), 0.9, np.float32)
    bank = (base + rng.normal(0, 0.004, (60, 1, 32, 96))).astype(np.float32)
    queries = (bank[:12] + rng.normal(0, 0.003, (12, 1, 32, 96))).astype(np.float32)
    for regions in ((1, 1), (1, 3)):
        ref = NeighbourReference(bank, k=3, jitter_px=1, input_blur=0.0, regions=regions)
        q = torch.from_numpy(queries)
        found = ref.nearest(q)
        views = ref._retrieval_view(torch.from_numpy(bank)).double()
        qv = ref._retrieval_view(q).double()
        for r, (y0, y1, x0, x1) in enumerate(ref.windows):
            window = torch.zeros(32 // 2, 96 // 2, dtype=torch.bool)
            window[y0:y1, x0:x1] = True
            d = ((qv[:, None] - views[None]) ** 2)[..., window.flatten()].sum(-1)
            exact = torch.topk(-d, 3, dim=1).indices
            assert torch.equal(found[r].sort(dim=1).values, exact.sort(dim=1).values), regions


def test_good_parts_alike_to_the_last_pixel_still_score():
    """A bank of identical good parts leaves no spread to divide by: the spread has a floor,
    so the scores stay finite, good parts at zero and a defect far above them."""
    import torch

    part = threaded(3, np.random.default_rng(5))
    bank = np.stack([part] * 10)
    options = AutoencoderOptions(neighbours=3, jitter_px=1, input_blur=0.5, blur_sigma=1.0,
                                 sd_blur_sigma=1.0, whole_region=True)
    h = neighbour_head(bank[:6], bank[6:], options).head
    defect = part.copy()
    defect[0, 10:14, 30:34] = 1.0
    with torch.no_grad():
        good, bad = (h(torch.from_numpy(x[None]))[1].item() for x in (part, defect))
    assert np.isfinite(good) and np.isfinite(bad) and good < 1.0 and bad > 100.0


def test_the_statistics_come_from_the_whole_bank_each_crop_left_out_of_its_own_search():
    """The statistics crops join the bank, and each bank crop is scored against the rest:
    exactly what a reference built without it gives, so the per-pixel spread is a new good
    part's (compared with itself every residual is 0)."""
    import torch

    rng = np.random.default_rng(11)
    parts = np.stack([threaded(int(p), rng) for p in rng.integers(0, PITCH, 9)])
    options = AutoencoderOptions(neighbours=2, jitter_px=1, whole_region=True)
    res = neighbour_head(parts[:6], parts[6:], options)
    head = res.head
    assert res.calibration["bank"] == 9 and res.calibration["n_good"] == 9
    left = left_out_residuals(head, head.net, parts)
    for i in (0, 4, 8):  # a training crop, and a statistics crop
        rest = neighbour_head(np.delete(parts, i, axis=0), parts[:0], options).head
        with torch.no_grad():
            alone = rest.blur(rest.net.residual(torch.from_numpy(parts[i:i + 1])))
        np.testing.assert_allclose(left[i:i + 1].numpy(), alone.numpy(), atol=1e-6)
    assert float(left.mean()) > 0 and float(head.mu.mean()) > 0
    with torch.no_grad():
        itself = head.blur(head.net.residual(torch.from_numpy(parts)))
    assert float(itself.mean()) < 0.05 * float(left.mean())  # a bank crop not left out
    assert res.good_scores is not None and len(res.good_scores) == 9
