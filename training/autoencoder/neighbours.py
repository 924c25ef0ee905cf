"""Reconstruction by retrieval: the nearest good parts, re-aligned pixel by pixel.

The anomaly model reconstructs a crop from good parts and scores the residual. A learned
network (:class:`~training.autoencoder.model.ConvAutoencoder`) reconstructs the *average*
good part well but not the thread of *this* screw: the thread's phase and the grinding
marks of a tile differ from part to part, so its residual is large on every thread and a
damaged flank hides in it. Retrieval reconstructs from real good parts instead:

1. the crop (lightly blurred: sensor noise is not a defect) is compared with every good
   training crop in the bank; the ``k`` nearest (Euclidean, at half resolution) are kept;
2. each of their pixels may move by up to ``jitter_px`` (what alignment leaves): around every
   pixel, a neighbour spans a band, the smallest to the largest of its values within
   ``jitter_px`` (a max-pool and a min-pool);
3. the residual at a pixel is how far the crop lies outside the band, the smallest over the
   ``k`` parts: a good part's thread lies within one of its neighbours' bands; a scratch
   darker than anything near it, a bent tip or a pit lies outside all of them;
4. with ``match_sigma`` > 0 each neighbour's differences are first smoothed over a small
   patch, and the smallest *patch* difference wins: pixel by pixel, a stretch of thread
   with its crests missing matches the gaps between some other part's crests and hides;
   as a patch, no single good part has it;
5. with ``regions`` the crop is cut into regions (a found part: stretches along its length)
   and each finds its own ``k`` nearest on a window around it: the good parts whose thread
   near the tip is in phase with this one's need not be those whose head is turned alike.
   Found on the whole crop, a good screw's thread was often compared with threads out of
   phase, and its crests lit up the map;
6. with ``photometric`` each neighbour is first given the crop's level and contrast (mean
   and spread over the region): a surface (the tiles) comes in batches fired or lit a
   little brighter, and a good tile of a batch the bank holds few of otherwise lies
   outside every band. A stain or a crack changes the crop's mean and spread little, so it
   still shows. Surfaces get it by default (3-fold CV, tiles, autoencoder alone: pooled
   image AUROC 0.919 -> 0.929, the hard fold 0.877 -> 0.903); the screws do not (0.986 ->
   0.969: on a part on a plate the background fixes the level already);
7. the per-pixel statistics (the residual's mean and spread that a good part shows at each
   pixel) come from the bank itself, each crop compared with the rest of it (``leave_out``;
   compared with itself its residual is 0): a few hundred crops instead of a few dozen held
   aside, which then join the bank (``training.autoencoder.train.neighbour_head``).

Measured on the development screws (320x112 part-aligned crops, bank = the training good
crops, statistics then from held-aside good crops, the same scoring head): image AUROC 0.97
against 0.79 for the network; on the tiles 0.94 against 0.76. Everything is plain tensor
arithmetic (MatMul, TopK, Gather, MaxPool, Min), so it exports in-graph with the scoring
head and the station runs it like any autoencoder file. Cost per part: one MatMul against the
bank at half resolution (``nearest``), and per pixel two pools and a few differences per
neighbour. The band replaced the smallest |difference| over all
``(2 jitter + 1)^2`` shifts: 3-fold CV, autoencoder alone, about the same image AUROC
(screws 0.986 against 0.984; tiles 0.907 against 0.908 at 4 px, 0.919 both at 6 px) for
an eighth of the time on the tiles (7.7 ms at 6 px against 59.5 ms at 4 px, 256 x 320,
2 cores): a few pools at any jitter instead of a pass per shift (docs/results.md). The
graph avoids copies, which cost onnxruntime more than the arithmetic: every region's window
is searched by one MatMul with the query masked to each window, and the ``k`` neighbours'
differences are blurred together as the channels of one depthwise convolution.

>>> import numpy as np, torch
>>> bank = np.zeros((4, 1, 8, 8), np.float32); bank[1] += 0.5
>>> ref = NeighbourReference(bank, k=1, jitter_px=0, input_blur=0.0)
>>> x = torch.full((1, 1, 8, 8), 0.5); x[0, 0, 2, 2] = 1.0
>>> r = ref.residual(x)
>>> float(r[0, 0, 2, 2]), float(r[0, 0, 5, 5])
(0.5, 0.0)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.autoencoder.options import AutoencoderOptions


def _blur_channels(blur: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A single-channel blur applied to each channel of [N, C, H, W]."""
    n, c, h, w = x.shape
    return blur(x.reshape(n * c, 1, h, w)).reshape(n, c, h, w)


class NeighbourReference(nn.Module):
    """Good training crops as the reconstruction; ``residual(x)`` -> [N, 1, H, W]."""

    def __init__(self, bank: np.ndarray, k: int, jitter_px: int, input_blur: float,
                 match_sigma: float = 0.0, regions: tuple[int, int] = (1, 1),
                 photometric: bool = False) -> None:
        super().__init__()
        self.photometric = bool(photometric)
        from training.autoencoder.model import GaussianBlur

        if bank.ndim != 4 or len(bank) < 1:
            raise ValueError(f"expected good crops [K, C, H, W], got shape {bank.shape}")
        self.k = int(min(max(1, k), len(bank)))
        self.jitter = int(max(0, jitter_px))
        self.blur = GaussianBlur(input_blur)
        # each neighbour's differences blurred at once, the k as channels of one map
        self.match = GaussianBlur(match_sigma, channels=self.k) if match_sigma > 0 else None
        with torch.no_grad():  # a few crops at a time: a convolution's working copy of the
            # whole bank at once was 2.6 GB for 203 colour crops of 224 x 264
            src = torch.from_numpy(np.ascontiguousarray(bank, np.float32))
            b = torch.cat([_blur_channels(self.blur, src[i:i + 16]) for i in range(0, len(src), 16)])
        j = self.jitter
        padded = F.pad(b, (j, j, j, j), mode="replicate") if j else b
        # float16 halves the file; only the k crops gathered are cast to float32
        self.register_buffer("bank", padded.half())
        h, w = int(b.shape[-2]), int(b.shape[-1])
        self.regions = _regions(h, w, regions)
        # a region's neighbours are found on its own half-resolution window (a quarter of
        # the region added on each side), so each stretch of the part gets the good parts
        # that match it best there
        self.windows = [_window(r, h, w) for r in self.regions]
        # [D, R]: 1 where a retrieval-view number is in a window (one region: all of them)
        mask = _window_mask(self.windows, 1, h // 2, w // 2)
        if len(self.regions) > 1:
            self.register_buffer("window_mask", mask)
        # the search's constants: the bank's retrieval views less their mean, [D, K], and
        # each one's squared length on each window, [R, K] (see ``nearest``)
        view = self._retrieval_view(b)
        self.register_buffer("center", view.mean(dim=0, keepdim=True))  # [1, D]
        centred = view - self.center
        self.register_buffer("views", centred.T.contiguous())  # [D, K]
        self.register_buffer("lengths", torch.matmul(centred.square(), mask).T.contiguous())
        self.margin = int(np.ceil(3 * match_sigma)) + 1 if match_sigma > 0 else 0

    @staticmethod
    def _retrieval_view(x: torch.Tensor) -> torch.Tensor:
        """What the nearest parts are found on: the crop at half resolution, [N, D], and grey
        (the channels' mean) for a colour crop. A quarter of the numbers to compare (a
        twelfth in colour: the search is half of a colour crop's time at the line, and
        linear in the bank); the thread's phase (a 7 px pitch on the screws) survives. The
        residual itself stays per channel, so a colour defect still shows."""
        if x.shape[1] > 1:
            x = x.mean(dim=1, keepdim=True)
        return F.avg_pool2d(x, 2).flatten(1)

    def nearest(self, q: torch.Tensor, leave_out: torch.Tensor | None = None
                ) -> list[torch.Tensor]:
        """Per region, the indices [N, k] of the bank crops nearest to the (blurred) queries
        on that region's window; ``leave_out`` [N]: a bank index each query may not take
        (the query itself, when a bank crop is scored against the rest of the bank).

        Nearest by the squared distance |q - b|^2 = |q|^2 - 2 q.b + |b|^2, of which only
        2 q.b - |b|^2 differs between bank crops: one MatMul against the bank instead of its
        differences and their squares ([N, K, D] twice: 3.6 of the tiles' 8.3 ms in
        onnxruntime's profile, docs/results.md). Both sides less the bank's mean first: the products then
        measure how a part differs from the average part, not its whole brightness, so
        float32 keeps the small distances between near parts (the expansion on raw crops
        lost them to rounding, and torch and onnxruntime picked different neighbours).
        """
        v = self._retrieval_view(q) - self.center  # [N, D]
        if len(self.regions) == 1:  # [N, K]
            closeness = 2.0 * torch.matmul(v, self.views) - self.lengths
            if leave_out is not None:
                closeness[torch.arange(len(v)), leave_out] = -torch.inf
            return [torch.topk(closeness, self.k, dim=1).indices]
        # every window at once: the query masked to each window, [N, R, D], times the bank
        per_window = (v[:, :, None] * self.window_mask).transpose(1, 2)
        closeness = 2.0 * torch.matmul(per_window, self.views) - self.lengths  # [N, R, K]
        if leave_out is not None:
            closeness[torch.arange(len(v)), :, leave_out] = -torch.inf
        idx = torch.topk(closeness, self.k, dim=2).indices  # [N, R, k]
        return [idx[:, r] for r in range(len(self.windows))]

    def residual(self, x: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """Per pixel, how far the crop lies outside a neighbour's band, the least over the
        ``k`` nearest (of the pixel's region; ``leave_out``: see :meth:`nearest`)."""
        q = _blur_channels(self.blur, x)
        rows: list[torch.Tensor] = []
        row: list[torch.Tensor] = []
        for (y0, y1, x0, x1), idx in zip(self.regions, self.nearest(q, leave_out), strict=True):
            row.append(self._region_residual(q, idx, (y0, y1, x0, x1)))
            if x1 == q.shape[-1]:
                rows.append(row[0] if len(row) == 1 else torch.cat(row, dim=3))
                row = []
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=2)

    def _region_residual(self, q: torch.Tensor, idx: torch.Tensor,
                         box: tuple[int, int, int, int]) -> torch.Tensor:
        """The residual over one region, computed on the region plus a margin (the patch
        match's blur reaches that far) and cut back to the region."""
        n, c, h, w = q.shape
        y0, y1, x0, x1 = box
        m, j = self.margin, self.jitter
        ya, yb, xa, xb = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
        hh, ww = yb - ya, xb - xa
        refs = self.bank[idx.reshape(-1)][..., ya:yb + 2 * j, xa:xb + 2 * j].float()
        qe = q[:, None, :, ya:yb, xa:xb]
        if self.photometric:
            refs = _matched(refs.reshape(n, self.k, c, hh + 2 * j, ww + 2 * j), qe, j
                            ).reshape(n * self.k, c, hh + 2 * j, ww + 2 * j)
        hi, lo = _band(refs, j)  # [N * k, C, hh, ww]: each neighbour's range within j px
        hi, lo = (b.reshape(n, self.k, c, hh, ww) for b in (hi, lo))
        out = torch.clamp(torch.maximum(qe - hi, lo - qe), min=0.0)  # outside the band
        best = out.mean(dim=2) if c > 1 else out.reshape(n, self.k, hh, ww)  # [N, k, h, w]
        if self.match is not None:  # per neighbour, a patch's difference
            best = self.match(best)
        best = best.amin(dim=1, keepdim=True)  # then the best neighbour
        return best[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]


def _matched(refs: torch.Tensor, q: torch.Tensor, j: int) -> torch.Tensor:
    """Neighbours [N, k, C, H + 2j, W + 2j] given the query's [N, 1, C, H, W] brightness
    and contrast (mean and spread over the region), so a part lit a little brighter is
    compared by its shape, not its level."""
    core = refs[..., j:refs.shape[-2] - j, j:refs.shape[-1] - j] if j else refs
    dims = (2, 3, 4)
    mr, mq = core.mean(dim=dims, keepdim=True), q.mean(dim=dims, keepdim=True)
    sr = (core - mr).square().mean(dim=dims, keepdim=True).sqrt()
    sq = (q - mq).square().mean(dim=dims, keepdim=True).sqrt()
    return (refs - mr) * (sq / (sr + 1e-3)) + mq


def _band(refs: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the largest and the smallest value within ``j`` px (a square window) of
    padded crops [M, C, H + 2j, W + 2j] -> two [M, C, H, W]. Separable: a row pass, then a
    column pass, so a 9 px window costs 18 comparisons a pixel, not 81.

    >>> r = torch.tensor([[[[0.0, 1.0, 0.0, 0.0, 2.0]]]])
    >>> [t.flatten().tolist() for t in _band(F.pad(r, (1, 1, 1, 1), mode="replicate"), 1)]
    [[1.0, 1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    if j == 0:
        return refs, refs
    side = 2 * j + 1

    def top(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.max_pool2d(x, (1, side), stride=1), (side, 1), stride=1)

    return top(refs), -top(-refs)


def part_regions(height: int, width: int) -> tuple[int, int]:
    """A found and turned part's regions: one row, cut along the crop's width into stretches
    about half the crop's height long (6 on a 320 x 112 screw crop).

    >>> part_regions(112, 320), part_regions(64, 64)
    ((1, 6), (1, 2))
    """
    return 1, max(1, round(2 * width / max(1, height)))


def _regions(h: int, w: int, grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The crop cut into ``grid`` = (rows, columns) regions, row by row: (y0, y1, x0, x1),
    edges on even pixels (the retrieval view is at half resolution); never more regions than
    a small crop has pixel pairs."""
    gy, gx = (min(max(1, int(g)), max(1, n // 2)) for g, n in zip(grid, (h, w), strict=True))
    ys = [2 * round(h / 2 * i / gy) for i in range(gy + 1)]
    xs = [2 * round(w / 2 * i / gx) for i in range(gx + 1)]
    ys[-1], xs[-1] = h, w
    return [(ys[a], ys[a + 1], xs[b], xs[b + 1]) for a in range(gy) for b in range(gx)]


def _window(box: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
    """A region's retrieval window at half resolution: the region and a quarter of it on
    each side, inside the crop."""
    y0, y1, x0, x1 = (v // 2 for v in box)
    dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
    return max(0, y0 - dy), min(h // 2, y1 + dy), max(0, x0 - dx), min(w // 2, x1 + dx)


def _window_mask(windows: list[tuple[int, int, int, int]], c: int, h2: int, w2: int
                 ) -> torch.Tensor:
    """[C * h2 * w2, R]: column r is 1 on the retrieval-view numbers in window r.

    >>> _window_mask([(0, 1, 0, 2), (0, 2, 1, 2)], 1, 2, 2).T.tolist()
    [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
    """
    mask = torch.zeros(len(windows), c, h2, w2)
    for r, (y0, y1, x0, x1) in enumerate(windows):
        mask[r, :, y0:y1, x0:x1] = 1.0
    return mask.reshape(len(windows), -1).T.contiguous()


def bank_from(train: np.ndarray, options: AutoencoderOptions) -> np.ndarray:
    """The good crops the reference keeps: all, or an even, seeded sample of ``bank_max``."""
    if len(train) <= options.bank_max:
        return train
    idx = np.sort(np.random.default_rng(options.seed).choice(len(train), options.bank_max,
                                                              replace=False))
    return train[idx]
