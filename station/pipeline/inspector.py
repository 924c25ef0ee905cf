"""One part, start to verdict: crop, both models, decision. No threads, no I/O.

The engine's inspection thread, ``station replay`` and ``station bench`` all call
:meth:`Inspector.inspect`, so what is measured is what runs on the line.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import cv2
import numpy as np

from station.config import DecisionSection, Recipe
from station.decision import ERROR, REJECT, Evidence, Rule, Verdict, decide
from station.models.inference import (
    AutoencoderModel,
    ClassifierModel,
    choose_providers,
    load_model,
    new_session,
    session_for_architecture,
    session_options,
)
from station.models.metadata import ModelRefused, from_session
from station.vision.align import AlignedCrop, AlignParams, PartNotFound, align, read_pose
from station.vision.localize import LocalizeParams, localize
from station.vision.preprocess import PreprocessSpec, prepare

# How far around a trigger's box localization looks, as a share of the box's long side, so a
# neighbouring part on the belt does not make the frame "several parts".
WINDOW_MARGIN = 0.35
# The long side of the copy of the frame an ERROR keeps for review (its record's "frame").
REVIEW_SIDE = 800


def review_copy(image: np.ndarray, side: int = REVIEW_SIDE) -> np.ndarray:
    """A downscaled copy of a frame: what an ERROR row keeps so the cause can be seen later
    (a copy, so the camera's buffer is not held)."""
    height, width = image.shape[:2]
    scale = side / max(height, width, 1)
    if scale >= 1.0:
        return np.array(image, copy=True)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class PartResult:
    """Everything the records, the reject scheduler and the UI need about one part."""

    part_id: str
    verdict: Verdict
    ae_score: float | None = None  # normalized: 1.0 = threshold
    ae_raw: float | None = None
    cls_score: float | None = None
    cls_raw: float | None = None  # P(defect)
    evidence: float | None = None  # rule sum: the two models' evidence added (else None)
    latency_ms: float = 0.0  # trigger (or call) to verdict
    inference_ms: float = 0.0  # both models alone
    inspect_ms: float = 0.0  # this part's own work: crop, models, decision (no queueing)
    error: str = ""
    crop: np.ndarray | None = None  # aligned crop, uint8, autoencoder size
    heatmap: np.ndarray | None = None  # the shown map over the crop, 1.0 = threshold level
    map_source: str = ""  # whose map ``heatmap`` is: "autoencoder" | "classifier" | "" (none)
    crop_to_frame: np.ndarray | None = None  # 2x3 affine, crop pixel -> frame pixel
    box: tuple[int, int, int, int] | None = None  # the part in the frame
    frame_seq: int | None = None
    t_trigger: float = 0.0
    truth: Any = None  # ground truth when the source knows it (simulator, replay)
    trigger: str = ""  # the trigger's source: manual | serial | free_run | hardware | ...
    frame: np.ndarray | None = None  # ERROR only: a downscaled copy of the frame, for review

    @property
    def rejected(self) -> bool:
        return self.verdict != Verdict.PASS


class Inspector:
    """Holds both models and the crop parameters; ``inspect(frame)`` gives a PartResult."""

    def __init__(
        self,
        autoencoder: AutoencoderModel | None,
        classifier: ClassifierModel | None,
        localize_params: LocalizeParams,
        align_params: AlignParams | None,
        decision: DecisionSection,
        source: Path | str = "",
    ) -> None:
        """``source`` is the recipe the models come from, named when they are refused."""
        if autoencoder is None and classifier is None:
            raise ModelRefused(source, "no model: the recipe sets neither models.autoencoder "
                                       "nor models.classifier (station train writes the lines "
                                       "to set in recipe_fragment.toml beside the models)",
                               key="models")
        refusal = rule_refusal(decision.rule, autoencoder, classifier)
        if refusal:
            raise ModelRefused(source, refusal, key="decision.rule")
        self.autoencoder = autoencoder
        self.classifier = classifier
        self.localize_params = localize_params
        # The crop must be the one the models were trained on: their metadata wins.
        model = autoencoder or classifier
        trained = model.meta.align_params() if model is not None else None
        self.align_params = trained or align_params
        if autoencoder is not None and classifier is not None:  # one crop serves both
            a, c = autoencoder.meta.align, classifier.meta.align
            differ = sorted(k for k in set(a) | set(c) if a.get(k) != c.get(k))
            if differ:
                raise ModelRefused(classifier.path, "trained on another crop than the "
                                   f"autoencoder {autoencoder.path.name} (align "
                                   f"{', '.join(differ)} differ): the station cuts one crop for "
                                   "both; train them together", key="models")
        method = model.meta.localize_params().method if model is not None else None
        if method is not None and method != localize_params.method:
            raise ModelRefused(model.path if model else source, f'trained with localize.method = '
                               f'"{method}", but the recipe says "{localize_params.method}": '
                               "the crop would not be the one it learned", key="localize.method")
        self.decision = decision
        self.ae_spec: PreprocessSpec | None = autoencoder.meta.preprocess_spec() if autoencoder else None
        self.cls_spec: PreprocessSpec | None = classifier.meta.preprocess_spec() if classifier else None

    @classmethod
    def from_recipe(cls, recipe: Recipe, provider: str | None = None,
                    threads: int | None = None) -> Inspector:
        """Load the recipe's models (refusing any whose metadata cannot be honoured)."""
        m = recipe.models
        prov = provider or m.provider
        nthreads = m.threads if threads is None else threads
        ae = _load(m.autoencoder, AutoencoderModel, prov, nthreads)
        clf = _load(m.classifier, ClassifierModel, prov, nthreads)
        return cls(ae, clf, recipe.localize, recipe.align, recipe.decision, source=recipe.path)

    @property
    def model_versions(self) -> dict[str, str]:
        out = {}
        for name, model in (("autoencoder", self.autoencoder), ("classifier", self.classifier)):
            if model is not None:
                out[name] = f"{model.path.name}@{model.meta.version}"
        return out

    def warmup(self) -> None:
        for model in (self.autoencoder, self.classifier):
            if model is not None:
                model.warmup()

    def set_decision(self, decision: DecisionSection) -> None:
        """The decision from the next part on; ``ValueError`` when the loaded models cannot
        serve its rule."""
        refusal = rule_refusal(decision.rule, self.autoencoder, self.classifier)
        if refusal:
            raise ValueError(f"decision.rule = {decision.rule!r}: {refusal}")
        self.decision = decision

    @property
    def sums(self) -> Evidence | None:
        """What the ``sum`` rule adds the two scores with (None for the other rules)."""
        return evidence_of(self.decision, self.autoencoder, self.classifier)

    def locate(self, image: np.ndarray, box: tuple[int, int, int, int] | None = None):
        """Find the part, looking only around ``box`` (a trigger's find) when given."""
        params = self.localize_params
        if box is not None and params.method != "fixed":  # a fixed region is never moved
            x, y, w, h = box
            m = int(round(max(w, h) * WINDOW_MARGIN))
            height, width = image.shape[:2]
            x0, y0 = max(0, x - m), max(0, y - m)
            x1, y1 = min(width, x + w + m), min(height, y + h + m)
            params = dataclasses.replace(params, roi=(x0, y0, x1 - x0, y1 - y0))
        return localize(image, params)

    def inspect(
        self,
        image: np.ndarray,
        part_id: str = "",
        *,
        box: tuple[int, int, int, int] | None = None,
        t_trigger: float | None = None,
    ) -> PartResult:
        """Crop, run both models, decide. Any failure is an ERROR verdict with its reason."""
        return self.judge(self.crop(image, part_id, box=box, t_trigger=t_trigger))

    def crop(
        self,
        image: np.ndarray,
        part_id: str = "",
        *,
        box: tuple[int, int, int, int] | None = None,
        t_trigger: float | None = None,
    ) -> PreparedPart:
        """The first half of :meth:`inspect`: find the part, align it, make the model tensors.

        Split out so the engine can crop the next part while the models run on this one.
        Never raises: a failure travels in ``PreparedPart.failure`` to :meth:`judge`.
        """
        t_start = time.monotonic()
        t0 = t_start if t_trigger is None else t_trigger
        try:
            loc = self.locate(image, box)
            if not loc.ok:
                raise PartNotFound(loc)
            params = self.align_params or AlignParams()
            loc = read_pose(image, loc, params)  # the pose read once, for both crops
            crops: dict[tuple[int, int], AlignedCrop] = {}  # (width, height) -> crop
            for spec in (self.ae_spec, self.cls_spec):
                if spec is not None and (spec.size, spec.crop_height) not in crops:
                    crops[spec.size, spec.crop_height] = align(
                        image, loc, params, spec.size, spec.crop_height, read=False)
            ae_x = cls_x = None
            if self.autoencoder is not None and self.ae_spec is not None:
                ae_x = prepare(crops[self.ae_spec.size, self.ae_spec.crop_height].crop, self.ae_spec)[None]
            if self.classifier is not None and self.cls_spec is not None:
                cls_x = prepare(crops[self.cls_spec.size, self.cls_spec.crop_height].crop,
                                self.cls_spec)[None]
            main_spec = self.ae_spec if self.ae_spec is not None else self.cls_spec
            assert main_spec is not None  # __init__ refuses an inspector with no model
            main = crops[main_spec.size, main_spec.crop_height]
            return PreparedPart(part_id, t0, (time.monotonic() - t_start) * 1000.0,
                                main, loc.box, ae_x, cls_x, image=image)
        except PartNotFound as exc:
            loc = exc.localization if hasattr(exc, "localization") else None
            why = getattr(loc, "message", "") or str(exc)
            status = getattr(loc, "status", "none")
            failure = PartResult(part_id=part_id, verdict=ERROR, error=f"part {status}: {why}",
                                 box=getattr(loc, "box", None), t_trigger=t0)
        except Exception as exc:  # a crop failure must not stop the line
            failure = PartResult(part_id=part_id, verdict=ERROR,
                                 error=f"{type(exc).__name__}: {exc}", t_trigger=t0)
        return PreparedPart(part_id, t0, (time.monotonic() - t_start) * 1000.0,
                            failure=failure, image=image)

    def judge(self, part: PreparedPart) -> PartResult:
        """The second half of :meth:`inspect`: both models and the decision on a cropped part.

        ``inspect_ms`` adds this half's time to the crop's (the part's own work, without
        any wait between the halves); ``latency_ms`` runs from the trigger to the verdict.
        """
        t_start = time.monotonic()
        result = part.failure if part.failure is not None else self._judge(part)
        now = time.monotonic()
        frame = result.frame
        if result.verdict == ERROR and frame is None and part.image is not None:
            frame = review_copy(part.image)  # every ERROR keeps what caused it
        return dataclasses.replace(result, latency_ms=(now - part.t_trigger) * 1000.0,
                                   inspect_ms=part.crop_ms + (now - t_start) * 1000.0,
                                   frame=frame)

    def _judge(self, part: PreparedPart) -> PartResult:
        try:
            t_models = time.monotonic()
            ae_raw = ae_norm = cls_raw = cls_norm = None
            ae_map = cls_map = None
            if self.autoencoder is not None and part.ae_input is not None:
                maps, scores = self.autoencoder.infer(part.ae_input)
                ae_raw = float(scores[0])
                ae_norm = float(self.autoencoder.normalized(ae_raw))
                ae_map = np.asarray(self.autoencoder.normalized_map(maps[0]), np.float32)
            if self.classifier is not None and part.cls_input is not None:
                p, cams = self.classifier.infer_map(part.cls_input)
                cls_raw = float(p[0])
                cls_norm = float(self.classifier.normalized(cls_raw))
                if cams is not None:
                    cls_map = np.asarray(self.classifier.normalized_map(cams[0]), np.float32)
            inference_ms = (time.monotonic() - t_models) * 1000.0
            d = self.decision
            sums = self.sums
            verdict = decide(ae_norm, cls_norm, d.rule, d.ae_threshold, d.cls_threshold, sums)
            main_crop = part.aligned
            assert main_crop is not None
            heatmap, source = deciding_map(verdict, ae_norm, cls_norm, ae_map, cls_map, d, sums)
            if heatmap is not None and heatmap.shape[:2] != main_crop.crop.shape[:2]:
                height, width = main_crop.crop.shape[:2]  # the classifier's crop size differs
                heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
            total = (sums.total(ae_norm, cls_norm, d.ae_threshold, d.cls_threshold)
                     if sums is not None and verdict != ERROR and ae_norm is not None
                     and cls_norm is not None else None)
            return PartResult(
                part_id=part.part_id, verdict=verdict, ae_score=ae_norm, ae_raw=ae_raw,
                cls_score=cls_norm, cls_raw=cls_raw, evidence=total, inference_ms=inference_ms,
                error="" if verdict != ERROR else "a score the decision rule needs is not finite "
                                                    "(or one the model cannot give)",
                crop=main_crop.crop, heatmap=heatmap, map_source=source,
                crop_to_frame=main_crop.crop_to_frame, box=part.box, t_trigger=part.t_trigger,
            )
        except Exception as exc:  # a model failure must not stop the line
            crop = part.aligned.crop if part.aligned is not None else None
            return PartResult(part_id=part.part_id, verdict=ERROR, crop=crop, box=part.box,
                              error=f"{type(exc).__name__}: {exc}", t_trigger=part.t_trigger)


def rule_refusal(rule: str, autoencoder: AutoencoderModel | None,
                 classifier: ClassifierModel | None) -> str:
    """Why these models cannot serve ``rule`` ("" when they can): the one check the
    inspector makes at start and the engineer's live change makes again."""
    have = {"autoencoder": autoencoder, "classifier": classifier}
    needs = ("autoencoder", "classifier") if rule in (Rule.EITHER, Rule.BOTH, Rule.SUM) else (rule,)
    missing = [k for k in needs if have.get(k) is None]
    if missing:
        unset = " and ".join(f"models.{k}" for k in missing)
        return (f"needs the {' and '.join(missing)} model, but the recipe does not set {unset}"
                " (or it is not loaded)")
    if rule == Rule.SUM:
        old = [m.path.name for m in (autoencoder, classifier)
               if m is not None and m.meta.evidence_spread is None]
        if old:
            return (f"the sum rule adds each model's evidence in units of its spread over good "
                    f"parts, which {' and '.join(old)} {'do' if len(old) > 1 else 'does'} not "
                    "carry (trained before it was measured): train again, or choose another rule")
    return ""


def evidence_of(decision: DecisionSection, autoencoder: AutoencoderModel | None,
                classifier: ClassifierModel | None) -> Evidence | None:
    """The ``sum`` rule's :class:`~station.decision.Evidence` from the two model files and
    the recipe (None for any other rule, or when a model lacks its spread)."""
    if decision.rule != Rule.SUM or autoencoder is None or classifier is None:
        return None
    ae, cls = autoencoder.meta, classifier.meta
    if ae.evidence_spread is None or cls.evidence_spread is None:
        return None
    return Evidence(ae.evidence_spread, cls.evidence_spread, decision.sum_threshold,
                    ae.evidence_offset, cls.evidence_offset)


def deciding_map(verdict: Verdict, ae_norm: float | None, cls_norm: float | None,
                 ae_map: np.ndarray | None, cls_map: np.ndarray | None,
                 decision: DecisionSection, sums: Evidence | None = None
                 ) -> tuple[np.ndarray | None, str]:
    """The map the operator is shown, and whose it is ("autoencoder", "classifier" or "").

    A REJECT shows the map of the model that decided it: a model the rule counts whose
    score reached its limit. When both did, the autoencoder's: its map says where the part
    differs from good parts pixel by pixel (on the development screws pixel AUROC 0.98-0.99
    and AUPRO 0.89-0.94, the classifier's Grad-CAM 0.94 and 0.75-0.81), and how far each is
    over its limit compares two scales (the classifier's is an odds ratio, which a sure
    classifier puts in the millions; on the old probability ratio it could barely pass 1.0,
    so this is what the window showed before too). ``station evaluate``'s gallery shows both
    maps. A deciding model with no map (a classifier file exported before ``cam``) or an
    all-zero one yields to the other one's. A PASS or an ERROR shows the autoencoder's map,
    as the station always did. Under ``sum`` the model that brought more of the evidence
    decided (its map first; the other's when it shows nothing).
    """
    fallback = (ae_map, "autoencoder") if ae_map is not None else (None, "")
    if verdict != REJECT:
        return fallback
    d = decision
    if d.rule == Rule.SUM and sums is not None and ae_norm is not None and cls_norm is not None:
        ae_part, cls_part = sums.parts(ae_norm, cls_norm, d.ae_threshold, d.cls_threshold)
        order = [("autoencoder", ae_map), ("classifier", cls_map)]
        for name, amap in (order if ae_part >= cls_part else order[::-1]):
            if _shows_something(amap):
                return amap, name
        return fallback
    counted = {Rule.EITHER: ("autoencoder", "classifier"), Rule.BOTH: ("autoencoder", "classifier"),
               Rule.AUTOENCODER: ("autoencoder",), Rule.CLASSIFIER: ("classifier",)}
    for name, score, limit, amap in (("autoencoder", ae_norm, d.ae_threshold, ae_map),
                                     ("classifier", cls_norm, d.cls_threshold, cls_map)):
        if (name in counted.get(Rule(d.rule), ()) and _shows_something(amap)
                and score is not None and np.isfinite(score) and score >= limit):
            return amap, name
    return fallback


def _shows_something(amap: np.ndarray | None) -> TypeGuard[np.ndarray]:
    """A map with something to see: Grad-CAM is all zero on a part where nothing speaks for
    a defect, and an empty map would tell the operator nothing."""
    return amap is not None and bool(np.nanmax(amap, initial=0.0) > 0.0)


@dataclass(frozen=True)
class PreparedPart:
    """A part between :meth:`Inspector.crop` and :meth:`Inspector.judge`."""

    part_id: str
    t_trigger: float
    crop_ms: float  # the crop half's own time
    aligned: AlignedCrop | None = None  # the crop the records and the UI show
    box: tuple[int, int, int, int] | None = None
    ae_input: np.ndarray | None = None  # [1, C, H, W] for the autoencoder
    cls_input: np.ndarray | None = None  # [1, C, H, W] for the classifier
    failure: PartResult | None = None  # set when no crop could be made (ERROR verdict)
    image: np.ndarray | None = None  # the frame (a reference): an ERROR keeps a copy of it


def load_line_model(path: Path | str, provider: str = "auto", threads: int = 0
                    ) -> AutoencoderModel | ClassifierModel:
    """Open a model for the line: like :func:`station.models.inference.load_model`, thread pools quiet.

    Why: both models run one after the other on the inspection thread, each session with its
    own intra-op thread pool. onnxruntime's workers spin after every run by default, so the
    autoencoder's pool burns the cores the classifier then needs (measured on 2 cores: the
    pair took 23 ms spinning, 7 ms not). With spinning off a pool's workers sleep between
    runs. Any failure to open falls back to ``load_model``, which raises the reasoned
    :class:`~station.models.metadata.ModelRefused`.
    """
    path = Path(path)
    providers = choose_providers(provider)  # no such provider: refused here, with its reason
    opts = session_options(threads, spinning=False)
    try:
        session = new_session(path, opts, providers)
    except Exception:
        return load_model(path, provider=provider, threads=threads)
    meta = from_session(session, path)
    session = session_for_architecture(session, meta, path, opts, providers)
    cls = AutoencoderModel if meta.kind == "autoencoder" else ClassifierModel
    return cls(session, meta, path)


_Model = TypeVar("_Model", AutoencoderModel, ClassifierModel)


def _load(path: str, expected: type[_Model], provider: str, threads: int) -> _Model | None:
    """The recipe's ``models.<kind>`` file ("" = none), refused when it is another kind."""
    if not path:
        return None
    kind = "autoencoder" if expected is AutoencoderModel else "classifier"
    model = load_line_model(Path(path), provider=provider, threads=threads)
    if model.kind != kind or not isinstance(model, expected):
        raise ModelRefused(path, f"it is set as models.{kind}, but its metadata says kind = "
                                 f"{model.kind!r}: expected a{'n' if kind[0] in 'aeiou' else ''} "
                                 f"{kind} model", key=f"models.{kind}")
    return model
