"""The recipe fragment ``station train`` writes beside its models: what to paste into the
product's recipe so the station runs them as they were trained and judged."""

from __future__ import annotations

from pathlib import Path

from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams


def write_fragment(out: Path, files: dict[str, str], rule: str, ae_t: float, cls_t: float,
                   loc: LocalizeParams, align: AlignParams) -> Path:
    """``recipe_fragment.toml`` in ``out``: the model files, the decision and the crop
    (localize, align) the models were trained with, to paste into the product's recipe. One
    model trained: it alone decides."""
    import tomlkit

    doc = tomlkit.document()
    for line in (
            "Written by station train. Set these keys in the product's recipe, in its own",
            "[models], [decision], [localize] and [align] tables (a second [models] table is a",
            "TOML error). The model paths are relative to this folder,",
            f"{out.resolve().as_posix()}:",
            "in the recipe give them relative to the recipe's folder, or absolute.",
            "[localize] and [align] are the crop the models were trained with."):
        doc.add(tomlkit.comment(line))
    models = tomlkit.table()
    for kind in ("autoencoder", "classifier"):
        models.add(kind, files.get(kind, ""))
    doc.add("models", models)
    dec = tomlkit.table()
    if len(files) == 1:  # one model trained: it alone decides
        rule = next(iter(files))
    dec.add("rule", rule)
    dec.add("autoencoder_threshold", round(ae_t, 4))
    dec.add("classifier_threshold", round(cls_t, 4))
    if len(files) == 2:  # rule sum: the model files carry the threshold chosen at training
        dec.add("sum_threshold", 0.0)
    dec.add("on_error", "reject")
    doc.add("decision", dec)
    lt = tomlkit.table()
    for k, v in loc.to_dict().items():
        lt.add(k, v)
    doc.add("localize", lt)
    at = tomlkit.table()
    for k, v in align.to_dict().items():
        if k not in ("template", "template_width"):  # learned: the models carry it
            at.add(k, v)
    if align.template:
        at.add(tomlkit.comment(f"registration's {align.template_width} px wide template of "
                               "the good parts is in the models' metadata"))
    doc.add("align", at)
    path = out / "recipe_fragment.toml"
    path.write_text(tomlkit.dumps(doc))
    return path
