"""onnxruntime sessions for the two model kinds: provider choice, threads, warm-up.

``load_model`` opens a file, reads and validates its metadata (:mod:`station.models.metadata`) and
returns an :class:`AutoencoderModel` or a :class:`ClassifierModel`. Anything wrong with the
file (missing, truncated, not ONNX, metadata the station cannot honour) raises
:class:`~station.models.metadata.ModelRefused` naming the file and the reason, before the line runs.

Every session in the station and in training is made by :func:`new_session`, which first
turns onnxruntime's telemetry events off (:func:`disable_telemetry`): a station sends nothing
about itself anywhere, not even to a local trace store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from station.models.metadata import ModelMetadata, ModelRefused, from_session

PROVIDERS = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_telemetry_disabled = False  # set once onnxruntime's telemetry events are off
RETRIEVAL_BYTES = 256 << 20  # what one batch's nearest-parts search may hold (see below)
#: onnxruntime's rewrite of convolutions into its blocked channel layout (NCHWc, part of its
#: "all" optimizations): it pays for a network's dense convolutions (the screws' classifier
#: pair 2.3 -> 1.8 ms) and costs the autoencoder that reconstructs from its nearest good
#: parts, whose only convolutions are Gaussian blurs of one to five channels, each padded to
#: a block of 8 and reordered back (screws 2.4 -> 2.9 ms, tiles 5.0 -> 6.3 ms, 2 AVX-512
#: cores; docs/results.md). Such a file is opened without it.
BLOCKED_LAYOUT = "NchwcTransformer"
#: the ``architecture`` name of an autoencoder file that reconstructs from good parts
RETRIEVAL_ARCHITECTURE = "nearest_good_l1_pixelnorm"


def retrieval_batch(bank: int, shape: tuple[int, int, int], limit: int = 16) -> int:
    """Crops per batch for an autoencoder that finds its nearest good parts. Files exported
    before the search became one MatMul (December 2026) hold every query's difference to
    every bank crop on a grey half-resolution view, and its square, in float32 ([N, bank,
    H/2 x W/2] twice), so a batch stays within ``RETRIEVAL_BYTES`` for those (a 224 x 264 crop
    against 400 good parts is 47 MB a crop); newer files hold far less and run in the same
    batches. At most ``limit``. ``shape`` is the model's input (channels, height, width).

    >>> retrieval_batch(200, (1, 112, 320)), retrieval_batch(400, (3, 264, 224))
    (16, 5)
    """
    _, h, w = shape
    per_crop = max(1, bank) * (h // 2) * (w // 2) * 4 * 2
    return int(max(1, min(limit, RETRIEVAL_BYTES // per_crop)))


class ModelFileError(ModelRefused):
    """The file itself cannot be opened as an ONNX model (missing, truncated, corrupt)."""


class ProviderUnavailable(RuntimeError):
    """``models.provider`` asks for an execution provider this onnxruntime does not have."""

    def __init__(self, provider: str, available: list[str]) -> None:
        self.provider = provider
        self.available = list(available)
        super().__init__(f"this onnxruntime has no {provider.upper()} execution provider "
                         f"(available: {', '.join(available)}); use 'auto' or 'cpu'")


def disable_telemetry() -> bool:
    """Turn onnxruntime's telemetry events off for this process; safe to call any number of
    times (only the first call reaches onnxruntime). Returns whether this call did it."""
    global _telemetry_disabled
    if _telemetry_disabled:
        return False
    ort.disable_telemetry_events()
    _telemetry_disabled = True
    return True


def session_options(threads: int = 0, spinning: bool = True) -> ort.SessionOptions:
    """Quiet session options; ``threads`` > 0 caps the intra-op pool, ``spinning=False`` lets
    its workers sleep between runs (two models on one thread, see ``load_line_model``)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads > 0:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return opts


def new_session(path: Path | str, opts: ort.SessionOptions | None = None,
                providers: list[str] | None = None,
                disabled: Sequence[str] = ()) -> ort.InferenceSession:
    """The one place sessions are made: telemetry off first, then the session
    (``disabled``: onnxruntime optimizers left out, e.g. :data:`BLOCKED_LAYOUT`)."""
    disable_telemetry()
    extra = {"disabled_optimizers": list(disabled)} if disabled else {}
    return ort.InferenceSession(str(path), sess_options=opts or session_options(),
                                providers=providers or [_CPU], **extra)


def session_for_architecture(session: ort.InferenceSession, meta: ModelMetadata,
                             path: Path | str, opts: ort.SessionOptions,
                             providers: list[str]) -> ort.InferenceSession:
    """``session``, or the file opened again without :data:`BLOCKED_LAYOUT` where its
    architecture is the nearest-good-parts autoencoder (a retrieval graph the rewrite slows).
    The architecture is in the file's metadata, which only a session reads, so that one file
    is opened twice, once at start (0.07-0.09 s for the screws'). The line and ``station
    evaluate`` both open files through here, so the scores evaluation measures are the
    line's (the two layouts differ by float rounding, ~1e-5)."""
    if meta.architecture.get("name") != RETRIEVAL_ARCHITECTURE:
        return session
    return new_session(path, opts, providers, disabled=(BLOCKED_LAYOUT,))


def choose_providers(provider: str = "auto") -> list[str]:
    """onnxruntime providers for ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider = {provider!r}: expected one of {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if provider == "cpu":
        return [_CPU]
    if provider == "cuda":
        if _CUDA not in available:
            raise ProviderUnavailable("cuda", available)
        return [_CUDA, _CPU]
    return [_CUDA, _CPU] if _CUDA in available else [_CPU]


def open_session(path: Path | str, provider: str = "auto", threads: int = 0) -> ort.InferenceSession:
    """An inference session on ``path``; ``threads`` > 0 caps onnxruntime's intra-op threads."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found" if not path.exists() else "not a file")
    providers = choose_providers(provider)
    try:
        return new_session(path, session_options(threads), providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        size = path.stat().st_size
        raise ModelFileError(path, f"not a readable ONNX model ({size} bytes; corrupt or "
                                   f"truncated?): {detail}") from None


class _Model:
    """Shared parts of the two model kinds."""

    def __init__(self, session: ort.InferenceSession, meta: ModelMetadata, path: Path) -> None:
        self.session = session
        self.meta = meta
        self.path = path
        spec = meta.preprocess_spec()
        self.input_shape = spec.shape  # (channels, height, width)
        self._input = meta.input_name

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def provider(self) -> str:
        """The provider actually running the graph (``CUDAExecutionProvider`` or CPU)."""
        return self.session.get_providers()[0]

    def normalized(self, raw):
        """Raw score(s) on the shown scale (1.0 = the model's threshold)."""
        return self.meta.normalized(raw)

    def normalized_map(self, raw_map):
        """A raw map on the maps' colour scale (1.0 = the model's threshold)."""
        return self.meta.normalized_map(raw_map)

    def _batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise ValueError(f"{self.path.name}: input batch has shape {tuple(batch.shape)}; "
                             f"expected [N, {c}, {h}, {w}] (from preprocess.prepare)")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self._input: self._batch(batch)})

    def warmup(self, runs: int = 2) -> None:
        """Run a blank input so the first real part does not pay for lazy initialization."""
        blank = np.zeros((1, *self.input_shape), np.float32)
        for _ in range(max(1, runs)):
            self._run(blank)


def possible(scores: np.ndarray, low: float, high: float) -> np.ndarray:
    """The scores with any a model cannot give (a probability under 0, a distance below 0,
    minus infinity) made NaN, which the decision turns into an ERROR and the line rejects:
    a broken file's -5 would otherwise pass every part under any threshold.

    >>> possible(np.array([0.2, -5.0, np.inf, 1.0]), 0.0, 1.0)
    array([0.2, nan, nan, 1. ])
    """
    scores = np.asarray(scores, dtype=np.float64 if scores.dtype == np.float64 else np.float32)
    return np.where((scores >= low) & (scores <= high), scores, np.nan).astype(scores.dtype)


class AutoencoderModel(_Model):
    """``infer(batch) -> (anomaly_maps [N, H, W], raw_scores [N])`` at crop resolution."""

    def batch_limit(self, limit: int = 16) -> int:
        """Crops per call that keep a retrieval graph's memory bounded
        (:func:`retrieval_batch`); ``limit`` for a trained network (no bank)."""
        calibration = self.meta.architecture.get("calibration") or {}
        bank = calibration.get("bank") if isinstance(calibration, dict) else None
        if not isinstance(bank, int) or bank < 1:
            return limit
        return retrieval_batch(bank, self.input_shape, limit)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = self._run(batch)
        return amap[:, 0], possible(score.reshape(-1), 0.0, np.inf)


class ClassifierModel(_Model):
    """``infer(batch) -> p_defect [N]`` (raw score = probability of a defect), and
    ``infer_map(batch)`` with the in-graph Grad-CAM map when the file has one."""

    @property
    def has_map(self) -> bool:
        """Whether the file outputs ``cam`` (files exported before the map do not)."""
        return "cam" in self.meta.output_names

    def infer(self, batch: np.ndarray) -> np.ndarray:
        (p,) = self.session.run(["p_defect"], {self._input: self._batch(batch)})
        return possible(p.reshape(-1), 0.0, 1.0)

    def infer_map(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(p_defect [N], maps [N, H, W] or None)``: the map where the defect evidence is,
        at crop resolution, raw scale (its peak = p_defect; ``normalized_map`` puts 1.0 at the
        threshold, as for the autoencoder's map). ``None`` for a file without ``cam``."""
        if not self.has_map:
            return self.infer(batch), None
        p, cam = self.session.run(["p_defect", "cam"], {self._input: self._batch(batch)})
        if cam.ndim != 4 or tuple(cam.shape[1:]) != (1, *self.input_shape[1:]):
            # a graph that left the map's dims symbolic got past the load-time check
            raise ValueError(f"{self.path.name}: cam has shape {tuple(cam.shape)}; expected "
                             f"[N, 1, {self.input_shape[1]}, {self.input_shape[2]}]")
        return possible(p.reshape(-1), 0.0, 1.0), cam[:, 0]


def load_model(path: Path | str, provider: str = "auto", threads: int = 0
               ) -> AutoencoderModel | ClassifierModel:
    """Open and validate a model file; the class follows the metadata's ``kind``."""
    path = Path(path)
    session = open_session(path, provider, threads)
    meta = from_session(session, path)
    session = session_for_architecture(session, meta, path, session_options(threads),
                                       choose_providers(provider))
    cls = AutoencoderModel if meta.kind == "autoencoder" else ClassifierModel
    return cls(session, meta, path)


def read_metadata(path: Path | str) -> ModelMetadata:
    """Open ``path`` on the CPU just to read and validate its metadata."""
    return from_session(open_session(path, "cpu", 1), path)
