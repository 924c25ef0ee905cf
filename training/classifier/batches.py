"""What the classifier trains and checks on: augmented half-good, half-defect batches.

Augmentation is what the aligned part really varies by: small shifts, rotations and scale
changes (alignment jitter) and brightness/contrast changes (lighting drift). No flips: a
vertical flip mirrors a screw's thread handedness and the side its shadow falls on, and a
horizontal flip puts the head on the wrong side of an aligned crop, unless the recipe says
the product's mirror image is a good part too (``models.flips``, the tiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from station.vision.preprocess import PreprocessSpec, prepare_batch
from training.synth_defects import synthesize, transplant


def augment(crop: np.ndarray, rng: np.random.Generator, flips: str = "none") -> np.ndarray:
    """Alignment jitter (shift ±3 %, rotation ±3°, scale ±3 %), lighting jitter, and a mirror
    image half the time along each axis ``flips`` allows ("none": never)."""
    if flips in ("horizontal", "both") and rng.random() < 0.5:
        crop = cv2.flip(crop, 1)
    if flips in ("vertical", "both") and rng.random() < 0.5:
        crop = cv2.flip(crop, 0)
    h, w = crop.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-3, 3), rng.uniform(0.97, 1.03))
    m[:, 2] += rng.uniform(-0.03, 0.03, size=2) * (w, h)
    out = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
    return np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


@dataclass
class BatchMaker:
    """Training batches: ``half`` good crops, ``n_real`` real defects (a ``transplant``
    share of them moved onto a good crop, where their mask is known), the rest synthesized
    defects on good crops; all augmented and prepared as the station prepares them."""

    good: list[np.ndarray]
    real: list[np.ndarray]
    spec: PreprocessSpec
    rng: np.random.Generator
    batch_size: int
    n_real: int
    flips: str = "none"  # the mirror images the product may show (ensemble.FLIPS)
    masks: list[np.ndarray | None] | None = None  # each real defect's crop-space mask
    transplant: float = 0.0  # share of real-defect slots moved onto a good crop (with a mask)

    @property
    def half(self) -> int:
        return self.batch_size // 2

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng, good, half = self.rng, self.good, self.half
        imgs: list[np.ndarray] = []
        for i in rng.integers(0, len(good), size=half):
            imgs.append(augment(good[i], rng, self.flips))
        for i in rng.integers(0, len(self.real), size=self.n_real) if self.n_real else []:
            img, mask = self.real[i], self.masks[i] if self.masks and self.transplant else None
            if mask is not None and mask.any() and rng.random() < self.transplant:
                img = transplant(img, mask, good[rng.integers(0, len(good))], rng).image
            imgs.append(augment(img, rng, self.flips))
        for _ in range(self.batch_size - half - self.n_real):
            base, donor = rng.integers(0, len(good), size=2)
            imgs.append(augment(synthesize(good[base], rng, donor=good[donor]).image, rng,
                                self.flips))
        y = np.r_[np.zeros(half), np.ones(len(imgs) - half)].astype(np.float32)
        x = prepare_batch(imgs, self.spec)
        return torch.from_numpy(x), torch.from_numpy(y)


def synthetic_validation(crops: list[np.ndarray], labels: np.ndarray, limit: int,
                         seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A fixed check set that needs no real defects: up to ``limit`` good validation crops
    and a synthesized defect on each (its own seeded stream, apart from the batches')."""
    vgood = [c for c, y in zip(crops, labels, strict=True) if y == 0][:limit]
    vrng = np.random.default_rng(seed + 7919)
    vsynth = [synthesize(c, vrng, donor=vgood[(i + 1) % len(vgood)]).image
              for i, c in enumerate(vgood)]
    return vgood, vsynth
