"""The convolutional autoencoder and its scoring head (anomaly map + image score in-graph).

Why this shape: aligned parts make every pixel position mean the same place on the part,
so the residual of a reconstruction can be judged *per pixel* against how large it is on
good parts at that position. The head computes

    residual = mean_c |x - AE(x)|  ->  fixed Gaussian blur
    map = (residual - mu[h, w]) / sd[h, w] * part_region[h, w]

with ``mu``/``sd`` measured on held-aside good crops and the part region learned from the
good training crops, all baked in as constants; the image score is the max (or top-k mean)
of the map. Thread texture the autoencoder reproduces imperfectly has a large ``sd`` and
is discounted; a scratch on a smooth neck stands out; dust on the background is ignored.

Everything is in the exported graph, so torch evaluation, ``station evaluate`` and the
station see the same numbers. Training is in :mod:`training.autoencoder.train`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.autoencoder.options import AutoencoderOptions
from training.autoencoder.region import part_region

#: the smallest per-pixel spread of good parts' residuals (intensities 0..1: a fortieth of
#: a grey level at 8 bits), far under real parts' (screws 0.0023, tiles 0.0033 on average)
SD_MIN = 1e-4


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         nn.LeakyReLU(0.1, inplace=True))


class ConvAutoencoder(nn.Module):
    """Stride-2 conv encoder to a narrow spatial bottleneck; upsample + conv decoder.

    Compute is kept where it pays on a CPU budget: two convs per encoder stage (features),
    one per decoder stage, and a single transposed conv back to full resolution.
    """

    def __init__(self, channels: int, options: AutoencoderOptions) -> None:
        super().__init__()
        widths = [min(options.base_channels * 2**i, options.max_channels) for i in range(options.depth)]
        enc: list[nn.Module] = []
        cin = channels
        for w in widths:
            enc += [_conv(cin, w, 2), _conv(w, w)]
            cin = w
        enc.append(nn.Conv2d(cin, options.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(options.latent_channels, cin, 1), nn.LeakyReLU(0.1, inplace=True)]
        for w in reversed(widths[:-1]):
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), _conv(cin, w)]
            cin = w
        dec.append(nn.ConvTranspose2d(cin, channels, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Mean absolute reconstruction error over the channels, [N, 1, H, W]."""
        return (x - self(x)).abs().mean(dim=1, keepdim=True)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D normalized Gaussian taps (odd length, radius 3 sigma)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class GaussianBlur(nn.Module):
    """Separable fixed Gaussian blur of a [N, C, H, W] map with reflect padding, each of the
    ``channels`` on its own (a depthwise convolution: onnxruntime pads a convolution's
    channels to blocks of 8, so C maps blurred at once cost little more than one)."""

    def __init__(self, sigma: float, channels: int = 1) -> None:
        super().__init__()
        k = gaussian_kernel(sigma) if sigma > 0 else torch.ones(1)
        self.pad = (len(k) - 1) // 2
        self.groups = int(channels)
        self.register_buffer("kx", k.view(1, 1, 1, -1).repeat(self.groups, 1, 1, 1))
        self.register_buffer("ky", k.view(1, 1, -1, 1).repeat(self.groups, 1, 1, 1))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return m
        p = self.pad
        m = F.conv2d(F.pad(m, (p, p, 0, 0), mode="reflect"), self.kx, groups=self.groups)
        return F.conv2d(F.pad(m, (0, 0, p, p), mode="reflect"), self.ky, groups=self.groups)


class ScoringHead(nn.Module):
    """Autoencoder + in-graph scoring: ``image`` -> (``anomaly_map`` [N,1,H,W], ``score`` [N])."""

    def __init__(self, net: nn.Module, size: int | tuple[int, int],
                 options: AutoencoderOptions) -> None:
        """``size``: the crop side (square) or its (height, width)."""
        super().__init__()
        h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.net = net
        self.blur = GaussianBlur(options.blur_sigma)
        self.score_mode = options.score
        self.topk = max(1, int(round(options.topk_frac * h * w)))
        self.register_buffer("mu", torch.zeros(1, 1, h, w))
        self.register_buffer("sd", torch.ones(1, 1, h, w))
        self.register_buffer("roi", torch.ones(1, 1, h, w))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed absolute residual against the reconstruction, [N, 1, H, W]: the network's
        (:class:`ConvAutoencoder`) or the nearest good parts'
        (:class:`~training.autoencoder.neighbours.NeighbourReference`)."""
        return self.blur(self.net.residual(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scored(self.residual(x))

    def scored(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly map, score) of smoothed residuals [N,1,H,W]."""
        amap = (residual - self.mu) / self.sd * self.roi
        flat = amap.flatten(1)
        if self.score_mode == "topk":
            score = torch.topk(flat, self.topk, dim=1).values.mean(dim=1)
        else:
            score = flat.amax(dim=1)
        return amap, score

    def batch_limit(self, limit: int = 16) -> int:
        """Crops per forward pass: bounded for the nearest-parts reference, whose search
        grows with its bank (:func:`station.models.inference.retrieval_batch`)."""
        from station.models.inference import retrieval_batch

        views = getattr(self.net, "views", None)  # NeighbourReference: [H/2 x W/2, bank]
        if views is None:
            return limit
        h, w = self.mu.shape[-2:]
        return retrieval_batch(int(views.shape[1]), (1, h, w), limit)

    @torch.no_grad()
    def calibrate(self, good: np.ndarray, options: AutoencoderOptions, batch_size: int = 0,
                  region_from: np.ndarray | None = None) -> dict:
        """Set ``mu``/``sd`` from good validation crops (prepared tensors [N,C,H,W]), and the
        part region from ``region_from`` (good training crops; default ``good``)."""
        if len(good) < 2:
            raise ValueError("per-pixel statistics need at least 2 good validation crops")
        self.eval()
        device = self.mu.device
        batch_size = batch_size or self.batch_limit()
        res = torch.cat([
            self.residual(torch.from_numpy(good[i:i + batch_size]).to(device)).cpu()
            for i in range(0, len(good), batch_size)
        ])
        return self.set_statistics(res, options, good if region_from is None else region_from)

    @torch.no_grad()
    def set_statistics(self, res: torch.Tensor, options: AutoencoderOptions,
                       region_from: np.ndarray) -> dict:
        """``mu``/``sd`` from good parts' residuals [N,1,H,W], the part region from
        ``region_from`` (good crops)."""
        device = self.mu.device
        mu = res.mean(dim=0, keepdim=True)
        sd = res.std(dim=0, keepdim=True)
        if options.sd_blur_sigma > 0:
            smooth = GaussianBlur(options.sd_blur_sigma)
            mu, sd = smooth(mu), smooth(sd)
        # relative to the good parts' spread; never zero (good parts alike to the last
        # pixel would otherwise divide by it)
        floor = max(options.sd_floor * float(sd.mean()), SD_MIN)
        sd = torch.sqrt(sd**2 + floor**2)
        self.mu.copy_(mu.to(device))
        self.sd.copy_(sd.to(device))
        roi = part_region(region_from, options)
        self.roi.copy_(torch.from_numpy(roi)[None, None].to(device))
        return {"n_good": int(len(res)), "residual_mean": float(mu.mean()),
                "sd_mean": float(sd.mean()), "roi_share": float(roi.mean())}


@torch.no_grad()
def score_batches(head: ScoringHead, tensors: np.ndarray, batch_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Torch-side (anomaly maps [N,H,W], scores [N]) for prepared tensors (``batch_size``
    0: the head's own :meth:`ScoringHead.batch_limit`)."""
    head.eval()
    batch_size = batch_size or head.batch_limit()
    maps, scores = [], []
    for i in range(0, len(tensors), batch_size):
        m, s = head(torch.from_numpy(np.ascontiguousarray(tensors[i:i + batch_size], dtype=np.float32)))
        maps.append(m[:, 0].numpy())
        scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)
