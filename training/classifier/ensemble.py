"""Several independently trained classifiers read as one: the mean of their defect logits.

Why: trained from scratch on the twenty or so real defects of a fold, the classifier varies
more from one training run to the next than with its number of steps (on the development
screws, one run at 8 min and one at 24 min, same folds: test AUROC 1.000 / 0.964 / 0.936 and
0.966 / 0.875 / 1.000 per fold), and it is over-confident, so a single run's ranking of the
hard parts is partly luck. Averaging two runs' logits, each run given half the time, cancels
part of that luck: from those two runs' own scores, the mean logit ranked the pooled test
parts at AUROC 0.974 against 0.954 and 0.971 alone, and with the autoencoder 0.987 against
0.977 and 0.991 (0.985 against 0.979 and 0.981 with the held-aside good parts).
The mean of the logits, not of the probabilities: two saturated members' probabilities tie
at 1.0 where their logits still rank the parts (probabilities: 0.991 on the test parts but
0.979 with the held-aside good ones).

The ensemble is one network to everything downstream: ``forward`` gives ``p_defect`` and
:class:`training.classifier.cam.ClassifierWithMap` draws the members' Grad-CAM maps into one,
so the station still opens one ONNX file with the same two outputs.

Mirror images (``flips``, a recipe's ``models.flips``): for a product whose mirror image is
as good a part as itself (a tile's face, a symmetric part), each member also reads the
flipped crop and the logits of every member and view are averaged, in the graph. The
classifier trains on flipped crops too (:func:`training.classifier.batches.augment`), so a
few dozen real defects count several times over, and the mean over views evens out where a
defect sits relative to the network's pooling grid.

>>> from training.classifier.vgg import VGG16, VGGConfig
>>> cfg = VGGConfig(size=32, width=0.0625)
>>> net = Ensemble([VGG16(cfg), VGG16(cfg)]).eval()
>>> tuple(net(torch.zeros(3, 1, 32, 32)).shape)
(3,)
>>> Ensemble([VGG16(cfg)], flips="both").views
((), (3,), (2,), (2, 3))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from training.classifier.vgg import VGG16

#: a recipe's ``models.flips`` -> the mirror images read besides the crop itself, as the
#: dimensions :func:`torch.flip` turns over in an [N, C, H, W] batch (3: left-right, 2: up-down)
FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": (), "horizontal": ((3,),), "vertical": ((2,),), "both": ((3,), (2,), (2, 3))}


class Ensemble(nn.Module):
    """``p_defect = sigmoid(mean_i logit_i)`` over trained :class:`VGG16` members that share
    one input (the same crop size and channels), each reading the crop and its ``flips``."""

    def __init__(self, members: Sequence[VGG16], flips: str = "none") -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one classifier")
        if flips not in FLIPS:
            raise ValueError(f"flips {flips!r}: expected one of {', '.join(FLIPS)}")
        shapes = {(m.config.size, m.config.height, m.config.in_channels) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members take different inputs: {sorted(shapes)}")
        self.members = nn.ModuleList(members)
        self.config = members[0].config
        self.flips = flips

    @property
    def views(self) -> tuple[tuple[int, ...], ...]:
        """The crop itself (``()``) and the mirror images each member reads."""
        return ((),) + FLIPS[self.flips]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The members' mean defect logit [N] over every view."""
        return mean_logit([m.logits(flip(x, dims)) for m in self.members for dims in self.views])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``p_defect`` [N] in [0, 1], as :meth:`VGG16.forward`."""
        return torch.sigmoid(self.logits(x))


def mean_logit(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The members' defect logits ([N] each) as the ensemble's one [N] (one member: its own)."""
    return logits[0] if len(logits) == 1 else torch.stack(list(logits)).mean(0)


def flip(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` turned over along ``dims`` (none: ``x`` itself); its own inverse."""
    return torch.flip(x, dims) if dims else x


def views_of(net: VGG16 | Ensemble) -> tuple[tuple[int, ...], ...]:
    """The views ``net`` reads: an ensemble's, or the crop alone."""
    return net.views if isinstance(net, Ensemble) else ((),)


def members_of(net: VGG16 | Ensemble) -> list[VGG16]:
    """The networks inside ``net``: its members, or ``net`` itself."""
    return list(net.members) if isinstance(net, Ensemble) else [net]  # type: ignore[arg-type]
