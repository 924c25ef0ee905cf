"""The anomaly model ("autoencoder" in the model contract): the scoring head that makes the
map and score in-graph (:mod:`.model`), its reconstruction (the nearest good parts,
:mod:`.neighbours`, or the convolutional autoencoder network), the part region it scores
(:mod:`.region`), its knobs (:mod:`.options`) and its training (:mod:`.train`)."""

from training.autoencoder.model import (
    ConvAutoencoder,
    GaussianBlur,
    ScoringHead,
    gaussian_kernel,
    score_batches,
)
from training.autoencoder.neighbours import NeighbourReference, part_regions
from training.autoencoder.options import AutoencoderOptions
from training.autoencoder.region import part_region
from training.autoencoder.train import AutoencoderResult, neighbour_head, train_autoencoder

__all__ = [
    "AutoencoderOptions",
    "AutoencoderResult",
    "ConvAutoencoder",
    "GaussianBlur",
    "NeighbourReference",
    "ScoringHead",
    "gaussian_kernel",
    "neighbour_head",
    "part_region",
    "part_regions",
    "score_batches",
    "train_autoencoder",
]
