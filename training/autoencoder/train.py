"""Training the autoencoder on good crops, then calibrating its scoring head.

L1 loss (the quantity the score measures; it keeps edges sharp, where an SSIM map is
dominated by the thread texture), weighted onto the part region, as a *denoising* task:
a share of the crops get pasted patches, blotches or noise that the net must repair. The
bottleneck can then be wide enough to reproduce the thread without also reproducing
defects. Small random shifts absorb alignment jitter; no flips (a flip mirrors the thread).

The learning rate warms up, then follows a cosine to zero over the larger of step progress
and time progress, so a run cut short by the time budget still ends annealed (a hot
learning rate leaves noisy residuals).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.autoencoder.model import ConvAutoencoder, ScoringHead
from training.autoencoder.neighbours import NeighbourReference, bank_from
from training.autoencoder.options import AutoencoderOptions
from training.autoencoder.region import part_region


@dataclass
class AutoencoderResult:
    """The calibrated head (CPU, eval mode), the per-epoch log and the calibration summary."""

    head: ScoringHead
    history: list[dict]
    calibration: dict
    # the nearest-good reference's bank crops, each scored against the rest of the bank (raw,
    # as a new good part would score): the threshold's good parts when a data set has no others
    good_scores: np.ndarray | None = None


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


class _Batches:
    """The training crops, the loss weight and the region the corruptions land in."""

    def __init__(self, train: np.ndarray, options: AutoencoderOptions, gen: torch.Generator,
                 device: str) -> None:
        # The loss is weighted onto the part region: the CPU budget goes into reconstructing
        # the part, not the fabric texture and dust of the background the score ignores anyway.
        roi = part_region(train, options)
        weight = torch.from_numpy(roi)[None, None] * (1.0 - options.background_weight)
        weight = (weight + options.background_weight).to(device)
        self.weight = weight / weight.mean()
        self.rows = np.nonzero(roi.any(axis=1))[0]
        self.cols = np.nonzero(roi.any(axis=0))[0]
        self.data = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))
        self.options, self.gen, self.device = options, gen, device

    def __len__(self) -> int:
        return len(self.data)

    def pair(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted input, clean target) of the crops ``idx``, shifted alike, on the device."""
        x = _shift_batch(self.data[idx], self.options.shift_px, self.gen)
        noisy = _corrupt(x, self.options, self.gen, self.rows, self.cols).to(self.device)
        return noisy, x.to(self.device)


@dataclass
class _Run:
    """Step count, clock and log of one training run; the learning-rate schedule."""

    options: AutoencoderOptions
    total_steps: int
    log: Callable[[dict], None] | None
    bar: Any
    step: int = 0
    start: float = field(default_factory=time.monotonic)
    history: list[dict] = field(default_factory=list)

    def lr(self) -> float | None:
        """This step's learning rate; ``None`` once the steps or the time budget are spent."""
        budget = self.options.minutes * 60.0 if self.options.minutes else math.inf
        warmup = max(1, min(50, self.total_steps // 20))
        elapsed = time.monotonic() - self.start
        frac = min(1.0, max(self.step / self.total_steps, elapsed / budget))
        if frac >= 1.0:
            return None
        return self.options.lr * ((self.step + 1) / warmup if self.step < warmup
                                  else 0.5 * (1.0 + math.cos(math.pi * frac)))

    def record(self, row: dict) -> None:
        self.history.append(row)
        if self.log:
            self.log(row)

    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 2)


def _epoch(net: ConvAutoencoder, batches: _Batches, opt: torch.optim.Optimizer,
           run: _Run, steps: int) -> tuple[float, int, float | None, bool]:
    """One pass over shuffled crops: (loss sum, crops seen, last lr, stopped by the budget)."""
    net.train()
    perm = torch.randperm(len(batches), generator=batches.gen)
    size = run.options.batch_size
    total, seen, lr = 0.0, 0, None
    for i in range(steps):
        step_lr = run.lr()
        if step_lr is None:
            return total, seen, lr, True
        lr = step_lr
        for g in opt.param_groups:
            g["lr"] = lr
        idx = perm[i * size:(i + 1) * size]
        noisy, x = batches.pair(idx)
        loss = ((net(noisy) - x).abs() * batches.weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.step += 1
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        run.bar.update(1)
    return total, seen, lr, False


def _fit(net: ConvAutoencoder, batches: _Batches, options: AutoencoderOptions,
         progress: bool, log: Callable[[dict], None] | None) -> list[dict]:
    """The training loop over epochs; returns the per-epoch history."""
    from station.progress import progress_bar

    opt = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(batches) / options.batch_size))
    total_steps = options.epochs * steps_per_epoch
    bar = progress_bar(total=total_steps, desc="autoencoder", unit="step", disable=not progress)
    run = _Run(options, total_steps, log, bar)
    for epoch in range(options.epochs):
        total, seen, lr, stopped = _epoch(net, batches, opt, run, steps_per_epoch)
        if seen:
            run.record({"model": "autoencoder", "epoch": epoch + 1, "steps": run.step,
                        "loss": total / seen, "lr": lr, "seconds": run.seconds()})
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.4f}", refresh=False)
        if stopped:
            run.record({"model": "autoencoder", "event": "time_budget_reached",
                        "epoch": epoch + 1, "steps": run.step, "seconds": run.seconds()})
            break
    bar.close()
    return run.history


def train_autoencoder(
    train: np.ndarray,
    val_good: np.ndarray,
    options: AutoencoderOptions,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
) -> AutoencoderResult:
    """Train on good prepared crops [N,C,H,W] float32; calibrate the head on ``val_good``."""
    if train.ndim != 4:
        raise ValueError(f"expected prepared crops [N,C,H,W], got shape {train.shape}")
    size = (int(train.shape[-2]), int(train.shape[-1]))  # (height, width)
    if size[0] % (2**options.depth) or size[1] % (2**options.depth):
        raise ValueError(f"crop {size[1]}x{size[0]} (width x height) must be divisible by "
                         f"2**depth = {2**options.depth} both ways")
    torch.manual_seed(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    net = ConvAutoencoder(int(train.shape[1]), options)
    head = ScoringHead(net, size, options).to(device)
    history = _fit(net, _Batches(train, options, gen, device), options, progress, log)
    head.eval()
    calibration = head.calibrate(np.ascontiguousarray(val_good, dtype=np.float32), options,
                                 region_from=train)
    return AutoencoderResult(head=head.cpu().eval(), history=history, calibration=calibration)


@torch.no_grad()
def left_out_residuals(head: ScoringHead, ref: NeighbourReference, bank: np.ndarray
                       ) -> torch.Tensor:
    """Each bank crop's smoothed residual [N,1,H,W] against its nearest *other* bank crops:
    what a new good part would score."""
    step = head.batch_limit()
    return torch.cat([
        head.blur(ref.residual(torch.from_numpy(bank[i:i + step]),
                               leave_out=torch.arange(i, min(i + step, len(bank)))))
        for i in range(0, len(bank), step)])


def _two(regions: tuple[int, int] | list[int]) -> tuple[int, int]:
    """(rows, columns) from the options (a list after a JSON round trip); (0, 0) = one."""
    rows, cols = (int(v) for v in regions)
    return max(1, rows), max(1, cols)


def neighbour_head(train: np.ndarray, val_good: np.ndarray, options: AutoencoderOptions
                   ) -> AutoencoderResult:
    """The retrieval reference over good prepared crops [N,C,H,W]: nothing to train.

    The statistics crops join the bank, and the per-pixel statistics come from every bank
    crop compared with the rest of the bank (left out of its own search: compared with
    itself its residual is zero), so they rest on the whole bank instead of a few dozen
    held-aside crops (3-fold CV, autoencoder alone, test images: tiles 0.941 -> 0.957,
    screws 0.986 -> 0.981; with the held-aside good parts 0.930 -> 0.943 and 0.969 ->
    0.971; docs/results.md). A bank of no more crops than neighbours has no rest to
    compare with: it takes one fewer.
    """
    if train.ndim != 4:
        raise ValueError(f"expected prepared crops [N,C,H,W], got shape {train.shape}")
    crops = np.ascontiguousarray(np.concatenate([train, val_good]) if len(val_good) else train,
                                 dtype=np.float32)
    bank = bank_from(crops, options)
    if len(bank) < 2:
        raise ValueError(f"{len(bank)} good crop(s): the nearest good parts need at least 2")
    ref = NeighbourReference(bank, min(options.neighbours, len(bank) - 1),
                             max(0, options.jitter_px),
                             options.input_blur, options.match_sigma,
                             regions=_two(options.regions),
                             photometric=bool(options.photometric))
    head = ScoringHead(ref, (int(train.shape[-2]), int(train.shape[-1])), options).eval()
    residuals = left_out_residuals(head, ref, bank)
    calibration = head.set_statistics(residuals, options, bank)
    calibration["bank"] = int(len(bank))
    return AutoencoderResult(head=head, history=[], calibration=calibration,
                             good_scores=head.scored(residuals)[1].numpy())
