"""p_defect of a torch classifier on uint8 crops, through the station's own preprocessing."""

from __future__ import annotations

import numpy as np
import torch

from station.vision.preprocess import PreprocessSpec, prepare_batch
from training.classifier.ensemble import Ensemble
from training.classifier.vgg import VGG16


@torch.no_grad()
def predict(model: VGG16 | Ensemble, crops: list[np.ndarray], spec: PreprocessSpec,
            batch_size: int = 32, device: torch.device | None = None) -> np.ndarray:
    """p_defect for uint8 crops, through the station's preprocessing."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(crops), batch_size):
        x = torch.from_numpy(prepare_batch(list(crops[i : i + batch_size]), spec)).to(device)
        out.append(model(x).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)
