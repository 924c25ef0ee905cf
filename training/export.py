"""Single-file ONNX export with the model contract's metadata, and the parity check.

The legacy TorchScript exporter (``dynamo=False``) writes one self-contained file (weights
inside, no ``.data`` side file), with a dynamic batch axis; ``metadata_props`` are then
written with the ``onnx`` package. :func:`parity` holds torch and onnxruntime to the same
outputs. Static int8 quantization lives in :mod:`training.quantize`.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from station.models.metadata import INPUT_NAME, OUTPUTS, ModelMetadata

OPSET = 17


def now_iso() -> str:
    """UTC creation time for ``created``."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def write_metadata(path: Path | str, meta: ModelMetadata) -> None:
    """Replace the file's ``metadata_props`` with ``meta`` (file stays one piece)."""
    path = Path(path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(path), save_as_external_data=False)


def export_onnx(model: nn.Module, out: Path | str, meta: ModelMetadata, example: torch.Tensor,
                opset: int = OPSET) -> Path:
    """Export ``model`` (``image`` -> the kind's outputs) to ``out`` and stamp ``meta`` on it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(OUTPUTS[meta.kind])
    model = model.cpu().eval()
    dynamic = {INPUT_NAME: {0: "N"}, **{n: {0: "N"} for n in names}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example.cpu().float(),),
            str(out),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(out))
    stray = out.with_name(out.name + ".data")
    if stray.exists():
        raise RuntimeError(f"{out}: export wrote an external data file {stray}; expected one file")
    write_metadata(out, meta)
    return out


@torch.no_grad()
def torch_outputs(model: nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    """The torch model's outputs as a list (one entry per ONNX output)."""
    out = model.cpu().eval()(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    if isinstance(out, torch.Tensor):
        out = (out,)
    return [o.numpy() for o in out]


def parity(model: nn.Module, onnx_path: Path | str, batch: np.ndarray) -> dict[str, float]:
    """Max abs difference torch vs onnxruntime (CPU), per output name."""
    from station.models.inference import open_session

    session = open_session(onnx_path, "cpu", 0)
    ort_out = session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
    names = [o.name for o in session.get_outputs()]
    ref = torch_outputs(model, batch)
    return {n: float(np.max(np.abs(a.astype(np.float64) - b.reshape(a.shape))))
            for n, a, b in zip(names, ort_out, ref, strict=True)}
