"""``station evaluate``: metrics JSON (and optional report PNGs) for a model folder.

No recipe is needed: every model file's metadata carries the localize, align and preprocess
settings it was trained with, and each model's crops are made with exactly those.

The models run through ``station.models.inference``; needs the ``train`` extra for the evaluation
code's home in ``training/`` (imported lazily).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from station.cli.numbers import count
from station.cli.outputs import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, required=True, help="model folder (station train --out)")
    parser.add_argument("--data", type=Path, required=True, help="data set folder")
    parser.add_argument("--json", type=output_file, required=True, help="write the metrics here")
    parser.add_argument("--report", type=Path, default=None, help="write report PNGs into this folder")
    parser.add_argument("--folds", type=count(0), default=None,
                        help="cross-validation folds (as given to station train)")
    parser.add_argument("--fold", type=count(0), default=None, help="the held-out fold to evaluate")
    parser.add_argument("--good-from-train", action="store_true",
                        help="also score train good images the models never used (those split.json "
                             "held aside; on another data set, all of its train good)")
    parser.add_argument("--int8", action="store_true",
                        help="report on the *.int8.onnx copies (each is checked against its "
                             "float model either way)")
    parser.add_argument("--keep-int8", action="store_true",
                        help="keep an int8 copy that changes image AUROC by more than 0.005 or "
                             "flips a verdict on the evaluated images (default: it is deleted)")
    parser.add_argument("--rule", default=None,
                        choices=("either", "both", "autoencoder", "classifier", "sum"),
                        help="fusion rule (default: the model folder's recipe_fragment.toml)")
    parser.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=count(0), default=0, help="onnxruntime threads (0 = auto)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for cached crops (default: MODELDIR/cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def run(args: argparse.Namespace) -> int:
    from station.cli import require_torch

    require_torch("evaluate")
    from station.models.metadata import ModelRefused
    from training.evaluate import EvaluationError, evaluate
    from training.report import per_type_table

    if (args.folds is None) != (args.fold is None):
        print("station evaluate: give --folds and --fold together", file=sys.stderr)
        return 2
    for line in crop_lines(args.models):
        print(line)
    try:
        result = evaluate(args.models, args.data, folds=args.folds, fold=args.fold,
                          good_from_train=args.good_from_train,
                          variant="int8" if args.int8 else "float", rule=args.rule,
                          provider=args.provider, threads=args.threads, cache_dir=args.cache,
                          report_dir=args.report, progress=not args.quiet,
                          prune_int8=not args.keep_int8)
    except (EvaluationError, ModelRefused, ValueError) as exc:
        print(f"station evaluate: {exc}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    meta = result["meta"]
    print(f"{meta['images']} images ({meta['n_good']} good, {meta['n_defect']} defective)")
    for kind in ("autoencoder", "classifier", "fused"):
        b = result[kind]
        if b is None:
            continue
        extra = (f" pixel AUROC {_fmt(b.get('pixel_auroc'))} AUPRO {_fmt(b.get('aupro'))}"
                 if "pixel_auroc" in b else "")
        print(f"{kind:>12}: AUROC {_fmt(b['image_auroc'])} F1 {_fmt(b['f1'])} "
              f"precision {_fmt(b['precision'])} recall {_fmt(b['recall'])}{extra}")
    for line in per_type_table(result) + result["int8_check"]["summary"]:
        print(line)
    for line in _not_scored(result):
        print(line)
    print(f"wrote {args.json}")
    nothing = _scored_nothing(result)
    if nothing:  # the metrics of all-ERROR verdicts say nothing about the models
        print(f"station evaluate: {nothing}; are these images of the product the models in "
              f"{args.models} learned?", file=sys.stderr)
        return 2
    return 0


def _scored_nothing(result: dict) -> str | None:
    """What no model could score a single image of (another product's images, most
    likely: the models' recipe finds no part in them), or None."""
    images = result["meta"]["images"]
    kinds = [k for k in ("autoencoder", "classifier") if result.get(k)]
    if not kinds or any(result[k].get("not_found", 0) < images for k in kinds):
        return None
    why = (result[kinds[0]].get("not_found_why") or [""])[0]
    return f"no model scored any of the {images} images (first: {why})"


def _not_scored(result: dict) -> list[str]:
    """A warning per model that could not score some images (part not found, or the file
    unreadable), with the first reason: those images count as ERROR verdicts."""
    lines = []
    for kind in ("autoencoder", "classifier"):
        b = result.get(kind)
        if b and b.get("not_found"):
            why = (b.get("not_found_why") or [""])[0]
            lines.append(f"warning: {kind}: {b['not_found']} image(s) not scored, each an ERROR "
                         f"verdict (part not found, or the file unreadable); first: {why}")
    return lines


def crop_lines(models: Path) -> list[str]:
    """One line per model of the folder: the crop its metadata makes (what evaluation uses)."""
    from station.models.inference import read_metadata
    from station.models.metadata import ModelRefused

    lines = []
    for kind in ("autoencoder", "classifier"):
        path = models / f"{kind}.onnx"
        if not path.is_file():
            continue
        try:
            meta = read_metadata(path)
        except ModelRefused:
            continue  # evaluate() refuses it with the reason
        spec, loc, al = meta.preprocess_spec(), meta.localize_params(), meta.align_params()
        lines.append(f"{kind}: crops {spec.size}x{spec.crop_height} px "
                     f"({'colour' if spec.color == 'rgb' else 'grey'}), localize {loc.method}, "
                     f"align {al.crop_mode} (orientation {al.orientation}), from its metadata")
    return lines
