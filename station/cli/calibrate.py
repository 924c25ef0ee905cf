"""``station calibrate <step>``: camera, roi, scale, threshold, check.

Each step measures something from images, writes the result into the recipe (the previous
recipe is kept as a timestamped backup) and leaves a short report (text, and a picture where
one helps) under ``--report`` or ``<recipe dir>/calibration/<step>-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from station.cli.numbers import amount, count
from station.cli.outputs import output_file

STEPS = ("camera", "roi", "scale", "threshold", "check")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--recipe", type=Path, required=True, help="recipe TOML file to update")
        p.add_argument("--report", type=Path, default=None,
                       help="report folder (default: <recipe dir>/calibration/<step>-<timestamp>/)")
        p.add_argument("--dry-run", action="store_true", help="report only; leave the recipe unchanged")

    p = sub.add_parser("camera", help="intrinsics and lens distortion from checkerboard images")
    common(p)
    p.add_argument("--images", type=Path, required=True, help="folder of checkerboard images")
    p.add_argument("--pattern", default="9x6", help="inner corners per row x per column (default 9x6)")
    p.add_argument("--square-mm", type=amount(above=0), required=True, help="checkerboard square size (mm)")

    p = sub.add_parser("roi", help="region of interest from images of parts (or set it explicitly)")
    common(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", type=Path, help="folder of frames with parts")
    src.add_argument("--image", type=Path, help="a single frame with a part")
    p.add_argument("--roi", default=None, help="set the ROI explicitly: x,y,w,h (frame pixels)")
    p.add_argument("--margin", type=amount(0), default=0.15,
                   help="margin around the found parts, as a fraction of the longest part (default 0.15)")
    p.add_argument("--crop-size", type=count(0, 4096), default=0,
                   help="model crop size for the crop-scale report (default: models.size or 256)")
    p.add_argument("--gui", action="store_true", help="adjust the ROI in a window with a live crop preview")

    p = sub.add_parser("scale", help="millimetres per pixel from a target of known size")
    common(p)
    p.add_argument("--image", type=Path, required=True, help="frame of the target at the parts' distance")
    p.add_argument("--target", choices=("checkerboard", "circle"), required=True)
    p.add_argument("--size-mm", type=amount(above=0), required=True, help="square size or circle diameter (mm)")
    p.add_argument("--pattern", default="9x6", help="checkerboard inner corners (default 9x6)")

    p = sub.add_parser("threshold", help="thresholds from the scores of good parts")
    common(p)
    p.add_argument("--good", type=Path, required=True, help="folder of good-part images")
    p.add_argument("--defects", type=Path, default=None, help="optional folder of defective-part images")
    p.add_argument("--frr", type=amount(above=0, below=1), default=0.005, help="false-reject rate to hold (default 0.005)")
    p.add_argument("--confidence", type=amount(above=0, below=1), default=0.95,
                   help="confidence that the FRR is held (default 0.95)")
    p.add_argument("--model", choices=("both", "autoencoder", "classifier"), default="both",
                   help="which model(s) to calibrate (default: both the recipe names)")

    p = sub.add_parser("check", help="image-quality reference (focus, brightness, contrast, glare)")
    common(p)
    p.add_argument("--images", type=Path, required=True, help="folder of good frames")
    p.add_argument("--out", type=output_file, default=None,
                   help="reference JSON (default: <recipe stem>.quality.json beside the recipe)")


def run(args: argparse.Namespace) -> int:
    from calibration.report import CalibrationError
    from station.config import RecipeError
    from station.models.metadata import ModelRefused
    from station.sources.datasets import DatasetError
    from station.vision.quality import QualityError
    from station.vision.undistort import UndistortError

    handlers = {"camera": _camera, "roi": _roi, "scale": _scale, "threshold": _threshold, "check": _check}
    try:
        return handlers[args.step](args)
    except (CalibrationError, RecipeError, ModelRefused, DatasetError, QualityError, UndistortError) as exc:
        print(f"station calibrate {args.step}: {exc}", file=sys.stderr)
        return 2


# --- shared ---------------------------------------------------------------------------------

def _load(args, check_files: bool = False):
    from station.config import load_recipe

    return load_recipe(args.recipe, check_files=check_files)


def _write(args, changes: dict, lines: list[str]) -> None:
    """Write ``changes`` into the recipe (unless --dry-run) and note it in the report lines."""
    from station.config import update_recipe

    if args.dry_run:  # checked as a write would be, so a refused value is refused here too
        update_recipe(args.recipe, changes, check_files=False, dry_run=True)
        lines.append("dry run: recipe not changed; would set " + ", ".join(sorted(changes)))
        return
    backup = update_recipe(args.recipe, changes, backup=True, check_files=False)
    lines.append(f"recipe updated: {args.recipe} ({', '.join(sorted(changes))})")
    if backup is not None:
        lines.append(f"previous recipe kept as {backup}")


def _finish(out: Path, lines: list[str]) -> int:
    from calibration.report import write_text

    path = write_text(out, lines)
    print("\n".join(lines))
    print(f"report: {path}")
    return 0


def _frames(args, recipe) -> list[tuple[str, np.ndarray]]:
    """Frames from --images/--image, undistorted when the recipe says so."""
    from calibration.report import CalibrationError, list_images, read_image
    from station.vision.undistort import Undistorter

    if getattr(args, "image", None):
        paths = [args.image]
    elif getattr(args, "images", None):
        paths = list_images(args.images)
    else:
        raise CalibrationError("give --images DIR or --image FILE")
    undistorter = Undistorter.from_recipe(recipe)
    frames = []
    for p in paths:
        image = read_image(p)
        frames.append((p.name, undistorter.apply(image) if undistorter is not None else image))
    return frames


# --- steps ----------------------------------------------------------------------------------

def _camera(args) -> int:
    import cv2

    from calibration.camera import calibrate_camera, draw_coverage, load_views, parse_pattern
    from calibration.report import list_images, report_dir, write_image
    from station.vision.undistort import Undistorter

    _load(args)  # refuse a broken recipe before the work
    pattern = parse_pattern(args.pattern)
    views = load_views(list_images(args.images))
    calib = calibrate_camera(views, pattern, args.square_mm)
    out = report_dir(args.recipe, "camera", args.report)
    lines = [f"camera calibration from {args.images} (pattern {args.pattern}, squares {args.square_mm} mm)"]
    lines += calib.report_lines()
    write_image(out, "coverage.png", draw_coverage(calib))
    und = Undistorter.from_intrinsics(calib.camera_matrix, calib.dist_coeffs, calib.image_size)
    first = views[0][1]
    side = np.hstack([first, und.apply(first)])
    write_image(out, "undistorted.png", cv2.cvtColor(side, cv2.COLOR_GRAY2BGR))
    lines.append("pictures: coverage.png (corners over the field of view), undistorted.png (before | after)")
    _write(args, {
        "undistort.enabled": True,
        "undistort.camera_matrix": [[float(v) for v in row] for row in calib.camera_matrix],
        "undistort.dist_coeffs": [float(v) for v in calib.dist_coeffs],
        "undistort.image_size": list(calib.image_size),
    }, lines)
    return _finish(out, lines)


def _roi(args) -> int:
    import dataclasses

    from calibration.report import CalibrationError, report_dir, write_image
    from calibration.roi import check_roi, draw_roi, parse_roi, propose_roi
    from station.config.checks import recipe_frame_size

    recipe = _load(args)
    crop_size = args.crop_size or recipe.models.size or 256
    out = report_dir(args.recipe, "roi", args.report)
    lines: list[str] = []
    frames = _frames(args, recipe) if (args.images or args.image) else []
    if args.roi is None and not frames:
        raise CalibrationError("give --images DIR or --image FILE to propose an ROI, or --roi x,y,w,h")
    locs = []
    if args.roi is not None:
        roi = parse_roi(args.roi)
        lines.append(f"ROI set explicitly: {roi}")
    else:
        proposal = propose_roi(frames, recipe.localize, recipe.align, crop_size, args.margin)
        roi = proposal.roi
        locs = list(proposal.found.values())
        lines.append(f"ROI proposed from {len(frames)} frame(s)")
        lines += proposal.report_lines()
    if frames:
        h, w = frames[0][1].shape[:2]
        check_roi(roi, (w, h))
    elif recipe_frame_size(recipe) is None:  # the recipe checks it against a size it fixes
        lines.append("note: not checked against a frame (this recipe does not fix the frame "
                     "size): give --image FILE to check the ROI and see it drawn")
    if args.gui:
        if not frames:
            raise CalibrationError("--gui needs --image or --images to show")
        from calibration._qt_roi import edit_roi

        chosen = edit_roi(frames[0][1], roi, recipe.localize, recipe.align, crop_size)
        if chosen is None:
            print("ROI dialog cancelled: recipe not changed")
            return 1
        if chosen != roi:
            lines.append(f"ROI adjusted in the dialog: {chosen}")
        roi = chosen
    if frames:
        write_image(out, "roi.png", draw_roi(frames[0][1], roi, locs))
        # Confirm the chosen ROI still finds the part in every frame.
        from station.vision.localize import localize

        params = dataclasses.replace(recipe.localize, roi=roi)
        lost = [name for name, img in frames if not localize(img, params).ok]
        if lost:
            lines.append(f"WARNING: inside the ROI no usable part is found in {len(lost)} frame(s): "
                         + ", ".join(lost[:10]))
        lines.append("picture: roi.png (ROI green, parts found orange)")
    _write(args, {"localize.roi": list(roi)}, lines)
    return _finish(out, lines)


def _scale(args) -> int:
    from calibration.camera import parse_pattern
    from calibration.report import report_dir, write_image
    from calibration.scale import scale_from_checkerboard, scale_from_circle

    recipe = _load(args)
    (_, image), = _frames(args, recipe)
    if args.target == "checkerboard":
        est = scale_from_checkerboard(image, parse_pattern(args.pattern), args.size_mm)
    else:
        est = scale_from_circle(image, args.size_mm)
    out = report_dir(args.recipe, "scale", args.report)
    lines = [f"pixel scale from {args.image}"] + est.report_lines()
    if est.overlay is not None:
        write_image(out, "target.png", est.overlay)
        lines.append("picture: target.png (what was measured)")
    if not recipe.undistort.enabled:
        lines.append("note: undistortion is off in this recipe; run `calibrate camera` first for "
                     "a scale that holds across the field")
    _write(args, {"scale.mm_per_px": float(est.mm_per_px)}, lines)
    return _finish(out, lines)


def _threshold(args) -> int:
    from calibration.report import report_dir
    from calibration.scoring_run import recipe_models, score_folder, size_notes
    from calibration.threshold import detection_rate, histogram_png, propose_threshold
    from station.config.schema import AUTOENCODER_THRESHOLD_MAX, CLASSIFIER_THRESHOLD_MAX
    from station.models.scoring import check_threshold

    recipe = _load(args, check_files=True)
    models = recipe_models(recipe, args.model)
    good = score_folder(args.good, recipe, models)
    defects = score_folder(args.defects, recipe, models) if args.defects else None
    out = report_dir(args.recipe, "threshold", args.report)
    lines = [f"threshold calibration: good parts from {args.good}"
             + (f", defective from {args.defects}" if args.defects else "")]
    lines += size_notes(recipe, models)
    for folder in (good, defects):
        if folder is not None and folder.skipped:
            lines.append(f"WARNING: {len(folder.skipped)} image(s) without a usable part were skipped: "
                         + "; ".join(f"{n}: {why}" for n, why in list(folder.skipped.items())[:5]))
    changes: dict[str, float] = {}
    for kind, model in models.items():
        scores = good.scores[kind]
        prop = propose_threshold(scores, args.frr, args.confidence)
        own = float(model.meta.threshold)
        normalized = float(model.normalized(prop.threshold))  # on the model's own scale
        lines.append(f"--- {kind} ({model.path.name}) ---")
        lines += prop.report_lines()
        lines.append(f"model's own threshold (raw): {own:.6g}; proposed normalized threshold: "
                     f"{normalized:.4f} (decision.{kind}_threshold)")
        lines.append(f"good parts above the model's own threshold: {np.mean(scores > own):.2%}")
        bad = defects.scores[kind] if defects is not None else None
        if bad is not None:
            lines.append(detection_rate(bad, prop.threshold).report_line())
        histogram_png(out / f"{kind}_scores.png", scores, prop.threshold,
                      f"{kind}: good-part scores, FRR target {args.frr:.3%}", bad, own)
        lines.append(f"picture: {kind}_scores.png")
        top = CLASSIFIER_THRESHOLD_MAX if kind == "classifier" else AUTOENCODER_THRESHOLD_MAX
        try:  # an odds scale cannot tell apart probabilities beyond its clip (1e-12 of 0 or 1)
            check_threshold(prop.threshold, model.meta.normalization)
        except ValueError as exc:
            lines.append(f"WARNING: proposed raw threshold {prop.threshold:.6g}: {exc}; not written")
            continue
        if not 0 < normalized <= top:
            lines.append(f"WARNING: normalized threshold {normalized:.4g} is outside (0, {top:g}]; "
                         "not written")
            continue
        if recipe.decision.rule == "sum":
            lines.append("not written: the recipe's rule is sum, which decides by the two "
                         "models' evidence added (decision.sum_threshold, proposed when both "
                         "models are calibrated)")
            continue
        changes[f"decision.{kind}_threshold"] = float(normalized)
    if recipe.decision.rule == "sum" and len(models) == 2:
        changes.update(_sum_proposal(args, recipe, models, good, defects, out, lines))
    if changes:
        _write(args, changes, lines)
    return _finish(out, lines)


def _sum_proposal(args, recipe, models, good, defects, out: Path, lines: list[str]) -> dict:
    """Rule sum: decision.sum_threshold for the FRR target, on the evidence the line adds
    (each model's score at the recipe's limits, its spread and offset from its file)."""
    from calibration.threshold import detection_rate, histogram_png, propose_threshold
    from station.config.schema import SUM_THRESHOLD_MAX
    from station.pipeline.inspector import evidence_of

    sums = evidence_of(recipe.decision, models["autoencoder"], models["classifier"])
    lines.append("--- sum (decision.rule = sum) ---")
    if sums is None:
        lines.append("WARNING: a model file carries no evidence spread (trained before the sum "
                     "rule): train again; decision.sum_threshold not written")
        return {}
    d = recipe.decision

    def totals(folder) -> np.ndarray:
        norm = {k: models[k].normalized(folder.scores[k]) for k in ("autoencoder", "classifier")}
        return np.array([sums.total(a, c, d.ae_threshold, d.cls_threshold)
                         for a, c in zip(norm["autoencoder"], norm["classifier"], strict=True)])

    good_total = totals(good)
    prop = propose_threshold(good_total, args.frr, args.confidence)
    lines += prop.report_lines()
    lines.append(f"the recipe's sum threshold: {d.sum_threshold:+.4f} (0 = the one chosen at "
                 f"training); proposed: {prop.threshold:+.4f} (decision.sum_threshold)")
    bad = totals(defects) if defects is not None else None
    if bad is not None:
        lines.append(detection_rate(bad, prop.threshold).report_line())
    histogram_png(out / "sum_scores.png", good_total, prop.threshold,
                  f"sum: good-part evidence, FRR target {args.frr:.3%}", bad, d.sum_threshold,
                  own_label="recipe's", x_label="evidence added")
    lines.append("picture: sum_scores.png")
    if not -SUM_THRESHOLD_MAX <= prop.threshold <= SUM_THRESHOLD_MAX:
        lines.append(f"WARNING: {prop.threshold:+.4g} is outside [-{SUM_THRESHOLD_MAX:g}, "
                     f"{SUM_THRESHOLD_MAX:g}]; not written")
        return {}
    return {"decision.sum_threshold": float(prop.threshold)}


def _check(args) -> int:
    from calibration.check import build_reference, self_check
    from calibration.report import report_dir, write_image
    from calibration.roi import draw_roi

    recipe = _load(args)
    frames = _frames(args, recipe)
    roi = recipe.localize.roi
    reference = build_reference([f for _, f in frames], roi)
    recipe_path = Path(args.recipe).resolve()
    target = args.out if args.out is not None else recipe_path.with_name(f"{recipe_path.stem}.quality.json")
    out = report_dir(args.recipe, "check", args.report)
    limits = recipe.quality
    lines = [f"image-quality reference from {len(frames)} frame(s) in {args.images}"]
    lines += self_check(reference, [f for _, f in frames], limits, [n for n, _ in frames])
    h, w = frames[0][1].shape[:2]
    write_image(out, "region.png", draw_roi(frames[0][1], reference.roi or (0, 0, w, h)))
    lines.append("picture: region.png (the region measured, on the first frame)")
    if args.dry_run:
        reference.save(out / "quality_reference.json")
        lines.append(f"dry run: reference written to the report folder only ({out / 'quality_reference.json'})")
        return _finish(out, lines)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    reference.save(target)
    lines.append(f"reference written: {target}")
    try:
        stored = str(target.resolve().relative_to(recipe_path.parent))
    except ValueError:
        stored = str(target.resolve())
    _write(args, {"quality.reference": stored, "quality.enabled": True}, lines)
    return _finish(out, lines)
