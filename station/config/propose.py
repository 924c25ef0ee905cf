"""Propose a recipe from a folder of good images: what kind of product, and how to crop it.

``station init-recipe`` measures a sample of the images with the station's own code
(:func:`station.vision.localize.localize`, the one segmentation) and decides:

* a part to find against a background (``localize.method = "segment"``) when one part is
  found in most images with one polarity, else the image is the part (``"fixed"``, the
  whole image stretched onto the crop: a fixtured part or a surface);
* grey or colour (``camera.pixel_format``) from how far the colour channels differ;
* the polarity (dark part on a light background, or light on dark);
* how far apart the pieces of one part may lie (``localize.merge_gap_frac``), when a part
  with a band as light as the background falls apart into pieces at the default;
* orientation (``head`` when an elongated part has a clearly wider end in nearly every
  image; otherwise the turn that makes the parts' crops most alike pixel by pixel:
  ``axis``, ``axis_pattern`` (the ends told apart by the pattern the parts share, learned
  here into ``align.pattern``), ``pattern`` (a round part turned by that pattern alone), or,
  for a shorter part that no turn makes clearly more alike, ``none``);
* the crop's aspect (from the found parts' width / length, or the images' height / width)
  and its width in pixels (the part's own resolution, capped for a CPU training budget).

Every decision carries what was measured, written as a comment beside the key, so the
engineer checks the proposal rather than trusting it. The module is here, not in
``training/``, because it needs neither torch nor Qt: a station-only install can propose a
recipe, and what it measures is what the station will do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.sources.datasets import IMAGE_EXTENSIONS, DatasetError, load_image
from station.vision import pattern
from station.vision.align import CROP_MULTIPLE, AlignParams, align, crop_height, pattern_patch
from station.vision.gray import to_gray, to_uint8
from station.vision.localize import Localization, LocalizeParams, localize

SAMPLE = 60  # images measured (evenly spread over the sorted folder)
FOUND_SHARE = 0.8  # a part found in at least this share of images: a part to find
COLOUR_LEVELS = 6.0  # mean channel spread (grey levels) above which images are colour
ELONGATED = 1.6  # length / width at or above which a part is turned onto its axis
LEVEL_GAIN = 0.9  # a shorter part is turned when that leaves its crops' per-pixel
#                   spread below this share of the spread unturned
# orientations tried, the steadiest first: a long part's axis is precise and its pattern
# need only tell the ends apart; a short part's axis may be little more than noise (a disc a
# little out of round), so its pattern, which reads the whole turn, comes before the two
LONG_TURNS = ("axis", "axis_pattern")
SHORT_TURNS = ("axis", "pattern", "axis_pattern")
FIXTURED_DEG = 10.0  # spread of the parts' axes (circular std) below which they lie fixtured
MERGE_GAPS = (0.03, 0.06, 0.1, 0.15)  # localize.merge_gap_frac tried, the default first
HEAD_RATIO = 1.25  # wide end / narrow end at or above which the head is recognisable
HEAD_SHARE = 0.9  # ... in this share of the parts: orientation = head
MARGIN = 1.25  # crop height = this x the part's width (the background ring must stay clear)
CROP_SCALE = 1.1  # crop width = this x the part's length
MAX_CROP_AREA = 65536  # px: 256 x 256, what the training defaults afford on 2 CPU cores
MIN_WIDTH, MAX_WIDTH = 64, 512
POLARITIES = ("dark_on_light", "light_on_dark")


class ProposalError(ValueError):
    """The folder cannot be measured (no images, none readable); one line says why."""


@dataclass
class Proposal:
    """The decisions and, for each recipe key, the comment that says what was measured."""

    folder: Path  # the images measured
    n_images: int  # images in the folder
    n_measured: int
    unreadable: list[str] = field(default_factory=list)  # "file: why", one per sampled file
    method: str = "segment"
    pixel_format: str = "mono8"
    polarity: str = "dark_on_light"
    merge_gap_frac: float = MERGE_GAPS[0]
    orientation: str = "none"
    pattern: tuple[int, ...] = ()  # orientation pattern / axis_pattern: the parts' pattern
    crop_mode: str = "length"
    crop_scale: float = CROP_SCALE
    crop_aspect: float = 1.0
    width: int = 256
    notes: dict[str, str] = field(default_factory=dict)


def image_folder(data: Path) -> Path:
    """The folder of good images in ``data``: ``train/good``, ``good``, or ``data`` itself."""
    for sub in (data / "train" / "good", data / "good"):
        if sub.is_dir() and _images(sub):
            return sub
    return data


def _images(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    except OSError:
        return []


def _sample(paths: list[Path], n: int) -> list[Path]:
    if len(paths) <= n:
        return paths
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n).round()]


def _load(paths: list[Path]) -> tuple[list[np.ndarray], list[str]]:
    """The readable images, and one line for each file that is not (the engineer's to fix)."""
    images, unreadable = [], []
    for p in paths:
        try:
            images.append(load_image(p))
        except DatasetError as exc:
            unreadable.append(str(exc))
    return images, unreadable


def propose(data: Path | str, sample: int = SAMPLE) -> Proposal:
    """Measure the good images of ``data`` and decide each part of the recipe."""
    data = Path(data)
    if not data.is_dir():
        raise ProposalError(f"{data}: not a folder")
    folder = image_folder(data)
    paths = _images(folder)
    if not paths:
        raise ProposalError(f"{data}: no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                            f"{data / 'train' / 'good'}, {data / 'good'} or {data} itself")
    images, unreadable = _load(_sample(paths, sample))
    if not images:
        raise ProposalError(f"{folder}: none of the {min(len(paths), sample)} images measured "
                            f"could be read ({unreadable[0]})")
    prop = Proposal(folder=folder, n_images=len(paths), n_measured=len(images),
                    unreadable=unreadable)
    _colour(prop, images)
    found = _find_parts(prop, images)
    if found:
        _part(prop, found)
    else:
        _region(prop, images)
    return prop


def _colour(prop: Proposal, images: list[np.ndarray]) -> None:
    """bgr8 when the colour channels differ by more than ``COLOUR_LEVELS`` on average."""
    spreads = []
    for img in images:
        if img.ndim == 3 and img.shape[2] >= 3:
            small = to_uint8(_shrunk(img[:, :, :3])).astype(np.int16)
            spreads.append(float((small.max(axis=2) - small.min(axis=2)).mean()))
    n = len(images)
    if not spreads:
        prop.notes["pixel_format"] = f"all {n} images measured are single-channel (grey)"
        return
    spread = float(np.median(spreads))
    colour = spread > COLOUR_LEVELS
    prop.pixel_format = "bgr8" if colour else "mono8"
    prop.notes["pixel_format"] = (
        f"{len(spreads)} of {n} images have 3 channels; they differ by {spread:.1f} grey levels "
        f"on average (median over images; above {COLOUR_LEVELS:g} = colour)"
        + ("" if colour else ": grey stored as colour"))


def _shrunk(img: np.ndarray, side: int = 256) -> np.ndarray:
    f = side / max(img.shape[:2])
    if f >= 1:
        return img
    size = (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _find_parts(prop: Proposal, images: list[np.ndarray]
                ) -> list[tuple[np.ndarray, Localization]]:
    """Try both polarities; the parts found with the better one when that is most images.

    A part whose middle is as light as the background falls apart into pieces ("several"
    parts); the pieces' largest gap is then widened step by step while that finds the part
    in more images.
    """
    tried = {MERGE_GAPS[0]: _localized(images, MERGE_GAPS[0])}
    for wider in MERGE_GAPS[1:]:
        if not any(loc.status == "several" for locs in tried[max(tried)].values() for loc in locs):
            break
        tried[wider] = _localized(images, wider)
    n = len(images)
    gaps = {pol: _merge_gap(tried, pol, images) for pol in POLARITIES}
    results = {pol: tried[gaps[pol][1]][pol] for pol in POLARITIES}
    ok = _n_ok(results)
    best = _polarity(results, ok, n, images)
    other = next(p for p in POLARITIES if p != best)
    needed, gap = gaps[best]
    statuses = Counter(loc.status for loc in results[best] if not loc.ok)
    why = ", ".join(f"{k} {v}" for k, v in statuses.most_common())
    measured = (f"{best}: one part found in {ok[best]} of {n} images"
                + (f" (the others: {why})" if why else "")
                + f"; {other}: {ok[other]} of {n}")
    if gap != MERGE_GAPS[0]:
        prop.notes["merge_gap_frac"] = (
            f"pieces of one part as far apart as this share of the image's long side are "
            f"merged: at {MERGE_GAPS[0]:g} a part fell apart into several in some images "
            f"(found in {_n_ok(tried[MERGE_GAPS[0]])[best]} of {n}), at {needed:g} in "
            f"{_n_ok(tried[needed])[best]} of {n}"
            + (f"; {gap:g}, a step wider, for the images not measured" if gap != needed else "")
            + "; a part with a band as light as the background? Two parts this close count "
            "as one")
    if ok[best] >= FOUND_SHARE * n:
        prop.method, prop.polarity, prop.merge_gap_frac = "segment", best, gap
        prop.notes["method"] = f"{measured} -> a part to find against a background"
        prop.notes["polarity"] = (f"{'dark part on a light' if best == 'dark_on_light' else 'light part on a dark'}"
                                  f" background: {ok[best]} found this way, {ok[other]} the other"
                                  + (" (about as many: the one with the smaller parts; the "
                                     "other finds the background's halo around them)"
                                     if abs(ok[best] - ok[other]) <= 0.1 * n else ""))
        return [(img, loc) for img, loc in zip(images, results[best], strict=True) if loc.ok]
    prop.notes.pop("merge_gap_frac", None)
    prop.method = "fixed"
    prop.notes["method"] = (f"{measured}; below {FOUND_SHARE:.0%} -> no separate part against a "
                            "background: the image is the part (a fixtured part or a surface)")
    return []


def _merge_gap(tried: dict[float, dict[str, list[Localization]]], pol: str,
               images: list[np.ndarray]) -> tuple[float, float]:
    """(the smallest gap that finds the part in the most images with ``pol``, that gap or a
    step wider for the images not measured)."""
    found = {g: sum(loc.ok for loc in r[pol]) for g, r in tried.items()}
    needed = min(g for g in found if found[g] == max(found.values()))
    i = MERGE_GAPS.index(needed)
    if i == 0 or i + 1 == len(MERGE_GAPS):
        return needed, needed
    wider = MERGE_GAPS[i + 1]
    tried.setdefault(wider, _localized(images, wider))
    return needed, (wider if sum(loc.ok for loc in tried[wider][pol]) >= found[needed] else needed)


def _localized(images: list[np.ndarray], gap: float) -> dict[str, list[Localization]]:
    return {pol: [localize(img, LocalizeParams(polarity=pol, merge_gap_frac=gap))
                  for img in images] for pol in POLARITIES}


def _n_ok(results: dict[str, list[Localization]]) -> dict[str, int]:
    return {pol: sum(loc.ok for loc in locs) for pol, locs in results.items()}


def _polarity(results: dict[str, list[Localization]], ok: dict[str, int], n: int,
              images: list[np.ndarray] | None = None) -> str:
    """The polarity that finds a part in more images; when both find one in nearly as many,
    the one whose parts stand out from their surroundings the way it says (darker or
    lighter) in more images, then the one whose parts are smaller: the wrong polarity finds
    the background's halo around the part, which holds the part and is larger than it."""
    a, b = POLARITIES
    if abs(ok[a] - ok[b]) > 0.1 * n or min(ok.values()) == 0:
        return a if ok[a] >= ok[b] else b
    if images is not None:
        agree = {pol: np.mean([_contrast(img, loc, pol) > 0 for img, loc in
                               zip(images, results[pol], strict=True) if loc.ok])
                 for pol in POLARITIES}
        if abs(agree[a] - agree[b]) >= 0.25:
            return a if agree[a] > agree[b] else b

    def size(pol: str) -> float:
        return float(np.median([(x.length_px or 0.0) * (x.width_px or 0.0)
                                for x in results[pol] if x.ok]))

    return a if size(a) <= size(b) else b


def _contrast(image: np.ndarray, loc: Localization, polarity: str) -> float:
    """How much darker (``dark_on_light``) or lighter the part's core is than a ring of
    background around it, as a share of the ring's grey level; negative when the other way."""
    gray = to_gray(image)  # the station's one grey conversion
    f = min(1.0, 256 / max(gray.shape[:2]))
    small = _shrunk(gray).astype(np.float32)
    (cx, cy), length, width = loc.center or (0.0, 0.0), loc.length_px or 1.0, loc.width_px or 1.0

    def rect(scale: float) -> np.ndarray:
        mask = np.zeros(small.shape[:2], np.uint8)
        box = cv2.boxPoints(((cx * f, cy * f), (length * f * scale, width * f * scale),
                             loc.angle_deg or 0.0))
        cv2.fillConvexPoly(mask, np.round(box).astype(np.int32), 1)
        return mask.astype(bool)

    core, ring = rect(0.6), rect(1.5) & ~rect(1.15)
    if not core.any() or not ring.any():
        return 0.0
    back, part = float(small[ring].mean()), float(small[core].mean())
    sign = 1.0 if polarity == "dark_on_light" else -1.0
    return sign * (back - part) / max(back, 1.0)


def _part(prop: Proposal, pairs: list[tuple[np.ndarray, Localization]]) -> None:
    """Orientation, crop aspect and width from the parts found (and their images)."""
    found = [loc for _, loc in pairs]
    length = np.array([loc.length_px or 0.0 for loc in found])
    width = np.array([loc.width_px or 0.0 for loc in found])
    ratio = np.array([loc.head_ratio or 1.0 for loc in found])
    elong = float(np.median(length / np.maximum(width, 1.0)))
    headed = float(np.mean(ratio >= HEAD_RATIO))
    n = len(found)
    spread = _axis_spread_deg(found)
    lies = (f"their long axes spread {spread:.0f} degrees (circular std): "
            + ("they lie at any angle" if spread >= FIXTURED_DEG else "they lie fixtured"))
    if elong >= ELONGATED and headed >= HEAD_SHARE:
        prop.orientation = "head"
        how = f"one end is at least {HEAD_RATIO:g}x wider in {headed:.0%} of them"
    else:  # the turn that makes the parts' crops most alike, if clearly
        prop.orientation, prop.pattern, how = _best_turn(pairs, elong >= ELONGATED)
        if elong >= ELONGATED:
            how = (f"one end is at least {HEAD_RATIO:g}x wider in only {headed:.0%} of them; "
                   + how)
    lead = f"the parts are {elong:.2f}x as long as wide (median of {n}); {lies}; {how} -> "
    if prop.orientation in ("none", "pattern"):
        prop.crop_aspect = 1.0
        # a square crop of an unlevelled part must hold it turned any way it lies: its
        # widest extent (the box's longer side, over the parts as they lie) and not its
        # length along the axis (a block turned 45 degrees would lose its corners)
        box = np.array([max(loc.box[2:]) if loc.box else 0.0 for loc in found])
        q95 = float(np.percentile(box / np.maximum(length, 1.0), 95))
        # to the nearest 0.05: the box is measured at detection scale, a few pixels large
        prop.crop_scale = max(CROP_SCALE, round(CROP_SCALE * q95 * 20) / 20)
        if prop.crop_scale > CROP_SCALE:
            prop.notes["crop_scale"] = (
                f"the parts' widest extent as they lie (their box's longer side) is up to "
                f"{q95:.2f}x their length (95th percentile): crop width = {CROP_SCALE:g} x that")
        prop.notes["orientation"] = lead + (
            "not turned; square crop" + ("; at any angle with no long side or pattern to turn "
                                         "them by, the models learn every angle (a fixture "
                                         "would help)" if spread >= FIXTURED_DEG else "")
            if prop.orientation == "none" else
            "turned until their pattern around the centre matches the one learned from them "
            "(align.pattern); square crop")
    else:
        prop.notes["orientation"] = lead + {
            "head": "turn the wide end (head) to the left",
            "axis": "only the long axis is levelled",
            "axis_pattern": "the long axis is levelled, the end that goes right read from "
                            "their grey pattern"}[prop.orientation]
        q95 = float(np.percentile(width / np.maximum(length, 1.0), 95))
        prop.crop_aspect = _round_up(q95 * MARGIN / CROP_SCALE, 0.05)
        prop.notes["crop_aspect"] = (
            f"width / length of the parts: 95th percentile {q95:.3f}; crop height = {MARGIN:g} x "
            f"that width (background above and below) at crop width {CROP_SCALE:g} x length")
    native = prop.crop_scale * float(np.median(length))
    prop.width = _crop_width(native, prop.crop_aspect)
    prop.notes["width"] = (f"crop width: the part's crop is {native:.0f} frame px wide (median "
                           f"length {np.median(length):.0f} px x {prop.crop_scale:g}); "
                           + _width_reason(native, prop.width, prop.crop_aspect))


def _best_turn(pairs: list[tuple[np.ndarray, Localization]],
               elongated: bool) -> tuple[str, tuple[int, ...], str]:
    """The orientation that makes the parts' crops most alike, the pattern it reads (empty
    when none), and what was measured. An elongated part is levelled on its axis at least; a
    shorter one is turned only when that leaves the per-pixel spread below ``LEVEL_GAIN`` x
    the spread as they lie. Of turns within ``1 / LEVEL_GAIN`` of the best, the first of
    ``LONG_TURNS`` or ``SHORT_TURNS`` is kept (the outline's axis is the steadiest measure;
    a pattern is learned)."""
    parts = [pattern.rings(pattern_patch(img, loc)) for img, loc in pairs]
    refs = {"axis_pattern": pattern.learn(parts, [loc.angle_deg or 0.0 for _, loc in pairs])}
    if not elongated:  # a long part is only ever levelled first
        refs["pattern"] = pattern.learn(parts)
    turns = LONG_TURNS if elongated else SHORT_TURNS
    spreads = {t: _crop_spread(pairs, t, refs.get(t, ()))
               for t in (() if elongated else ("none",)) + turns}
    best = min(v for t, v in spreads.items() if t != "none")
    turn = next(t for t in turns if spreads[t] <= best / LEVEL_GAIN)
    if not elongated and spreads[turn] >= LEVEL_GAIN * spreads["none"]:
        turn = "none"
    measured = ", ".join(f"{t} {v:.2f}" for t, v in spreads.items())
    return (turn, refs.get(turn, ()),
            f"their crops' per-pixel spread (each crop scaled to zero mean and unit "
            f"contrast) by orientation: {measured}")


def _crop_spread(pairs: list[tuple[np.ndarray, Localization]], orientation: str,
                 ref: tuple[int, ...] = ()) -> float:
    """How unlike each other the parts' crops are: the per-pixel standard deviation over
    small grey crops (96 px, the part's length x 1.1 square), averaged over the crop.

    Each crop is first scaled to zero mean and unit standard deviation, so parts that are
    simply lighter or of more contrast than others (tiles from different batches) do not
    drown what a turn changes: where the part's features and outline lie."""
    params = AlignParams(orientation=orientation, pattern=ref, crop_mode="length",
                         crop_scale=CROP_SCALE, crop_aspect=1.0)
    crops = []
    for img, loc in pairs:
        g = to_gray(align(img, loc, params, 96, 96).crop).astype(np.float32)
        crops.append((g - g.mean()) / max(float(g.std()), 1e-3))
    return float(np.std(np.stack(crops), axis=0).mean())


def _axis_spread_deg(found: list[Localization]) -> float:
    """Circular standard deviation of the parts' long axes (an axis and its reverse are one)."""
    theta = np.radians([loc.angle_deg or 0.0 for loc in found])
    r = float(np.abs(np.mean(np.exp(2j * theta))))
    return math.degrees(math.sqrt(-2.0 * math.log(max(r, 1e-12))) / 2.0)


def _region(prop: Proposal, images: list[np.ndarray]) -> None:
    """The whole image stretched onto a crop of the images' typical aspect."""
    prop.orientation, prop.crop_mode = "none", "region"
    shapes = np.array([img.shape[:2] for img in images], float)
    aspects = shapes[:, 0] / shapes[:, 1]
    q = np.percentile(aspects, [0, 25, 50, 75, 100])
    distinct = len({tuple(s) for s in shapes.astype(int)})
    prop.crop_aspect = max(0.05, round(float(q[2]) * 20) / 20)
    sizes = ("all " + f"{int(shapes[0, 1])}x{int(shapes[0, 0])}" if distinct == 1 else
             f"{distinct} different sizes, {int(shapes[:, 1].min())}-{int(shapes[:, 1].max())} x "
             f"{int(shapes[:, 0].min())}-{int(shapes[:, 0].max())} px")
    prop.notes["crop_aspect"] = (f"the images' height / width: median {q[2]:.2f}, middle half "
                                 f"{q[1]:.2f}-{q[3]:.2f}, all {q[0]:.2f}-{q[4]:.2f} ({sizes})")
    native = float(np.median(shapes[:, 1]))
    prop.width = _crop_width(native, prop.crop_aspect)
    prop.notes["width"] = (f"crop width: the images are {native:.0f} px wide (median); "
                           + _width_reason(native, prop.width, prop.crop_aspect))


def _round_up(value: float, step: float) -> float:
    return round(math.ceil(value / step - 1e-9) * step, 4)


def _crop_width(native: float, aspect: float) -> int:
    """The part's own resolution, at most ``MAX_CROP_AREA`` pixels, a multiple of 32."""
    cap = math.sqrt(MAX_CROP_AREA / max(aspect, 0.05))
    w = min(native, cap, MAX_WIDTH)
    return int(max(MIN_WIDTH, math.floor(w / 32) * 32))


def _width_reason(native: float, width: int, aspect: float) -> str:
    if width >= native - 32:
        return f"{width} px keeps the part at its own resolution"
    height = crop_height(width, AlignParams(crop_aspect=aspect), CROP_MULTIPLE)  # as cut
    return (f"{width} px (x{native / width:.1f} smaller) keeps a crop of {width} x "
            f"{height} px within what training affords on 2 CPU cores")


# --- the recipe text ------------------------------------------------------------------------

def _comment(text: str, indent: str = "# ") -> str:
    """A note as comment lines of at most ~92 characters."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > 88:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "\n".join(indent + x for x in lines)


def _localize_table(p: Proposal) -> str:
    if p.method == "fixed":
        return (f'[localize]\n{_comment(p.notes["method"])}\nmethod = "fixed"\n'
                "roi = [0, 0, 0, 0]            # the whole image; on a line: x, y, w, h of the "
                "face in the frame\n")
    return (f'[localize]\n{_comment(p.notes["method"])}\nmethod = "segment"\n'
            "roi = [0, 0, 0, 0]            # search the whole image\n"
            f'{_comment(p.notes["polarity"])}\npolarity = "{p.polarity}"\n'
            + (f'{_comment(p.notes["merge_gap_frac"])}\nmerge_gap_frac = {p.merge_gap_frac:g}\n'
               if "merge_gap_frac" in p.notes else "")
            + "detect_size = 256             # frames are shrunk to this long side to find the part\n"
            "min_area_frac = 0.005         # smaller blobs are dust\n"
            "max_area_frac = 0.6\n"
            "border_margin_px = 2          # a part touching the image edge is reported as cut off\n")


def _align_table(p: Proposal) -> str:
    lines = ["[align]", _comment(p.notes.get("orientation", "a fixed region is not turned")),
             f'orientation = "{p.orientation}"']
    if p.orientation == "head":
        lines.append('head_side = "left"')
    if p.pattern:
        lines.append(_comment(
            f"the pattern the good parts share around their centre, learned from the "
            f"{p.n_measured} measured: {pattern.RINGS} rings (inner to outer) of "
            f"{pattern.ANGLES} grey levels, every {360 // pattern.ANGLES} degrees, scaled"))
        lines.append(_pattern_array(p.pattern))
    if p.method == "fixed":
        lines += ['crop_mode = "region"          # the image is stretched onto the crop, '
                  "whatever its size"]
    else:
        if "crop_scale" in p.notes:
            lines.append(_comment(p.notes["crop_scale"]))
        lines += ['crop_mode = "length"', f"crop_scale = {p.crop_scale:g}               "
                  "# crop width = this x the part's length"]
        lines.append('registration = "template"   # station train learns the good parts\' mean '
                     "crop; each part is registered onto it to a fraction of a pixel")
    if "crop_aspect" in p.notes:
        lines.append(_comment(p.notes["crop_aspect"]))
    lines.append(f"crop_aspect = {p.crop_aspect:g}               # crop height / crop width")
    return "\n".join(lines) + "\n"


def _pattern_array(values: tuple[int, ...]) -> str:
    """``pattern = [...]``, one ring per three lines."""
    rows = [", ".join(f"{v:4d}" for v in values[i:i + 24]) for i in range(0, len(values), 24)]
    return "pattern = [\n" + ",\n".join(f"  {r}" for r in rows) + ",\n]"


def _device_path(folder: Path, out: Path) -> str:
    """The image folder relative to the recipe's folder when they are near (at most two
    levels up, as recipes/ and shared/data/ beside a clone), else absolute."""
    import os

    target, base = folder.resolve(), out.resolve().parent
    try:
        common = Path(os.path.commonpath([target, base]))
        rel = Path(os.path.relpath(target, base))
    except ValueError:  # another drive (Windows)
        return target.as_posix()
    near = common != Path(common.anchor) and rel.parts[:3].count("..") <= 2
    return rel.as_posix() if near else target.as_posix()


def recipe_text(p: Proposal, out: Path, name: str) -> str:
    """The proposed recipe as commented TOML (paths relative to ``out``'s folder)."""
    device = _device_path(p.folder, out)
    models = f"models/{name}"
    skipped = "".join(f"# Not readable, left out: {' '.join(line.splitlines())}\n"
                      for line in p.unreadable)
    return f'''# Proposed by `station init-recipe` from {p.n_measured} of the {p.n_images} good images in
# {p.folder.resolve().as_posix()}.
{skipped}# Every decision below says what was measured. CHECK IT before training:
#   station crops --recipe {out.name} --data <data set> --out /tmp/crops --size {p.width}
# shows the crop of every image (montage.png): each should hold the whole part, in one pose.
# Then: station train --recipe {out.name} --data <data set> --out {models}
#       station evaluate --models {models} --data <other images of it> --json /tmp/eval.json
# (the models learn from every labeled image of the data set; to measure them on it, train
# with --folds 3 --fold 0 and evaluate the same data set: its fold 0 is never learned from)
# Relative paths are relative to THIS file's folder.

[product]
name = "{name}"
description = "proposed by station init-recipe; check it"

[camera]
source = "folder"             # replay the images; on a line: opencv, genicam, ...
device = "{device}"
loop = true
{_comment(p.notes["pixel_format"])}
pixel_format = "{p.pixel_format}"

{_localize_table(p)}
{_align_table(p)}
[models]
# Made by `station train` (it writes recipe_fragment.toml beside them): set the two files
# and the [decision] thresholds from it. Empty = no model yet; the station refuses to run.
autoencoder = ""
classifier = ""
{_comment(p.notes["width"])}
size = {p.width}
# "both" when a good part's mirror image is a good part too (a surface, a part symmetric
# both ways): the classifier trains on mirror images and averages its score over them.
# "none" for a part with a handedness, a print or a side that faces one way.
flips = "none"
# The share of the labeled defective images that trains the classifier; the rest choose the
# thresholds. 0.7 ranked better than half on both products measured (screws, tiles).
defect_train_share = 0.7
# The share of the labeled good images (photographed with the defects) both models learn
# from: the autoencoder's bank of good parts and the classifier's good examples; the rest
# choose the thresholds. 0.7 for a surface (the tiles' fused ranking 0.974 -> 0.984), 0 for a
# part to find (the demo's line rejected a good part with them, none without).
good_train_share = {0.7 if p.method == "fixed" else 0}

[decision]
rule = "either"               # reject when either model is above its threshold
on_error = "reject"

[trigger]
# hardware = every frame is one part: a folder of photos, or a camera fired by a sensor.
mode = "hardware"

[reject]
enabled = false

[records]
database = "../.station/{name}/records.sqlite"
images_dir = "../.station/{name}/images"
'''
