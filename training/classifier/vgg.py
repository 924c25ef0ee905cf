"""VGG16 in plain torch, with torchvision's module names, so ImageNet weights load from a file.

torchvision has no CPU wheel in this environment, so the topology is rebuilt here. The
module names (``features.0`` ... ``features.28``, ``avgpool``, ``classifier.0/3/6``) and
parameter shapes at width 1.0 match torchvision's ``vgg16`` (and ``vgg16_bn`` with batch
norm on), so a state dict saved from torchvision loads with :func:`load_pretrained`.
Nothing is ever downloaded.

The network ends in one logit and a sigmoid in the graph: ``forward`` returns ``p_defect``
[N], the contract of the classifier ONNX model; training uses :meth:`VGG16.logits`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from station.config.schema import CLASSIFIER_WIDTH_MIN

# torchvision's configuration "D" (VGG16): channel counts, "M" = 2x2 max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
POOL_SIZE = 7  # torchvision's AdaptiveAvgPool2d((7, 7)); classifier.0 expects C*7*7 inputs
HIDDEN = 4096


@dataclass(frozen=True)
class VGGConfig:
    """Shape of the network; stored in the model's ``architecture`` metadata."""

    size: int = 224  # input width (and height when ``height`` is 0)
    in_channels: int = 1
    width: float = 1.0
    batch_norm: bool = False
    dropout: float = 0.5
    height: int = 0  # input height; 0 = square (size)

    def __post_init__(self) -> None:
        for name, v in (("size", self.size), ("height", self.rows)):
            if v < 32 or v % 32:
                raise ValueError(f"VGG16 input {name} must be a multiple of 32 and >= 32, got {v}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"VGG16 in_channels must be 1 or 3, got {self.in_channels}")
        if not CLASSIFIER_WIDTH_MIN <= self.width <= 1.0:
            raise ValueError(f"VGG16 width multiplier must be in [{CLASSIFIER_WIDTH_MIN}, 1.0], "
                             f"got {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VGG16 dropout must be in [0, 1), got {self.dropout}")

    def channels(self, c: int) -> int:
        """Scaled channel count; never below 4 so the narrowest nets still learn."""
        return max(4, int(round(c * self.width)))

    @property
    def rows(self) -> int:
        """Input height in px."""
        return int(self.height) or int(self.size)

    @property
    def hidden(self) -> int:
        return max(16, int(round(HIDDEN * self.width)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": "vgg16_bn" if self.batch_norm else "vgg16", **asdict(self)}


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Row i averages input cells [floor(i*n/o), ceil((i+1)*n/o)): adaptive average pooling."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class FixedAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d((7, 7))`` for a known input size, as two small matmuls.

    The legacy ONNX exporter refuses adaptive pooling whose output size does not divide the
    input (e.g. 4x4 -> 7x7 at input 128); fixed pooling matrices give the same numbers and
    export everywhere. The matrices are non-persistent buffers, so the state dict keeps
    torchvision's keys (``avgpool`` has no parameters there either).
    """

    def __init__(self, n_in: int, n_out: int = POOL_SIZE, n_in_cols: int | None = None) -> None:
        """``n_in`` input rows (and columns, unless ``n_in_cols`` says otherwise)."""
        super().__init__()
        cols_in = n_in if n_in_cols is None else n_in_cols
        self.n_in, self.n_in_cols, self.n_out = n_in, cols_in, n_out
        self.register_buffer("rows", _pool_matrix(n_in, n_out), persistent=False)
        self.register_buffer("cols", _pool_matrix(cols_in, n_out).t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_in == self.n_in_cols == self.n_out:
            return x
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


def _make_features(cfg: VGGConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = cfg.in_channels
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        c_out = cfg.channels(int(v))
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
        c_in = c_out
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG16 (optionally with batch norm, optionally narrower) with a 1-logit defect head."""

    def __init__(self, config: VGGConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VGGConfig()
        self.features = _make_features(cfg)
        self.avgpool = FixedAdaptiveAvgPool2d(cfg.rows // 32, n_in_cols=cfg.size // 32)
        c_last = cfg.channels(512)
        self.classifier = nn.Sequential(
            nn.Linear(c_last * POOL_SIZE * POOL_SIZE, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialization, so from-scratch training starts where VGG16's does."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw defect logit [N]; what the training loss sees."""
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.config.in_channels):
            raise ValueError(
                f"VGG16 expects [N, {self.config.in_channels}, H, W] input, got {tuple(x.shape)}"
            )
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``p_defect`` [N] in [0, 1]: the sigmoid is in the graph, so ONNX outputs it."""
        return torch.sigmoid(self.logits(x))


class PretrainedMismatch(ValueError):
    """A state-dict file that cannot be loaded into this VGG16; the message says why."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision state dict from a local file (bare, or under "state_dict"/"model")."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedMismatch(f"{path}: no such state-dict file (weights are never downloaded)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a state dict"
        # torch's own message runs to a dozen lines about weights_only: one line says it
        raise PretrainedMismatch(f"{path}: not a readable torch state dict "
                                 f"({type(exc).__name__}; expected a file written by "
                                 "torch.save(model.state_dict()))") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedMismatch(f"{path}: expected a dict of tensors (a torchvision state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def has_batch_norm(state: dict[str, torch.Tensor]) -> bool:
    """True for a ``vgg16_bn`` state dict, False for plain ``vgg16``."""
    return any(k.endswith("running_mean") for k in state)


def load_pretrained(model: VGG16, path: str | Path,
                    state: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Load torchvision ``vgg16`` (or ``vgg16_bn``) ImageNet weights from a local file.

    The first conv is adapted to 1-channel input by summing its RGB filters (a gray image
    seen as R=G=B gives the same response); the 1000-way head ``classifier.6`` is skipped,
    keeping this model's fresh 1-logit head. ``state``: the file's contents when already
    read with :func:`read_state_dict`. Returns the keys loaded. Raises
    :class:`PretrainedMismatch` naming the file and key when the weights cannot fit.
    """
    path = Path(path)
    cfg = model.config
    if cfg.width != 1.0:
        raise PretrainedMismatch(
            f"{path}: ImageNet VGG16 weights are full width; a width multiplier of {cfg.width} "
            "gives narrower layers they cannot load into. Use --width 1.0 with --pretrained, "
            "or train the narrow model from scratch."
        )
    state = read_state_dict(path) if state is None else state
    has_bn = has_batch_norm(state)
    if has_bn != cfg.batch_norm:
        want, got = ("vgg16_bn", "vgg16") if cfg.batch_norm else ("vgg16", "vgg16_bn")
        raise PretrainedMismatch(
            f"{path}: holds {got} weights but the model is {want}; "
            f"set batch_norm={has_bn} to load them"
        )
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key.startswith("classifier.6."):
            continue  # the 1000-way ImageNet head is replaced by the 1-logit defect head
        if key not in state:
            raise PretrainedMismatch(f"{path}: missing key {key!r} (is this a vgg16 state dict?)")
        value = state[key]
        if key == "features.0.weight" and value.shape[1] == 3 and target.shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)
        if value.shape != target.shape:
            raise PretrainedMismatch(
                f"{path}: {key!r} has shape {list(value.shape)}, the model needs "
                f"{list(target.shape)}"
            )
        loaded[key] = value.to(target.dtype)
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)
