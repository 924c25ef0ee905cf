"""Train the VGG16 defect classifier on good crops, real defects and synthesized defects.

Every batch is half good crops and half defects: real defective crops when the data set has
them (a ``transplant`` share of them moved onto another good crop where their mask is
known), and defects synthesized on the fly on good crops (:mod:`training.synth_defects`),
so the classifier learns even from good parts alone (:mod:`training.classifier.batches`).
Crops go through the station's own preprocessing (``station.vision.preprocess.prepare_batch``),
never a copy of it, so the network sees in training exactly what it sees on the line.

Networks train in the channels-last memory layout (NHWC), which oneDNN's convolutions run
without reordering: a step of the screws' 128 x 64 network at batch 32 took 113 -> 76 ms
and the tiles' 128 x 160 one 304 -> 179 ms on 2 AVX-512 cores (148 -> 101 and 255 -> 180 ms
with PyTorch and oneDNN held to AVX2; ``station bench``'s ``training_step``), so a
time-budgeted run takes more steps on any CPU (the tiles' whole runs 1.37 x). The finished
network is handed back in the usual layout, for export and the station.

The learning rate follows a cosine from ``lr`` to zero over the planned run, where progress
is the larger of the step fraction and the time fraction, so a run cut by the time budget
still ends annealed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from station.progress import progress_bar
from station.vision.preprocess import PreprocessSpec
from training.classifier.batches import BatchMaker, synthetic_validation
from training.classifier.ensemble import Ensemble
from training.classifier.options import ClassifierOptions, ClassifierResult
from training.classifier.predict import predict
from training.classifier.vgg import VGG16, has_batch_norm, load_pretrained, read_state_dict
from training.device import pick_device
from training.metrics import roc_auc


def _as_list(crops: Any) -> list[np.ndarray]:
    return [np.asarray(c) for c in crops] if crops is not None else []


def _check_inputs(train_crops: Any, train_labels: Any, val_crops: Any, val_labels: Any
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(good training crops, real defect crops, validation crops, validation labels)."""
    crops = _as_list(train_crops)
    labels = np.asarray(train_labels, dtype=np.int64).reshape(-1)
    if len(crops) != len(labels):
        raise ValueError(f"{len(crops)} training crops but {len(labels)} labels")
    if not set(np.unique(labels).tolist()) <= {0, 1}:
        raise ValueError(f"training labels must be 0 (good) or 1 (defect), got {np.unique(labels)}")
    good = [c for c, y in zip(crops, labels, strict=True) if y == 0]
    real = [c for c, y in zip(crops, labels, strict=True) if y == 1]
    if len(good) < 2:
        raise ValueError(f"classifier training needs at least 2 good crops, got {len(good)}")
    vcrops = _as_list(val_crops)
    vlabels = np.asarray(val_labels if val_labels is not None else [], dtype=np.int64).reshape(-1)
    if len(vcrops) != len(vlabels):
        raise ValueError(f"{len(vcrops)} validation crops but {len(vlabels)} labels")
    return good, real, vcrops, vlabels


def _build_model(opts: ClassifierOptions, spec: PreprocessSpec) -> tuple[VGG16, bool]:
    """A fresh VGG16, or one started from the ``pretrained`` file; and whether it has batch
    norm (from the file when not set)."""
    state = read_state_dict(opts.pretrained) if opts.pretrained is not None else None
    batch_norm = opts.batch_norm
    if batch_norm is None:
        batch_norm = has_batch_norm(state) if state is not None else True
    model = VGG16(opts.vgg_config(spec.channels, batch_norm))
    if state is not None:
        load_pretrained(model, opts.pretrained, state)
    return model, batch_norm


#: the training bar: per cent of the planned run, time spent < time left, then the step
PROGRESS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}"

#: The memory layout a network trains in (the module docstring says why); ``station bench``
#: times a step in it and in the plain layout.
TRAIN_LAYOUT = torch.channels_last


def train_step(model: VGG16, optim: torch.optim.Optimizer, loss_fn: nn.Module,
               x: torch.Tensor, y: torch.Tensor, device: torch.device,
               layout: torch.memory_format = TRAIN_LAYOUT) -> float:
    """One optimizer step on one batch, put in ``layout`` (the model's weights are put in
    it once, by its caller); the batch's loss."""
    x = x.to(device, memory_format=layout)
    loss = loss_fn(model.logits(x), y.to(device))
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return float(loss.detach())


@dataclass
class _Run:
    """One training run: model, optimizer, batches, step count, clock and schedule."""

    model: VGG16
    device: torch.device
    make_batch: BatchMaker
    base_lr: float
    weight_decay: float
    total_steps: int
    budget_s: float
    bar: Any
    step: int = 0
    start: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=self.base_lr,
                                       weight_decay=self.weight_decay)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.warmup = min(20, self.total_steps // 10)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def progress(self) -> float:
        """How far the planned run is: the larger of the step and the time fractions."""
        return min(1.0, max(self.step / self.total_steps, self.elapsed() / self.budget_s))

    def lr(self) -> float | None:
        """This step's learning rate; ``None`` once the time budget is spent."""
        elapsed = self.elapsed()
        if elapsed >= self.budget_s:
            return None
        frac = max(self.step / self.total_steps, elapsed / self.budget_s)
        base_lr, step, warmup = self.base_lr, self.step, self.warmup
        return base_lr * (step + 1) / warmup if step < warmup else \
            base_lr * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    def epoch(self, epoch: int, steps: int) -> tuple[list[float], bool]:
        """One epoch of ``steps`` batches: (the losses, stopped by the time budget)."""
        self.model.train()
        losses: list[float] = []
        for _ in range(steps):
            lr = self.lr()
            if lr is None:
                return losses, True
            for g in self.optim.param_groups:
                g["lr"] = lr
            x, y = self.make_batch()
            losses.append(train_step(self.model, self.optim, self.loss_fn, x, y, self.device))
            self.step += 1
            # the postfix waits for the bar's next redraw (station.progress paces it)
            self.bar.set_postfix(step=self.step, epoch=epoch + 1,
                                 loss=f"{np.mean(losses[-20:]):.3f}",
                                 lr=f"{lr:.1e}", refresh=False)
            self.bar.update(round(100.0 * self.progress(), 1) - self.bar.n)
        return losses, False


def _fit(run: _Run, opts: ClassifierOptions, steps_per_epoch: int, spec: PreprocessSpec,
         vgood: list[np.ndarray], vsynth: list[np.ndarray]) -> tuple[list[dict[str, Any]], bool]:
    """The epochs: (per-epoch history, stopped by the time budget)."""
    history: list[dict[str, Any]] = []
    stopped_by_time = False
    for epoch in range(opts.epochs):
        losses, stopped_by_time = run.epoch(epoch, steps_per_epoch)
        if not losses:
            break
        entry: dict[str, Any] = {
            "epoch": epoch + 1, "steps": run.step, "loss": float(np.mean(losses)),
            "lr": float(run.optim.param_groups[0]["lr"]), "seconds": round(run.elapsed(), 1),
        }
        stopped_by_time = stopped_by_time or run.elapsed() >= run.budget_s
        last = stopped_by_time or epoch == opts.epochs - 1
        if vgood and (last or epoch % 20 == 19):
            p_good = predict(run.model, vgood, spec, device=run.device)
            p_syn = predict(run.model, vsynth, spec, device=run.device)
            entry["val_synth_auroc"] = roc_auc(np.r_[p_good, p_syn],
                                               np.r_[np.zeros(len(p_good)), np.ones(len(p_syn))])
        history.append(entry)
        if stopped_by_time:
            break
    return history, stopped_by_time


def _train_one(good: list[np.ndarray], real: list[np.ndarray], masks: list[np.ndarray | None],
               vcrops: list[np.ndarray], vlabels: np.ndarray, spec: PreprocessSpec,
               opts: ClassifierOptions, seed: int, minutes: float, desc: str, progress: bool
               ) -> tuple[VGG16, list[dict[str, Any]], bool]:
    """One network from ``seed`` in ``minutes``: (model in eval mode, history, stopped by time)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = pick_device(opts.device)
    model, batch_norm = _build_model(opts, spec)
    model.to(device, memory_format=TRAIN_LAYOUT)
    vgood, vsynth = synthetic_validation(vcrops, vlabels, opts.max_val_synth, seed)

    half = opts.batch_size // 2
    steps_per_epoch = max(1, math.ceil(len(good) / half))
    n_real = int(round(half * (1.0 - opts.synth_ratio))) if real else 0
    # in per cent of the planned run (steps or minutes, whichever ends it first), so the time
    # left it shows is the budget's: counted in steps, a timed run showed 36 min left of 2
    bar = progress_bar(total=100.0, desc=desc, unit="%", bar_format=PROGRESS_FORMAT,
                       disable=not progress, dynamic_ncols=True)
    batches = BatchMaker(good, real, spec, rng, opts.batch_size, n_real, opts.flips, masks,
                         opts.transplant)
    run = _Run(model, device, batches,
               opts.resolved_lr(batch_norm), opts.weight_decay, steps_per_epoch * opts.epochs,
               minutes * 60.0, bar)
    history, stopped_by_time = _fit(run, opts, steps_per_epoch, spec, vgood, vsynth)
    bar.update(100.0 - bar.n)  # the run is over, whichever way it ended
    bar.close()
    return model.to(memory_format=torch.contiguous_format).eval(), history, stopped_by_time


def train_classifier(
    train_crops: list[np.ndarray],
    train_labels: list[int] | np.ndarray,
    val_crops: list[np.ndarray] | None,
    val_labels: list[int] | np.ndarray | None,
    spec: PreprocessSpec,
    options: ClassifierOptions | None = None,
    progress: bool = True,
    train_masks: list[np.ndarray | None] | None = None,
) -> ClassifierResult:
    """Train the classifier; each of ``options.members`` networks (seeds ``seed``,
    ``seed + 1``, ...) stops after ``options.epochs`` or its share of ``options.minutes``,
    first, and several are averaged into one :class:`~training.classifier.ensemble.Ensemble`.

    ``train_labels``: 0 good, 1 defective (real defects). Good crops are required; defects
    are optional. ``train_masks`` (one per training crop, None where unknown) lets a
    ``transplant`` share of the real-defect slots show a defect on another good crop.
    Returns the model on CPU in eval mode, p_defect on ``val_crops`` and a per-epoch history
    (the member, loss, learning rate, seconds, and the validation AUROC of good vs real
    defects where there are any, and of good vs synthesized defects on validation good
    crops, a health check that works without defects).
    """
    opts = options or ClassifierOptions()
    opts.validate(spec)
    good, real, vcrops, vlabels = _check_inputs(train_crops, train_labels, val_crops, val_labels)
    labels = np.asarray(train_labels).reshape(-1)
    masks = ([m for m, y in zip(train_masks, labels, strict=True) if y == 1]
             if train_masks is not None else [None] * len(real))
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    nets: list[VGG16] = []
    history: list[dict[str, Any]] = []
    stopped_by_time = False
    t0 = time.monotonic()
    for i in range(opts.members):
        # each member's share of what is left, so a member cut short leaves time to the next
        minutes = (opts.minutes - (time.monotonic() - t0) / 60.0) / (opts.members - i)
        desc = "classifier" if opts.members == 1 else f"classifier {i + 1}/{opts.members}"
        net, rows, stopped_by_time = _train_one(good, real, masks, vcrops, vlabels, spec, opts,
                                                opts.seed + i, max(minutes, 0.01), desc, progress)
        nets.append(net)
        history += [{"member": i, **row} for row in rows] if opts.members > 1 else rows
    model: VGG16 | Ensemble = (nets[0] if len(nets) == 1 and opts.flips == "none"
                               else Ensemble(nets, opts.flips).eval())

    device = pick_device(opts.device)
    model.to(device)
    val_p = predict(model, vcrops, spec, device=device) if vcrops else np.zeros(0, np.float32)
    if history and len(np.unique(vlabels)) == 2:
        history[-1]["val_auroc"] = roc_auc(val_p, vlabels)
    if history:
        history[-1]["stopped_by"] = "time" if stopped_by_time else "epochs"
    return ClassifierResult(model=model.cpu().eval(), val_p=val_p, history=history)
