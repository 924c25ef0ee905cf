"""The model-file contract: what an ONNX model must say about itself, read and checked.

Each model is one self-contained ``.onnx`` file whose ``metadata_props`` (string -> string;
structured values as JSON) carry everything the station needs to use it exactly as it was
trained: kind, preprocessing, the localize/align parameters of its crops, the raw threshold
and how scores are normalized, data fingerprint, metrics, quantization and architecture.

The station reads them through onnxruntime (``custom_metadata_map``), so it needs no ``onnx``
package, and :func:`validate` refuses (:class:`ModelRefused`, naming the file and the
reason) any model whose metadata it cannot honour.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.models import scoring

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
KINDS = ("autoencoder", "classifier")
INPUT_NAME = "image"
#: output names per kind, in graph order
OUTPUTS: dict[str, tuple[str, ...]] = {
    "autoencoder": ("anomaly_map", "score"),
    "classifier": ("p_defect",),
}
#: outputs a kind may add after its required ones: a classifier's in-graph Grad-CAM map
#: ``cam`` [N, 1, H, W] (raw scale, its peak = p_defect). Files without it stay valid.
OPTIONAL_OUTPUTS: dict[str, tuple[str, ...]] = {"autoencoder": (), "classifier": ("cam",)}
REQUIRED_KEYS = ("format_version", "kind", "version", "created", "preprocess", "localize",
                 "align", "threshold", "score_normalization")
_JSON_KEYS = ("preprocess", "localize", "align", "score_normalization", "metrics",
              "quantization", "architecture", "output_names")


class ModelRefused(Exception):
    """A model file the station will not use; ``path`` and ``reason`` say which and why.

    ``key`` names the recipe key at fault when the refusal is about the recipe's choice of
    models rather than a file's content (``models.autoencoder``, ``decision.rule``, ...), so
    the command line can say ``recipe.toml: decision.rule = "either": ...``.
    """

    def __init__(self, path: Path | str, reason: str, *, key: str = "") -> None:
        self.path = Path(path) if path else None
        self.reason = reason
        self.key = key
        where = f"{path}: " if path else ""
        super().__init__(f"{where}model refused: {reason}")


@dataclass(frozen=True)
class ModelMetadata:
    """Parsed ``metadata_props`` of one model file."""

    kind: str
    threshold: float
    preprocess: dict[str, Any]
    localize: dict[str, Any]
    align: dict[str, Any]
    format_version: int = FORMAT_VERSION
    version: str = ""
    created: str = ""
    score_normalization: dict[str, Any] = field(default_factory=lambda: {"method": scoring.RATIO})
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    architecture: dict[str, Any] = field(default_factory=dict)
    input_name: str = INPUT_NAME
    output_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.output_names and self.kind in OUTPUTS:
            object.__setattr__(self, "output_names", OUTPUTS[self.kind])
        object.__setattr__(self, "output_names", tuple(self.output_names))

    # --- serialization ------------------------------------------------------------------
    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` strings to write into the ONNX file."""
        props = {
            "format_version": str(self.format_version),
            "kind": self.kind,
            "version": self.version,
            "created": self.created,
            "threshold": repr(float(self.threshold)),
            "data_fingerprint": self.data_fingerprint,
            "input_name": self.input_name,
        }
        for key in _JSON_KEYS:
            value = getattr(self, key)
            props[key] = json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: Path | str = "") -> ModelMetadata:
        """Parse metadata strings; :class:`ModelRefused` names a missing or malformed key."""
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            present = ", ".join(sorted(props)) or "none"
            raise ModelRefused(source, f"metadata lacks key(s) {', '.join(missing)} "
                                       f"(present: {present}); was it exported by station train?")
        values: dict[str, Any] = {}
        for key in _JSON_KEYS:
            if key not in props:
                continue
            try:
                values[key] = json.loads(props[key])
            except json.JSONDecodeError as exc:
                if key == "quantization":  # a bare tag such as "int8-static-qdq"
                    values[key] = {"mode": props[key]}
                    continue
                raise ModelRefused(source, f"metadata key {key!r} is not valid JSON ({exc.msg}): "
                                           f"{props[key][:80]!r}") from None
        for key in ("preprocess", "localize", "align", "score_normalization"):
            if not isinstance(values.get(key), dict):
                raise ModelRefused(source, f"metadata key {key!r} must be a JSON object, got "
                                           f"{props[key][:80]!r}")
        try:
            fmt = int(props["format_version"])
        except ValueError:
            raise ModelRefused(source, f"metadata format_version = {props['format_version']!r}: "
                                       "expected an integer") from None
        try:
            threshold = float(props["threshold"])
        except ValueError:
            raise ModelRefused(source, f"metadata threshold = {props['threshold']!r}: expected "
                                       "a number") from None
        return cls(
            kind=props["kind"],
            threshold=threshold,
            preprocess=values["preprocess"],
            localize=values["localize"],
            align=values["align"],
            format_version=fmt,
            version=props["version"],
            created=props["created"],
            score_normalization=values["score_normalization"],
            data_fingerprint=props.get("data_fingerprint", ""),
            metrics=values.get("metrics", {}) or {},
            quantization=_quantization(values.get("quantization")),
            architecture=values.get("architecture", {}) or {},
            input_name=props.get("input_name", INPUT_NAME),
            output_names=tuple(values.get("output_names", ()) or ()),
        )

    # --- typed views ----------------------------------------------------------------------
    def preprocess_spec(self):
        """The :class:`station.vision.preprocess.PreprocessSpec` the model was trained with."""
        from station.vision.preprocess import PreprocessSpec

        return PreprocessSpec.from_metadata(self.preprocess)

    def localize_params(self):
        from station.vision.localize import LocalizeParams

        return LocalizeParams.from_dict(self.localize)

    def align_params(self):
        from station.vision import pattern
        from station.vision.align import AlignParams

        params = AlignParams.from_dict(self.align)
        if params.orientation in pattern.READS_PATTERN:
            pattern.reference(params.pattern)  # refused at load, not at every part
        return params

    @property
    def evidence_spread(self) -> float | None:
        """The spread of this model's log score over good parts (``sum`` rule), None in a
        file trained before it was measured."""
        value = self.score_normalization.get(scoring.EVIDENCE_SPREAD)
        return None if value is None else float(value)

    @property
    def evidence_offset(self) -> float:
        """This model's share of the sum rule's threshold chosen at training (0: none)."""
        return float(self.score_normalization.get(scoring.EVIDENCE_OFFSET, 0.0))

    @property
    def normalization(self) -> str:
        """How this model's scores are normalized (``scoring.RATIO`` or ``scoring.ODDS``)."""
        return str(self.score_normalization.get("method", scoring.RATIO))

    def normalized(self, raw):
        """Raw score(s) on the shown scale (1.0 = this model's threshold)."""
        return scoring.normalize(raw, self.threshold, self.normalization)

    def normalized_map(self, raw_map):
        """A map on the colour scale the window and the reject images draw (1.0 = threshold).

        Always ``raw / threshold``: the classifier's map is its Grad-CAM scaled to a peak of
        ``p_defect``, and the odds of each pixel would paint a confident map red from edge to
        edge. So a map shows *where*; its model's score says *how much*.
        """
        return scoring.normalize(raw_map, self.threshold)


def _quantization(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {"mode": str(value) if value else "none"}


def _dims(shape) -> list[Any]:
    return [d if isinstance(d, int) else None for d in shape]


def _validate_metadata(meta: ModelMetadata, source: Path | str) -> Any:
    """The metadata's own values (version, kind, threshold, normalization, crop parameters);
    returns the preprocess spec the graph's input must match."""
    if meta.format_version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelRefused(source, f"metadata format_version {meta.format_version} is not "
                                   f"supported (this station reads {SUPPORTED_FORMAT_VERSIONS})")
    if meta.kind not in KINDS:
        raise ModelRefused(source, f"metadata kind = {meta.kind!r}: expected one of {', '.join(KINDS)}")
    if not math.isfinite(meta.threshold) or meta.threshold <= 0:
        raise ModelRefused(source, f"metadata threshold = {meta.threshold!r}: expected a positive "
                                   "number (the raw score that normalizes to 1.0)")
    method = meta.score_normalization.get("method")
    if method not in scoring.METHODS:
        raise ModelRefused(source, f"metadata score_normalization method = {method!r}: expected "
                                   f"one of {', '.join(scoring.METHODS)}")
    try:
        scoring.check_threshold(meta.threshold, method)
    except ValueError as exc:
        raise ModelRefused(source, f"metadata threshold = {meta.threshold!r}: {exc}") from None
    spread = meta.score_normalization.get(scoring.EVIDENCE_SPREAD)
    if spread is not None and not (isinstance(spread, int | float) and not isinstance(spread, bool)
                                   and math.isfinite(spread)
                                   and spread >= scoring.MIN_EVIDENCE_SPREAD):
        raise ModelRefused(source, f"metadata score_normalization {scoring.EVIDENCE_SPREAD} = "
                                   f"{spread!r}: expected a number of at least "
                                   f"{scoring.MIN_EVIDENCE_SPREAD}")
    offset = meta.score_normalization.get(scoring.EVIDENCE_OFFSET, 0.0)
    if not (isinstance(offset, int | float) and not isinstance(offset, bool)
            and math.isfinite(offset) and abs(offset) <= scoring.MAX_EVIDENCE_OFFSET):
        raise ModelRefused(source, f"metadata score_normalization {scoring.EVIDENCE_OFFSET} = "
                                   f"{offset!r}: expected a number from "
                                   f"-{scoring.MAX_EVIDENCE_OFFSET:g} to "
                                   f"{scoring.MAX_EVIDENCE_OFFSET:g}")
    if method == scoring.ODDS and meta.kind != "classifier":
        raise ModelRefused(source, "metadata score_normalization method = 'odds' for kind "
                                   f"{meta.kind!r}: only a classifier's score is a probability")
    try:
        spec = meta.preprocess_spec()
    except Exception as exc:  # the spec's own error says which key is wrong
        raise ModelRefused(source, f"metadata 'preprocess' cannot be honoured: {exc}") from None
    for key, getter in (("localize", meta.localize_params), ("align", meta.align_params)):
        try:
            getter()
        except Exception as exc:
            raise ModelRefused(source, f"metadata {key!r} cannot be honoured: {exc}") from None
    return spec


def validate(
    meta: ModelMetadata,
    inputs: list[tuple[str, list[Any]]],
    outputs: list[tuple[str, list[Any]]],
    source: Path | str = "",
) -> None:
    """Refuse a model whose metadata or graph I/O the station cannot honour.

    ``inputs``/``outputs`` are the graph's ``(name, shape)`` pairs (shape entries are ints,
    or strings/None for dynamic axes), as onnxruntime reports them.
    """
    spec = _validate_metadata(meta, source)
    if len(inputs) != 1:
        raise ModelRefused(source, f"expected exactly one input {meta.input_name!r}, the graph "
                                   f"has {[n for n, _ in inputs]}")
    name, shape = inputs[0]
    if name != meta.input_name:
        raise ModelRefused(source, f"graph input is {name!r}, metadata says {meta.input_name!r}")
    dims = _dims(shape)
    want = [None, *spec.shape]  # [N, C, H, W]; H = W for square crops
    if len(dims) != 4 or any(d is not None and d != w for d, w in zip(dims[1:], want[1:], strict=True)):
        raise ModelRefused(source, f"graph input {name!r} has shape {list(shape)}, but the "
                                   f"preprocess spec makes [N, {want[1]}, {want[2]}, {want[3]}]")
    _validate_outputs(meta, outputs, int(spec.crop_height), int(spec.size), source)


def allowed_outputs(kind: str) -> list[tuple[str, ...]]:
    """The output-name tuples a model of ``kind`` may have: the required ones, then each
    longer run of the optional ones (``("p_defect",)`` or ``("p_defect", "cam")``)."""
    required, optional = OUTPUTS[kind], OPTIONAL_OUTPUTS.get(kind, ())
    return [required + optional[:i] for i in range(len(optional) + 1)]


def _validate_outputs(meta: ModelMetadata, outputs: list[tuple[str, list[Any]]], height: int,
                      width: int, source: Path | str) -> None:
    """The graph's outputs: the kind's names in order (optional ones may be left out, but
    the metadata must list what the graph has), and their shapes."""
    allowed = allowed_outputs(meta.kind)
    got = tuple(n for n, _ in outputs)
    if got not in allowed or tuple(meta.output_names) != got:
        options = " or ".join(str(list(a)) for a in allowed)
        raise ModelRefused(source, f"a {meta.kind} must output {options}; the graph has "
                                   f"{list(got)} (metadata lists {list(meta.output_names)})")
    shapes = dict(outputs)
    for name in ("anomaly_map", "cam"):
        if name not in shapes:
            continue
        map_dims = _dims(shapes[name])
        if len(map_dims) != 4 or any(
            d is not None and d != w for d, w in zip(map_dims[1:], [1, height, width], strict=True)
        ):
            raise ModelRefused(source, f"{name} has shape {list(shapes[name])}; expected "
                                       f"[N, 1, {height}, {width}] (crop resolution)")
    for name in ("score", "p_defect"):
        if name in shapes and len(_dims(shapes[name])) != 1:
            raise ModelRefused(source, f"{name} has shape {list(shapes[name])}; expected [N]")


def from_session(session, source: Path | str = "") -> ModelMetadata:
    """Read and validate the metadata of an open ``onnxruntime.InferenceSession``."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    meta = ModelMetadata.from_props(props, source)
    validate(
        meta,
        [(i.name, list(i.shape)) for i in session.get_inputs()],
        [(o.name, list(o.shape)) for o in session.get_outputs()],
        source,
    )
    return meta
