"""Static int8 quantization (QDQ) of an exported ONNX model, calibrated on real prepared crops.

Why static and QDQ: on this kind of CPU, onnxruntime runs QDQ int8 convolutions with its
integer kernels, several times faster than float for VGG16, while *dynamic* quantization
quantizes activations at run time and leaves convolutions on slow paths (measured ~5x
slower here). Calibration uses real crops through the station's preprocessing, so the
activation ranges are the ones the line produces.

What stays float: the model's output stage (the sigmoid giving ``p_defect``, and whatever
node names the caller excludes, e.g. an autoencoder's scoring head), because a few
quantization steps there would move scores near the threshold. Weights are quantized per
output channel (VGG's per-channel ranges differ by orders of magnitude).

The quantized file keeps the float model's ``metadata_props`` and records
``quantization = "int8-static-qdq"``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
)
from onnxruntime.quantization import quantize_static as _ort_quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from station.models.inference import disable_telemetry

QUANTIZATION_TAG = "int8-static-qdq"
# Ops whose int8 kernels pay on CPU; element-wise and scoring ops stay float.
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool",
                                     "Relu", "AveragePool", "GlobalAveragePool", "Flatten")


class QuantizationError(RuntimeError):
    """Quantization could not be done; the message names the model and the reason."""


class TensorCalibrationReader(CalibrationDataReader):
    """Feeds prepared crops (float32 [N, C, H, W]) to the calibrator, ``batch`` at a time."""

    def __init__(self, input_name: str, tensors: Iterable[np.ndarray], batch: int = 1) -> None:
        arrays = [np.asarray(t, dtype=np.float32) for t in tensors]
        arrays = [a[None] if a.ndim == 3 else a for a in arrays]
        data = np.concatenate(arrays, axis=0) if arrays else np.zeros((0,), np.float32)
        if data.ndim != 4 or len(data) == 0:
            raise QuantizationError(
                f"calibration needs prepared crops shaped [N, C, H, W] (N >= 1), got {data.shape}"
            )
        self._batches = [data[i : i + batch] for i in range(0, len(data), batch)]
        self._input = input_name
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._batches):
            return None
        self._pos += 1
        return {self._input: self._batches[self._pos - 1]}

    def rewind(self) -> None:
        self._pos = 0


def _output_stage_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of Sigmoid nodes feeding graph outputs directly: kept float for exact scores."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if n.op_type == "Sigmoid" and set(n.output) & outputs]


def _pre_process(src: Path, out: Path) -> Path:
    """``quant_pre_process`` with symbolic shape inference, else without it, else skipped.

    Symbolic inference fails on some graphs (an autoencoder's reflect-padded blur head:
    "Incomplete symbolic shape inference"); ONNX shape inference and graph optimization
    alone still help, and quantizing the raw graph is the last resort.
    """
    src, out = src.resolve(), out.resolve()
    here = os.getcwd()
    os.chdir(out.parent)  # onnxruntime writes its scratch files into the working folder
    try:
        for skip_symbolic in (False, True):
            try:
                quant_pre_process(str(src), str(out),
                                  skip_symbolic_shape=skip_symbolic)
                return out
            except Exception:  # noqa: BLE001 - onnxruntime raises bare Exception here
                continue
    finally:
        os.chdir(here)
    return src


def _excluded_nodes(model: onnx.ModelProto, src: Path, nodes_to_exclude: Sequence[str],
                    include_prefix: str | None) -> list[str]:
    """Nodes kept float: the caller's, the output sigmoid, and all outside ``include_prefix``."""
    exclude = list(nodes_to_exclude) + _output_stage_nodes(model)
    if include_prefix is not None:
        names = [n.name for n in model.graph.node]
        if not any(name.startswith(include_prefix) for name in names):
            raise QuantizationError(f"{src}: no node name starts with {include_prefix!r}")
        exclude += [name for name in names if not name.startswith(include_prefix)]
    return exclude


def quantize_static(
    float_onnx: str | Path,
    out: str | Path,
    calibration_tensors: np.ndarray | Sequence[np.ndarray],
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    include_prefix: str | None = None,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    preprocess: bool = True,
) -> Path:
    """Write a static int8 QDQ copy of ``float_onnx`` to ``out``; returns ``out``.

    ``calibration_tensors``: prepared crops, float32 [N, C, H, W] (or a list of such arrays),
    exactly as ``station.vision.preprocess.prepare_batch`` makes them; 32-128 real crops suffice.
    ``preprocess`` runs onnxruntime's ``quant_pre_process`` (shape inference and graph
    optimization, which lets the quantizer fuse and place QDQ pairs well) before quantizing.
    ``include_prefix`` quantizes only nodes whose names start with it, e.g. ``"/net/"`` for
    an autoencoder exported as ``ScoringHead`` (its network under ``net``), so the scoring
    head (residual, blur, normalization, max) stays float.
    """
    src, dst = Path(float_onnx), Path(out)
    disable_telemetry()  # the quantizer's calibration makes its own onnxruntime sessions
    if not src.is_file():
        raise QuantizationError(f"{src}: no such ONNX model to quantize")
    try:
        float_model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - any parse error means "not an ONNX model"
        raise QuantizationError(f"{src}: not a readable ONNX model ({exc})") from exc
    inputs = [i.name for i in float_model.graph.input
              if i.name not in {t.name for t in float_model.graph.initializer}]
    if len(inputs) != 1:
        raise QuantizationError(f"{src}: expected one graph input, found {inputs}")
    reader = TensorCalibrationReader(
        inputs[0],
        [calibration_tensors] if isinstance(calibration_tensors, np.ndarray)
        else calibration_tensors,
    )
    meta = {p.key: p.value for p in float_model.metadata_props}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        model_in = src
        if preprocess:
            model_in = _pre_process(src, Path(tmp) / "pre.onnx")
        exclude = _excluded_nodes(onnx.load(str(model_in)), src, nodes_to_exclude,
                                  include_prefix)
        _ort_quantize_static(
            str(model_in),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(op_types),
            nodes_to_exclude=exclude,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    quant = onnx.load(str(dst))
    del quant.metadata_props[:]
    meta["quantization"] = QUANTIZATION_TAG
    for key, value in meta.items():
        prop = quant.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(quant, str(dst))
    return dst
