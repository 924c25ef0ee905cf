"""``station train``: train the autoencoder and the classifier; write MODELDIR.

Needs the ``train`` extra (torch); imported lazily so a station-only install says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from station.cli.numbers import amount, count

DEFAULT_SIZE = 128  # crop width (px) when neither --size nor the recipe's models.size says


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", type=Path, default=None,
                        help="the product's recipe: its [localize], [align] and "
                             "camera.pixel_format decide the crop (without it: a dark "
                             "elongated part on a light plate, square grey crops)")
    parser.add_argument("--data", type=Path, required=True,
                        help="data set folder (MVTec layout, plain good/ defect/ folders, or CSV)")
    parser.add_argument("--out", type=Path, required=True,
                        help="model folder to write (autoencoder.onnx, classifier.onnx, ...)")
    parser.add_argument("--only", choices=("autoencoder", "classifier"),
                        help="train just this model")
    parser.add_argument("--epochs", type=count(1), default=None,
                        help="epochs for each model (default: model defaults, cut by --minutes)")
    parser.add_argument("--size", type=count(8, 4096), default=None,
                        help="autoencoder crop width in px (height = align.crop_aspect x width, "
                             f"rounded up; default: the recipe's models.size, else {DEFAULT_SIZE})")
    parser.add_argument("--cls-size", type=count(32, 4096), default=None,
                        help="classifier crop width in px (height from align.crop_aspect, "
                             "rounded up to a multiple of 32; default: the recipe's "
                             f"models.classifier_size, else {DEFAULT_SIZE})")
    parser.add_argument("--minutes", type=amount(above=0), default=24.0,
                        help="time budget for the training loops of both models together")
    _add_ae_arguments(parser)
    parser.add_argument("--width", type=float, default=None,
                        help="classifier width multiplier (1.0 = VGG16 proper; default: the "
                             "recipe's models.classifier_width, else the classifier's "
                             "CPU-friendly 0.125)")
    parser.add_argument("--classifier-members", type=count(1), default=None, metavar="N",
                        help="classifiers trained one after the other, each in its share of "
                             "the budget, and averaged into one model file (default: the "
                             "recipe's models.classifier_members, else 2; each costs one "
                             "network's time per part)")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="torchvision vgg16 state dict file to start the classifier from")
    parser.add_argument("--folds", type=count(0), default=0,
                        help="cross-validation folds over the data set's test images (0 = none)")
    parser.add_argument("--fold", type=count(0), default=0,
                        help="the fold held out for evaluation (never trained or thresholded on)")
    parser.add_argument("--seed", type=count(0), default=0)
    parser.add_argument("--rule", default=None,
                        choices=("auto", "either", "both", "autoencoder", "classifier", "sum"),
                        help="fusion rule written into the recipe fragment (default: the "
                             "recipe's decision.rule when it says sum, else auto = either; "
                             "one model alone only when the other ranks the validation images "
                             "little better than chance)")
    parser.add_argument("--max-false-reject", type=float, default=None, metavar="SHARE",
                        help="the largest share of good validation parts each model's "
                             "threshold may reject (default 0.05; the two models' false "
                             "rejects add up under 'either'); the classifier's threshold is "
                             "the lowest within it, the autoencoder's the F1-optimal")
    parser.add_argument("--defect-train-share", type=float, default=None, metavar="SHARE",
                        help="share of the labeled defective images the classifier trains on; "
                             "the rest choose the thresholds (default: the recipe's "
                             "models.defect_train_share, else 0.5)")
    parser.add_argument("--good-train-share", type=float, default=None, metavar="SHARE",
                        help="share of the labeled good images (photographed with the defects) "
                             "the models learn from: the autoencoder's bank and the "
                             "classifier's good examples; the rest choose the thresholds "
                             "(default: the recipe's models.good_train_share, else 0.7 for "
                             "a fixed region, 0 for a found part)")
    parser.add_argument("--cls-transplant", type=float, default=None, metavar="SHARE",
                        help="share of the classifier's real-defect slots that show a real "
                             "defect moved onto another good part, where the data set has its "
                             "mask (default: 0.5 for a fixed region, 0 for a found part; "
                             "0 = each defect only as photographed)")
    parser.add_argument("--flips", default=None,
                        choices=("none", "horizontal", "vertical", "both"),
                        help="mirror images of a good part that are good parts too: the "
                             "classifier trains on them and averages over them (default: the "
                             "recipe's models.flips, else none)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="torch device (auto = CUDA when present)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for cached crops (default: MODELDIR/cache)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 copies")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_ae_arguments(parser: argparse.ArgumentParser) -> None:
    """The autoencoder's knobs (defaults: the training defaults for the product's kind)."""
    parser.add_argument("--ae-share", type=float, default=None,
                        help="share of --minutes the autoencoder gets when both models train "
                             "(default: the training default)")
    parser.add_argument("--ae-reference", choices=("neighbours", "network"), default=None,
                        help="what the autoencoder reconstructs a part from: the nearest good "
                             "training parts (default: nothing to train) or its trained network")
    parser.add_argument("--ae-topk", type=float, default=None, metavar="SHARE",
                        help="score a part by the mean of its SHARE most different pixels "
                             "(e.g. 0.002: thin long defects such as scratches) instead of the "
                             "most different one (the default)")
    parser.add_argument("--ae-neighbours", type=int, default=None, metavar="K",
                        help="nearest good parts each region of a crop is compared with "
                             "(default 5)")
    parser.add_argument("--ae-jitter", type=int, default=None, metavar="PX",
                        help="how far each pixel of a good neighbour may move to match (default: "
                             "1 for a found part, 6 for a fixed region)")
    parser.add_argument("--ae-match-level", choices=("on", "off"), default=None,
                        help="give each good neighbour the crop's brightness and contrast "
                             "before comparing (default: on for a fixed region, whose batches "
                             "differ in level; off for a found part)")
    parser.add_argument("--ae-regions", default=None, metavar="ROWSxCOLS",
                        help="cut the crop into ROWS x COLS regions that each find their own "
                             "nearest good parts, e.g. 1x6 (default: a found part along its "
                             "length, stretches about half the crop's height long; a fixed "
                             "region whole)")


def run(args: argparse.Namespace) -> int:
    from station.cli import require_torch

    require_torch("train")
    from station.config import RecipeError
    from station.sources.datasets import DatasetError
    from training.train import TrainOptions, train

    try:
        product = product_crop(args.recipe)
    except RecipeError as exc:
        print(f"station train: {exc}", file=sys.stderr)
        return 2
    recipe_size, recipe_cls_size = product.pop("size"), product.pop("cls_size")
    recipe_rule = product.pop("rule", "auto")
    rule = args.rule or recipe_rule
    size = args.size or recipe_size or DEFAULT_SIZE
    cls_size = args.cls_size or recipe_cls_size or DEFAULT_SIZE
    opts = TrainOptions(
        data=args.data, out=args.out, only=args.only, size=size, cls_size=cls_size,
        epochs=args.epochs, minutes=args.minutes, pretrained=args.pretrained,
        folds=args.folds, fold=args.fold, seed=args.seed, rule=rule, device=args.device,
        cache=args.cache, int8=not args.no_int8, progress=not args.quiet, **product,
    )
    # the command line wins over the recipe
    opts.classifier_flips = args.flips or opts.classifier_flips
    if args.width is not None:
        opts.width = args.width
    if args.classifier_members is not None:
        opts.classifier_members = args.classifier_members
    problem = _apply_split_args(args, opts) or _apply_ae_args(args, opts)
    if problem:
        print(f"station train: {problem}", file=sys.stderr)
        return 2
    try:
        summary = train(opts)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"station train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("decision", "seconds") if k in summary}))
    print(f"wrote {args.out} (recipe fragment: {summary['recipe_fragment']})")
    return 0


def _apply_split_args(args: argparse.Namespace, opts: Any) -> str | None:
    """The threshold cap, the defects' split, the classifier's members and transplants into
    ``opts``; a one-line problem, or None."""
    if args.max_false_reject is not None:
        if not 0.0 <= args.max_false_reject < 1.0:
            return f"--max-false-reject {args.max_false_reject}: expected a share from 0 to 1"
        opts.max_false_reject = args.max_false_reject
    from station.config.schema import DEFECT_TRAIN_SHARE_MAX

    # the labeled images learned from (the rest must be enough to choose thresholds with)
    for name, above_zero in (("defect_train_share", True), ("good_train_share", False)):
        value = getattr(args, name)
        if value is None:
            continue
        if not (value > 0.0 if above_zero else value >= 0.0) or not value <= DEFECT_TRAIN_SHARE_MAX:
            low = "above 0 and up" if above_zero else "from 0"
            return (f"--{name.replace('_', '-')} {value}: expected a share {low} to "
                    f"{DEFECT_TRAIN_SHARE_MAX}")
        setattr(opts, name, value)
    if args.cls_transplant is not None:
        if not 0.0 <= args.cls_transplant <= 1.0:
            return f"--cls-transplant {args.cls_transplant}: expected a share from 0 to 1"
        opts.classifier_transplant = args.cls_transplant
    return None


def _apply_ae_args(args: argparse.Namespace, opts: Any) -> str | None:
    """The autoencoder's command-line knobs into ``opts``; a one-line problem, or None."""
    if args.ae_share is not None:
        if not 0.0 < args.ae_share < 1.0:
            return f"--ae-share {args.ae_share}: expected a share between 0 and 1"
        opts.ae_share = args.ae_share
    if args.ae_reference:
        opts.ae.reference = args.ae_reference
    if args.ae_topk is not None:
        if not 0.0 < args.ae_topk < 0.5:
            return f"--ae-topk {args.ae_topk}: expected a share between 0 and 0.5"
        opts.ae.score, opts.ae.topk_frac = "topk", args.ae_topk
    for flag, field, low, high, unit in (("ae_neighbours", "neighbours", 1, 64, ""),
                                         ("ae_jitter", "jitter_px", 0, 16, " px")):
        value = getattr(args, flag)
        if value is not None:
            if not low <= value <= high:
                return f"--{flag.replace('_', '-')} {value}: expected {low} to {high}{unit}"
            setattr(opts.ae, field, value)
    if args.ae_match_level is not None:
        opts.ae.photometric = args.ae_match_level == "on"
    if args.ae_regions is not None:
        rows, x, cols = args.ae_regions.lower().partition("x")
        if not (x and rows.isdigit() and cols.isdigit() and 1 <= int(rows) <= 16
                and 1 <= int(cols) <= 16):
            return f"--ae-regions {args.ae_regions!r}: expected ROWSxCOLS, each 1 to 16 (e.g. 1x6)"
        opts.ae.regions = (int(rows), int(cols))
    return None


def product_crop(recipe_path: Path | None) -> dict[str, Any]:
    """What a recipe says about the crop: its [localize] and [align] tables, its
    camera.pixel_format, models.size and models.classifier_size (the two crop widths; 0 = not
    said), models.defect_train_share (when said), models.good_train_share, models.flips, the
    classifier's members and width (when said) and decision.rule when it is sum. Without a
    recipe the built-in screw defaults, with a note on stderr."""
    if recipe_path is None:
        print("note: no --recipe: the built-in crop (a dark elongated part on a light plate, "
              "head left, square grey crops); give --recipe for any other product",
              file=sys.stderr)
        return {"size": 0, "cls_size": 0}
    from station.config import load_recipe

    recipe = load_recipe(recipe_path, check_files=False)
    product = {"localize": recipe.localize, "align": recipe.align,
               "pixel_format": recipe.camera.pixel_format, "size": recipe.models.size,
               "cls_size": recipe.models.classifier_size}
    if recipe.models.defect_train_share:  # else TrainOptions' default
        product["defect_train_share"] = recipe.models.defect_train_share
    if recipe.models.good_train_share >= 0:  # else TrainOptions' default for the kind
        product["good_train_share"] = recipe.models.good_train_share
    product["classifier_flips"] = recipe.models.flips
    if recipe.decision.rule == "sum":  # its threshold is chosen at training, with the models
        product["rule"] = "sum"
    if recipe.models.classifier_members:  # else the classifier's default
        product["classifier_members"] = recipe.models.classifier_members
    if recipe.models.classifier_width:
        product["width"] = recipe.models.classifier_width
    return product
