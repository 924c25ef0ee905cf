"""The autoencoder's knobs: architecture, training and scoring, all stored in the exported
model's ``architecture`` metadata so a model says how it was made."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class AutoencoderOptions:
    """Architecture, training and scoring knobs (all land in the model's ``architecture``)."""

    # "neighbours": reconstruct from the nearest good training crops (retrieval, see
    # training.autoencoder.neighbours; nothing to train, the budget goes to the classifier);
    # "network": the convolutional autoencoder trained below.
    reference: str = "neighbours"
    # 5 nearest good crops for each stretch of a part (``regions``), compared after a 1 px
    # blur. 3-fold CV on the development screws, autoencoder alone, pooled image AUROC on the
    # test images / with the held-aside good parts too: whole-crop retrieval, 3 neighbours
    # 0.959 / 0.941 (5: 0.949; 10: 0.913); 6 stretches, 5 neighbours 0.978 / 0.962 (4 or 8
    # stretches 0.976-0.977, 12: 0.956; 4 neighbours 0.980 / 0.958, 6: 0.959 / 0.958). On
    # magnetic tiles (one region) 3 or 5 neighbours: 0.892; 2 x 2 or 3 x 3 regions 0.871-0.889.
    neighbours: int = 5  # nearest good crops a crop (or each of its regions) is compared with
    jitter_px: int = -1  # how far a neighbour's pixel may move; -1 = by product kind: 1 for a
    #                      found and turned part (aligned to ~1 px), 6 for a fixed region
    input_blur: float = 1.0  # Gaussian blur of crop and bank before comparing (sensor noise;
    #                          1.5 lost thin defects: 0.927 on screws)
    match_sigma: float = 2.0  # > 0: each neighbour's difference is smoothed over this many px
    #                          before the smallest is taken, so a stretch must match ONE good
    #                          part as a patch (missing thread crests do not match the gaps of
    #                          other parts' threads); 0 = pixel by pixel
    # (rows, columns): each region of the crop finds its own nearest good parts, so each
    # stretch of a part is compared with the good parts most like it THERE (a thread's phase
    # near the tip need not come with the same head); (1, 1) = the whole crop's nearest
    # parts everywhere; (0, 0) = by product kind: a found and turned part is cut along its
    # length into stretches about half the crop's height long, a fixed region (a surface)
    # is one region
    regions: tuple[int, int] = (0, 0)
    bank_max: int = 400  # good crops kept in the bank (a seeded sample beyond that)
    # retrieval: each neighbour given the crop's level and contrast first; None = by product
    # kind: on for a fixed region (a surface's batches differ in brightness), off for a
    # found part (the plate around it fixes the level)
    photometric: bool | None = None
    whole_region: bool = False  # score the whole crop (a fixed region: the crop IS the part)
    base_channels: int = 16  # channels after the first stage; doubled per stage (capped)
    max_channels: int = 64
    depth: int = 3  # number of stride-2 stages: the bottleneck is size / 2**depth
    latent_channels: int = 32  # channels at the bottleneck (the information squeeze)
    epochs: int = 150
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    shift_px: int = 2  # random translation augmentation (crop pixels), absorbs alignment jitter
    blur_sigma: float = 3.0  # Gaussian smoothing of the residual (crop pixels)
    sd_floor: float = 0.3  # sd floor as a fraction of the mean sd: no division by ~0
    sd_blur_sigma: float = 3.0  # smoothing of the per-pixel statistics (few validation crops)
    roi_dilate_frac: float = 0.02  # part region grown by this share of the crop side
    roi_border_frac: float = 0.025  # crop edge band never scored (padding artefacts)
    roi_min_share: float = 0.2  # a pixel is part region when this share of good crops has part there
    background_weight: float = 0.1  # loss weight outside the part region (inside: 1)
    corrupt_prob: float = 0.5  # share of training crops given a pasted anomaly to repair
    corrupt_size: tuple[float, float] = (0.03, 0.15)  # patch side range, share of the crop
    score: str = "max"  # "max" | "topk"
    topk_frac: float = 0.001  # share of pixels averaged when score == "topk"
    seed: int = 0
    minutes: float | None = None  # wall-clock budget for the training loop
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
