"""The one torch device picker of training: CUDA when present, else the CPU.

``station train --device`` and ``ClassifierOptions.device`` both end here, so "auto" means
the same everywhere and a CUDA request on a machine without it fails with the same words.
"""

from __future__ import annotations

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when torch sees it, else CPU; otherwise the named device,
    refused with a clear error when it is CUDA and torch has none."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r}: CUDA is not available to torch here; "
                         "use auto or cpu")
    return dev
