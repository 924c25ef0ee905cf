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

Training: L1 (the quantity the score measures; it keeps edges sharp, where an SSIM map is
dominated by the thread texture), weighted onto the part region, as a *denoising* task:
a share of the crops get pasted patches, blotches or noise that the net must repair. The
bottleneck can then be wide enough to reproduce the thread without also reproducing
defects. Small random shifts absorb alignment jitter; no flips (a flip mirrors the thread).

Everything is in the exported graph, so torch evaluation, ``station evaluate`` and the
station see the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AutoencoderOptions:
    """Architecture, training and scoring knobs (all land in the model's ``architecture``)."""

    base_channels: int = 16  # channels after the first stage; doubled per stage (capped)
    max_channels: int = 64
    depth: int = 3  # number of stride-2 stages: the bottleneck is size / 2**depth
    latent_channels: int = 32  # channels at the bottleneck (the information squeeze)
    epochs: int = 150
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    shift_px: int = 2  # random translation augmentation (crop pixels), absorbs alignment jitter
    blur_sigma: float = 2.0  # Gaussian smoothing of the residual (crop pixels)
    sd_floor: float = 0.1  # sd floor as a fraction of the mean sd: no division by ~0
    sd_blur_sigma: float = 2.0  # smoothing of the per-pixel statistics (few validation crops)
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


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D normalized Gaussian taps (odd length, radius 3 sigma)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class GaussianBlur(nn.Module):
    """Separable fixed Gaussian blur of a [N, 1, H, W] map with reflect padding."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        k = gaussian_kernel(sigma) if sigma > 0 else torch.ones(1)
        self.pad = (len(k) - 1) // 2
        self.register_buffer("kx", k.view(1, 1, 1, -1).clone())
        self.register_buffer("ky", k.view(1, 1, -1, 1).clone())

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return m
        p = self.pad
        m = F.conv2d(F.pad(m, (p, p, 0, 0), mode="reflect"), self.kx)
        return F.conv2d(F.pad(m, (0, 0, p, p), mode="reflect"), self.ky)


class ScoringHead(nn.Module):
    """Autoencoder + in-graph scoring: ``image`` -> (``anomaly_map`` [N,1,H,W], ``score`` [N])."""

    def __init__(self, net: ConvAutoencoder, size: int, options: AutoencoderOptions) -> None:
        super().__init__()
        self.net = net
        self.blur = GaussianBlur(options.blur_sigma)
        self.score_mode = options.score
        self.topk = max(1, int(round(options.topk_frac * size * size)))
        self.register_buffer("mu", torch.zeros(1, 1, size, size))
        self.register_buffer("sd", torch.ones(1, 1, size, size))
        self.register_buffer("roi", torch.ones(1, 1, size, size))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed mean absolute reconstruction error, [N, 1, H, W]."""
        r = (x - self.net(x)).abs().mean(dim=1, keepdim=True)
        return self.blur(r)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = (self.residual(x) - self.mu) / self.sd * self.roi
        flat = amap.flatten(1)
        if self.score_mode == "topk":
            score = torch.topk(flat, self.topk, dim=1).values.mean(dim=1)
        else:
            score = flat.amax(dim=1)
        return amap, score

    @torch.no_grad()
    def calibrate(self, good: np.ndarray, options: AutoencoderOptions, batch_size: int = 16,
                  region_from: np.ndarray | None = None) -> dict:
        """Set ``mu``/``sd`` from good validation crops (prepared tensors [N,C,H,W]), and the
        part region from ``region_from`` (good training crops; default ``good``)."""
        if len(good) < 2:
            raise ValueError("per-pixel statistics need at least 2 good validation crops")
        self.eval()
        device = self.mu.device
        res = torch.cat([
            self.residual(torch.from_numpy(good[i:i + batch_size]).to(device)).cpu()
            for i in range(0, len(good), batch_size)
        ])
        mu = res.mean(dim=0, keepdim=True)
        sd = res.std(dim=0, keepdim=True)
        if options.sd_blur_sigma > 0:
            smooth = GaussianBlur(options.sd_blur_sigma)
            mu, sd = smooth(mu), smooth(sd)
        floor = options.sd_floor * float(sd.mean())
        sd = torch.sqrt(sd**2 + floor**2)
        self.mu.copy_(mu.to(device))
        self.sd.copy_(sd.to(device))
        roi = part_region(good if region_from is None else region_from, options)
        self.roi.copy_(torch.from_numpy(roi)[None, None].to(device))
        return {"n_good": int(len(good)), "residual_mean": float(mu.mean()),
                "sd_mean": float(sd.mean()), "roi_share": float(roi.mean())}


def part_region(tensors: np.ndarray, options: AutoencoderOptions) -> np.ndarray:
    """Where good parts are, in crop space (float32 0/1 [H, W]), grown by a margin.

    The map is only meaningful on the part: the background carries dust and fabric texture
    that no model of *parts* should score. A pixel counts as part in one crop when it is
    clearly darker or brighter than that crop's background (its edge-ring median, the level
    ``station.vision.preprocess`` normalizes); the region is where that happens in at least
    ``roi_min_share`` of the good crops, dilated by ``roi_dilate_frac`` of the side.
    """
    import cv2

    x = np.asarray(tensors, np.float32).mean(axis=1)  # [N, H, W]
    n, h, w = x.shape
    r = max(1, int(round(0.125 * min(h, w))))
    ring = np.concatenate([x[:, :r].reshape(n, -1), x[:, -r:].reshape(n, -1),
                           x[:, :, :r].reshape(n, -1), x[:, :, -r:].reshape(n, -1)], axis=1)
    bg = np.median(ring, axis=1)[:, None, None]
    spread = np.median(np.abs(ring - np.median(ring, axis=1, keepdims=True)), axis=1)[:, None, None]
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), max(1.0, h / 128)) for im in x])
    part = np.abs(blurred - bg) > np.maximum(0.12 * bg, 6.0 * spread)
    region = (part.mean(axis=0) >= options.roi_min_share).astype(np.uint8)
    k = max(1, int(round(options.roi_dilate_frac * max(h, w))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    region = cv2.dilate(region, kernel)
    # the crop's own edge is out: convolutions see padding there, not the part
    b = max(2, int(round(options.roi_border_frac * max(h, w))))
    region[:b], region[-b:], region[:, :b], region[:, -b:] = 0, 0, 0, 0
    if region.sum() == 0:  # nothing found (blank crops): score everywhere
        region[:] = 1
    return region.astype(np.float32)


@dataclass
class AutoencoderResult:
    head: ScoringHead
    history: list[dict]
    calibration: dict


def _shift_batch(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random per-batch translation by up to ``shift`` px (replicate padding)."""
    if shift <= 0:
        return x
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., shift + dy:shift + dy + h, shift + dx:shift + dx + w]


def _corrupt(x: torch.Tensor, options: AutoencoderOptions, gen: torch.Generator,
             rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """Denoising targets: paste patches from other crops (shifted) or flat/noisy blotches
    onto a share of the batch, inside the part region. The net learns to *repair* local
    anomalies back to a good part, so a real defect survives in the residual even though
    the bottleneck is wide enough to reproduce the thread."""
    if options.corrupt_prob <= 0 or len(rows) == 0:
        return x
    out = x.clone()
    n, _, h, w = x.shape
    lo, hi = options.corrupt_size
    for i in range(n):
        if float(torch.rand(1, generator=gen)) >= options.corrupt_prob:
            continue
        ph = int(torch.randint(max(1, int(lo * h)), max(2, int(hi * h)) + 1, (1,), generator=gen))
        pw = int(torch.randint(max(1, int(lo * w)), max(2, int(hi * w)) + 1, (1,), generator=gen))
        cy = int(rows[int(torch.randint(len(rows), (1,), generator=gen))])
        cx = int(cols[int(torch.randint(len(cols), (1,), generator=gen))])
        y0, x0 = max(0, min(h - ph, cy - ph // 2)), max(0, min(w - pw, cx - pw // 2))
        kind = int(torch.randint(3, (1,), generator=gen))
        if kind == 0:  # cut-paste from another crop, elsewhere
            j = int(torch.randint(n, (1,), generator=gen))
            sy = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
            sx = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
            patch = x[j, :, sy:sy + ph, sx:sx + pw]
        elif kind == 1:  # flat blotch (stain, chip)
            patch = torch.full_like(out[i, :, y0:y0 + ph, x0:x0 + pw], float(torch.rand(1, generator=gen)))
        else:  # noise texture
            base = out[i, :, y0:y0 + ph, x0:x0 + pw]
            patch = base + 0.3 * torch.randn(base.shape, generator=gen)
        out[i, :, y0:y0 + ph, x0:x0 + pw] = patch.clamp(0.0, 1.0)
    return out


def train_autoencoder(
    train: np.ndarray,
    val_good: np.ndarray,
    options: AutoencoderOptions,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
) -> AutoencoderResult:
    """Train on good prepared crops [N,C,H,W] float32; calibrate the head on ``val_good``."""
    from tqdm import tqdm

    if train.ndim != 4 or train.shape[-1] != train.shape[-2]:
        raise ValueError(f"expected square prepared crops [N,C,H,W], got shape {train.shape}")
    size = int(train.shape[-1])
    if size % (2**options.depth):
        raise ValueError(f"crop size {size} must be divisible by 2**depth = {2**options.depth}")
    torch.manual_seed(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    net = ConvAutoencoder(int(train.shape[1]), options)
    head = ScoringHead(net, size, options).to(device)
    # The loss is weighted onto the part region: the CPU budget goes into reconstructing
    # the part, not the fabric texture and dust of the background the score ignores anyway.
    roi = part_region(train, options)
    weight = torch.from_numpy(roi)[None, None] * (1.0 - options.background_weight)
    weight = (weight + options.background_weight).to(device)
    weight = weight / weight.mean()
    roi_rows = np.nonzero(roi.any(axis=1))[0]
    roi_cols = np.nonzero(roi.any(axis=0))[0]
    data = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(data) / options.batch_size))
    total_steps = options.epochs * steps_per_epoch
    budget = options.minutes * 60.0 if options.minutes else math.inf
    warmup = max(1, min(50, total_steps // 20))
    history: list[dict] = []
    start = time.monotonic()
    step = 0
    # cosine to zero over the larger of step progress and time progress, so a run cut short
    # by the time budget still ends annealed (a hot learning rate leaves noisy residuals)
    bar = tqdm(total=total_steps, desc="autoencoder", unit="step", disable=not progress)
    stopped = False
    for epoch in range(options.epochs):
        net.train()
        perm = torch.randperm(len(data), generator=gen)
        total, seen = 0.0, 0
        for i in range(steps_per_epoch):
            elapsed = time.monotonic() - start
            frac = min(1.0, max(step / total_steps, elapsed / budget))
            if frac >= 1.0:
                stopped = True
                break
            lr = options.lr * ((step + 1) / warmup if step < warmup
                               else 0.5 * (1.0 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[i * options.batch_size:(i + 1) * options.batch_size]
            x = _shift_batch(data[idx], options.shift_px, gen)
            noisy = _corrupt(x, options, gen, roi_rows, roi_cols).to(device)
            x = x.to(device)
            loss = ((net(noisy) - x).abs() * weight).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.update(1)
        if seen:
            row = {"model": "autoencoder", "epoch": epoch + 1, "steps": step,
                   "loss": total / seen, "lr": lr, "seconds": round(time.monotonic() - start, 2)}
            history.append(row)
            if log:
                log(row)
            bar.set_postfix(epoch=epoch + 1, loss=f"{row['loss']:.4f}")
        if stopped:
            row = {"model": "autoencoder", "event": "time_budget_reached", "epoch": epoch + 1,
                   "steps": step, "seconds": round(time.monotonic() - start, 2)}
            history.append(row)
            if log:
                log(row)
            break
    bar.close()
    head.eval()
    calibration = head.calibrate(np.ascontiguousarray(val_good, dtype=np.float32), options,
                                 region_from=train)
    return AutoencoderResult(head=head.cpu().eval(), history=history, calibration=calibration)


@torch.no_grad()
def score_batches(head: ScoringHead, tensors: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Torch-side (anomaly maps [N,H,W], scores [N]) for prepared tensors."""
    head.eval()
    maps, scores = [], []
    for i in range(0, len(tensors), batch_size):
        m, s = head(torch.from_numpy(np.ascontiguousarray(tensors[i:i + batch_size], dtype=np.float32)))
        maps.append(m[:, 0].numpy())
        scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)
