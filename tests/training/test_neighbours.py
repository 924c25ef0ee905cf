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
from training.autoencoder.train import neighbour_head
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
    assert ratio[2.0] > 4.0, ratio  # measured 14 here
    assert ratio[2.0] > 3 * ratio[0.0], ratio  # pixel by pixel: 1.9


def test_patch_matching_exports_in_graph(parts, tmp_path: Path):
    h = head(parts, 2.0)
    import torch

    meta = ModelMetadata(kind="autoencoder", threshold=1.0,
                         preprocess=PreprocessSpec(size=W, height=H).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict())
    path = export_onnx(h, tmp_path / "ae.onnx", meta, torch.from_numpy(parts["good"][:2]))
    diffs = parity(h, path, np.concatenate([parts["good"], parts["gap"]]))
    assert max(diffs.values()) <= 1e-3, diffs
