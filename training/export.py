"""Single-file ONNX export with the model contract's metadata, and the parity check.

The legacy TorchScript exporter (``dynamo=False``) writes one self-contained file (weights
inside, no ``.data`` side file), with a dynamic batch axis; ``metadata_props`` are then
written with the ``onnx`` package. :func:`parity` holds torch and onnxruntime to the same
outputs. :func:`export_classifier` exports a classifier with its in-graph Grad-CAM map
(:mod:`training.classifier.cam`). Static int8 quantization lives in :mod:`training.quantize`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from station.models.metadata import INPUT_NAME, OUTPUTS, ModelMetadata
from training.classifier.cam import MAP_OUTPUTS, ClassifierWithMap, map_nodes
from training.classifier.ensemble import Ensemble
from training.classifier.vgg import VGG16

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
    """Export ``model`` (``image`` -> ``meta.output_names``, by default the kind's required
    outputs) to ``out`` and stamp ``meta`` on it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(meta.output_names or OUTPUTS[meta.kind])
    model = model.cpu().eval()
    shapes = [o.shape for o in torch_outputs(model, example.cpu().float().numpy())]
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
    stray = out.with_name(out.name + ".data")
    if stray.exists():
        raise RuntimeError(f"{out}: export wrote an external data file {stray}; expected one file")
    _declare_output_dims(out, shapes)
    onnx.checker.check_model(str(out))
    write_metadata(out, meta)
    return out


def _declare_output_dims(path: Path, shapes: list[tuple[int, ...]]) -> None:
    """Write each output's fixed dims (all but the batch axis) into the graph.

    Why: ONNX shape inference cannot follow a size computed in the graph (the map's Resize),
    so the exporter leaves such dims symbolic, and the station's load-time check of the map
    against the crop size (:func:`station.models.metadata.validate`) would see nothing.
    """
    model = onnx.load(str(path))
    for output, shape in zip(model.graph.output, shapes, strict=True):
        dims = output.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for dim, size in list(zip(dims, shape, strict=True))[1:]:
            dim.ClearField("dim_param")
            dim.dim_value = int(size)
    onnx.save_model(model, str(path), save_as_external_data=False)


def export_classifier(net: VGG16 | Ensemble, out: Path | str, meta: ModelMetadata, example: torch.Tensor,
                      with_map: bool = True) -> tuple[nn.Module, ModelMetadata]:
    """Export a trained classifier; ``with_map`` adds its Grad-CAM output ``cam``.

    Returns the exported torch module (for :func:`parity`) and the metadata written, whose
    ``output_names`` say whether the file has the map.
    """
    model: nn.Module = ClassifierWithMap(net) if with_map else net
    meta = dataclasses.replace(meta, output_names=MAP_OUTPUTS if with_map else OUTPUTS["classifier"])
    export_onnx(model, out, meta, example)
    return model, meta


def float_nodes(path: Path | str) -> list[str]:
    """Nodes of an exported classifier that int8 quantization keeps float: its map's.

    Why float: Grad-CAM multiplies activations by gradients that span orders of magnitude
    and divides by the map's peak; the conv stack feeding it is quantized as before.
    A classifier without a map has none.
    """
    model = onnx.load(str(path), load_external_data=False)
    if "cam" not in {o.name for o in model.graph.output}:
        return []
    return map_nodes([n.name for n in model.graph.node])


@torch.no_grad()
def torch_outputs(model: nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    """The torch model's outputs as a list (one entry per ONNX output)."""
    out = model.cpu().eval()(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    if isinstance(out, torch.Tensor):
        out = (out,)
    return [o.numpy() for o in out]


#: Scores: torch and onnxruntime agree to this, relative to the output's scale.
PARITY_TOLERANCE = 1e-4
#: The autoencoder's score compares the crop with its whole bank and divides by per-pixel
#: spreads; where a surface's neighbours are fitted to its level and contrast, the two
#: runtimes' roundings grow with the bank (measured, relative to the map's scale: screws
#: 1e-7; tiles, 397 crops, 2.8e-5; a 256 x 256 colour surface 2e-6 with 67 crops, 1.1e-4
#: with 112, which failed training at 1e-4, 2.2e-4 with 277, its score 1.6e-4). It agrees to
#: a thousandth of its scale: that moves no verdict but one within 0.1 % of the threshold,
#: and an export bug moves it by the order of the scale.
AUTOENCODER_SCORE_TOLERANCE = 1e-3
#: A map is a picture: it agrees to one 8-bit display level. The classifier's divides by its
#: peak and masks by the signs of ReLU inputs, so a rounding the two runtimes do differently
#: moves a pixel further than a score (a tiny model on an AVX-512 machine: map 3.5e-4,
#: p_defect 7.7e-7); the autoencoder's adds up as its score does.
MAP_PARITY_TOLERANCE = 1 / 255
_TOLERANCES = {"cam": MAP_PARITY_TOLERANCE, "anomaly_map": MAP_PARITY_TOLERANCE,
               "score": AUTOENCODER_SCORE_TOLERANCE}


def parity_tolerance(output: str) -> float:
    """The bound :func:`parity` is held to for ``output``, relative to its scale.

    >>> parity_tolerance("p_defect"), parity_tolerance("score"), round(parity_tolerance("cam"), 4)
    (0.0001, 0.001, 0.0039)
    """
    return _TOLERANCES.get(output, PARITY_TOLERANCE)


def over_tolerance(diffs: dict[str, float], scale: float = 1.0) -> dict[str, float]:
    """The outputs of a :func:`parity` result past their bound (``scale``: the outputs' size).

    >>> over_tolerance({"p_defect": 2e-4, "cam": 3.5e-4})
    {'p_defect': 0.0002}
    >>> over_tolerance({"anomaly_map": 5.2e-4, "score": 2.7e-4}, scale=3.93)
    {}
    """
    return {n: d for n, d in diffs.items() if d > parity_tolerance(n) * scale}


def parity(model: nn.Module, onnx_path: Path | str, batch: np.ndarray) -> dict[str, float]:
    """Max abs difference torch vs onnxruntime (CPU), per output name."""
    from station.models.inference import open_session

    session = open_session(onnx_path, "cpu", 0)
    ort_out = session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
    names = [o.name for o in session.get_outputs()]
    ref = torch_outputs(model, batch)
    return {n: float(np.max(np.abs(a.astype(np.float64) - b.reshape(a.shape))))
            for n, a, b in zip(names, ort_out, ref, strict=True)}
