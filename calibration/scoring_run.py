"""Score folders of part images through the recipe's models, exactly as the station would.

Same undistortion, same localize/align parameters (the recipe's), same crop and
preprocessing (``station.vision.preprocess.crop_for_model``) and the same onnxruntime sessions
(``station.models.inference``); a threshold set on any other path would not hold on the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.report import CalibrationError, list_images, read_image
from station.models.inference import AutoencoderModel, ClassifierModel, load_model
from station.vision.align import PartNotFound
from station.vision.undistort import Undistorter

BATCH = 16


@dataclass
class ScoredFolder:
    """Raw scores per model kind for the images where a part was found."""

    scores: dict[str, np.ndarray]  # kind -> raw scores [N]
    names: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> why no score


Model = AutoencoderModel | ClassifierModel


def recipe_models(recipe, only: str = "both") -> dict[str, Model]:
    """The recipe's models (``kind -> loaded model``), refusing a missing or mislabelled file."""
    wanted = ("autoencoder", "classifier") if only == "both" else (only,)
    models: dict[str, Model] = {}
    for kind in wanted:
        path = getattr(recipe.models, kind, "")
        if not path:
            if only != "both":
                raise CalibrationError(f"{recipe.path}: models.{kind} is empty; nothing to calibrate")
            continue
        model = load_model(path, provider=recipe.models.provider, threads=recipe.models.threads)
        if model.kind != kind:
            raise CalibrationError(f"{path}: models.{kind} points to a {model.kind} model")
        models[kind] = model
    if not models:
        raise CalibrationError(f"{recipe.path}: [models] names no autoencoder or classifier to calibrate")
    return models


def size_notes(recipe, models: dict[str, Model]) -> list[str]:
    """Where the recipe's crop widths (what ``station train`` is told) differ from the model
    files': a note, not a refusal, because the line crops as each model file says, as this
    calibration does (``station run`` and ``replay`` accept such a recipe too)."""
    notes = []
    for kind, model in models.items():
        key, said = (("size", recipe.models.size) if kind == "autoencoder" else
                     ("classifier_size", recipe.models.classifier_size))
        trained = model.meta.preprocess_spec().size
        if said and said != trained:
            notes.append(f"note: models.{key} = {said} but {model.path.name} was trained on "
                         f"{trained} px crops; its file's crop is used, as on the line (the "
                         f"recipe's value is what station train is told next time)")
    return notes


def score_folder(folder: Path, recipe, models: dict[str, Model]) -> ScoredFolder:
    """Raw scores of every image in ``folder`` for every model (images without a part skipped)."""
    from station.vision.preprocess import crop_for_model

    undistorter = Undistorter.from_recipe(recipe)
    paths = list_images(folder)
    tensors: dict[str, list[np.ndarray]] = {k: [] for k in models}
    names: list[str] = []
    skipped: dict[str, str] = {}
    for path in paths:
        image = read_image(path)
        if undistorter is not None:
            image = undistorter.apply(image)
        try:
            per_model = {}
            for kind, model in models.items():
                spec = model.meta.preprocess_spec()
                # the crop the model was trained on (as the inspector does): its align wins
                _, tensor = crop_for_model(image, recipe.localize, model.meta.align_params(), spec)
                per_model[kind] = tensor
        except PartNotFound as exc:
            skipped[path.name] = str(exc)
            continue
        names.append(path.name)
        for kind, tensor in per_model.items():
            tensors[kind].append(tensor)
    if not names:
        raise CalibrationError(f"{folder}: no part found in any of its {len(paths)} images")
    scores = {}
    for kind, model in models.items():
        out = []
        step = model.batch_limit(BATCH) if isinstance(model, AutoencoderModel) else BATCH
        for i in range(0, len(names), step):
            batch = np.stack(tensors[kind][i : i + step])
            result = model.infer(batch)
            out.append(result[1] if isinstance(result, tuple) else result)
        scores[kind] = np.concatenate(out).astype(np.float64)
    return ScoredFolder(scores, names, skipped)
