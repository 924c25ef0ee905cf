"""Grad-CAM of the defect logit, written as forward-pass operations so it exports in-graph.

Why in the graph: the station runs onnxruntime only, so a map the operator sees when the
classifier rejects a part must come out of the model file. Grad-CAM (Selvaraju et al. 2017)
weights the last convolutional block's activations ``A`` (the ReLU before VGG16's last max
pool; 1/16 of the crop) by the spatial mean of the logit's gradient with respect to them.

That gradient is not a constant of the trained net: the head is avgpool -> Linear -> ReLU
-> (Dropout) -> Linear -> ReLU -> (Dropout) -> Linear, and the ReLUs gate it per part. But
the backward pass through such a head is a few matrix products with the ReLU masks of this
very forward pass, so :class:`ClassifierWithMap` writes it out (dropout is the identity in
eval mode):

    g_z2 = w3 * [h2 > 0];  g_z1 = (g_z2 @ W2) * [h1 > 0];  g_f = g_z1 @ W1

``g_f`` is the gradient at the flattened 7x7 pooled map. The channel weight is the
*spatial sum* of the gradient at ``A`` over its H x W cells, and both layers between ``A``
and ``g_f`` keep that sum: max pooling routes each cell's gradient to one input, and the
fixed average pooling's rows each sum to one. So ``alpha_k = sum(g_f[k]) / (H W)``, exactly
(no max-pool argmax, hence no ties to break), and the tests hold it to ``torch.autograd``.
Summing W1 over the 49 cells once, at wrapping, makes that one small product per part.

The map is ReLU(sum_k alpha_k A_k), upsampled bilinearly to the crop, then scaled so that
its peak equals ``p_defect``. An :class:`~training.classifier.ensemble.Ensemble` gets the mean
of its members' maps (and of each mirror image's, turned back), each first scaled to a peak of one (so that no member's arbitrary
gradient magnitude outweighs the other's), then the same scale. Why that scale: Grad-CAM's magnitude is arbitrary (it is a
gradient times an activation) while the station colours every map on "1.0 = the model's
threshold" (``normalized_map(map) = map / threshold``, like the autoencoder's). With the peak
at ``p_defect`` the map's peak is ``p_defect / threshold``, so a part the classifier rejects
shows its evidence at or above 1.0, and a pass peaks below 1.0 (the score itself is shown as
an odds ratio, which crosses 1.0 at the same part: ``station.models.scoring``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

from training.classifier.ensemble import Ensemble, flip, mean_logit, members_of, views_of
from training.classifier.vgg import POOL_SIZE, VGG16

#: the ONNX output names of a classifier with a map, in graph order
MAP_OUTPUTS: tuple[str, str] = ("p_defect", "cam")
#: smallest map peak divided by: a map that is zero everywhere stays zero
_TINY = 1e-12


class GradCam(nn.Module):
    """The map from the head's forward values; a module of its own so that its ONNX nodes
    are named ``/gradcam.<member>/...`` and int8 quantization can keep them float
    (:func:`map_nodes`).

    ``w1``: the head's first Linear weight [hidden, C * 7 * 7]. The map only needs
    ``g_z1 @ w1`` summed over each channel's 7 x 7 cells, so the cells are summed once here:
    a [hidden, C] buffer (1/49 of ``w1``, exported as a constant of its own) and one small
    product per part. It is a snapshot: wrap the network once it is trained.
    """

    def __init__(self, w1: torch.Tensor) -> None:
        super().__init__()
        cells = POOL_SIZE * POOL_SIZE
        w1 = w1.detach()
        self.register_buffer("w1_cells", w1.reshape(w1.shape[0], -1, cells).sum(-1).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor, a: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor,
                w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
        """``a``: last conv block [N, C, h, w]; ``h1``/``h2``: the head's ReLU outputs;
        ``w2``/``w3``: its later Linear weights; returns the map [N, 1, H, W], peak 1."""
        # Einsum, not MatMul: the weights are shared with the head's Gemm nodes, and an int8
        # quantizer that met them in a MatMul too would give them two conflicting per-channel
        # scales (onnxruntime's fails outright); Einsum is never quantized, so the map's
        # products stay float whatever the quantizer is told to exclude.
        g_z2 = w3 * (h2 > 0).to(h2.dtype)  # d logit / d (pre-ReLU 2), [N, hidden]
        g_z1 = torch.einsum("nj,ji->ni", g_z2, w2) * (h1 > 0).to(h1.dtype)
        cells = int(a.shape[2]) * int(a.shape[3])  # the last conv block's H x W
        alpha = torch.einsum("nj,jc->nc", g_z1, self.w1_cells) / cells  # [N, C]
        low = torch.relu((alpha[:, :, None, None] * a).sum(1, keepdim=True))
        up = F.interpolate(low, size=(int(x.shape[2]), int(x.shape[3])), mode="bilinear",
                           align_corners=False)
        return _unit_peak(up)


def _unit_peak(m: torch.Tensor) -> torch.Tensor:
    """``m`` [N, 1, H, W] divided by each map's peak (a map that is zero stays zero)."""
    return m / torch.amax(m, dim=(2, 3), keepdim=True).clamp_min(_TINY)


class MapBlend(nn.Module):
    """The members' unit-peak maps into one whose peak is ``p``, a mirror image's map turned
    back first (``views``: the dims each map's input was flipped along); a module of its own
    so that its nodes are named ``/gradcam_blend/...`` and stay float in int8 with the maps'."""

    def forward(self, maps: list[torch.Tensor], p: torch.Tensor,
                views: list[tuple[int, ...]] | None = None) -> torch.Tensor:
        maps = [flip(m, dims) for m, dims in zip(maps, views or [()] * len(maps), strict=True)]
        # one member's map has its unit peak already; a mean of several is scaled back to one
        unit = maps[0] if len(maps) == 1 else _unit_peak(torch.stack(maps).mean(0))
        return unit * p[:, None, None, None]


class ClassifierWithMap(nn.Module):
    """``image -> (p_defect [N], cam [N, 1, H, W])`` around a trained :class:`VGG16` or an
    :class:`~training.classifier.ensemble.Ensemble` of them.

    ``p_defect`` is computed by the network's own modules, exactly as its ``forward`` does.
    """

    def __init__(self, net: VGG16 | Ensemble) -> None:
        super().__init__()
        self.net = net
        cams = []
        for member in members_of(net):
            head = list(member.classifier)
            if len(head) != 7 or not all(isinstance(head[i], nn.Linear) for i in (0, 3, 6)):
                raise ValueError("Grad-CAM expects VGG16's head Linear-ReLU-Dropout-Linear-ReLU-"
                                 f"Dropout-Linear, got {[type(m).__name__ for m in head]}")
            cams.append(GradCam(head[0].weight))
        self.gradcam = nn.ModuleList(cams)
        self.gradcam_blend = MapBlend()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, maps, views = [], [], []
        for member, gradcam in zip(members_of(self.net), self.gradcam, strict=True):
            for dims in views_of(self.net):
                logit, cam = self._member(member, gradcam, flip(x, dims))
                logits.append(logit)
                maps.append(cam)
                views.append(dims)
        p = torch.sigmoid(mean_logit(logits))
        return p, self.gradcam_blend(maps, p, views)

    @staticmethod
    def _member(member: VGG16, gradcam: GradCam,
                x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One network's defect logit [N] and unit-peak map [N, 1, H, W] of ``x``."""
        layers = list(member.features)
        a = x
        for layer in layers[:-1]:
            a = layer(a)  # a: the last conv block's activations, [N, C, H/16, W/16]
        pooled = member.avgpool(layers[-1](a))
        fc1, relu1, drop1, fc2, relu2, drop2, fc3 = member.classifier
        h1 = relu1(fc1(torch.flatten(pooled, 1)))
        h2 = relu2(fc2(drop1(h1)))
        return fc3(drop2(h2)).squeeze(1), gradcam(x, a, h1, h2, fc2.weight, fc3.weight)


def map_nodes(node_names: list[str]) -> list[str]:
    """The nodes of an exported :class:`ClassifierWithMap` that compute the map: those of
    :class:`GradCam` (``/gradcam/...`` or ``/gradcam.<member>/...``) and :class:`MapBlend`,
    kept float by int8 quantization."""
    return [n for n in node_names if n.startswith(("/gradcam/", "/gradcam.", "/gradcam_blend/"))]
