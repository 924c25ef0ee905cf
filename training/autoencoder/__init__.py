"""The convolutional autoencoder: its network and in-graph scoring head (:mod:`.model`), the
part region it scores (:mod:`.region`), its knobs (:mod:`.options`) and its training
(:mod:`.train`)."""

from training.autoencoder.model import (
    ConvAutoencoder,
    GaussianBlur,
    ScoringHead,
    gaussian_kernel,
    score_batches,
)
from training.autoencoder.options import AutoencoderOptions
from training.autoencoder.region import part_region
from training.autoencoder.train import AutoencoderResult, train_autoencoder

__all__ = [
    "AutoencoderOptions",
    "AutoencoderResult",
    "ConvAutoencoder",
    "GaussianBlur",
    "ScoringHead",
    "gaussian_kernel",
    "part_region",
    "score_batches",
    "train_autoencoder",
]
