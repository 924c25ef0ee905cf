"""``station init-recipe``: propose a commented recipe from a folder of good images.

The first of three commands for a new product (init-recipe, train, evaluate). The measuring
and deciding is :mod:`station.config.propose`; this writes the file and checks that the
station's own loader accepts it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

UNREADABLE_SHOWN = 3  # skipped files named one per line; the rest counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="data set or image folder: its train/good/, good/, or the folder "
                             "itself holds the good images")
    parser.add_argument("--out", type=Path, required=True, help="recipe file to write (.toml)")
    parser.add_argument("--name", default="",
                        help="product name (default: the data folder's name)")
    parser.add_argument("--force", action="store_true", help="overwrite --out when it exists")


#: folder names that say what a folder holds, not which product: NEW/train/good is "NEW"
LAYOUT_FOLDERS = {"good", "train", "test", "images", "ok"}


def product_name(data: Path, given: str) -> str:
    """A short name usable in paths: the given one, else the data set's folder (above its
    ``train/good``: every product's good images sit in a folder named ``good``, and one name
    for all would give them one records database).

    >>> product_name(Path("/data/nut/train/good"), ""), product_name(Path("/d/x"), "a b")
    ('nut', 'a-b')
    """
    folder = data.resolve()
    while folder.name.lower() in LAYOUT_FOLDERS and folder.parent != folder:
        folder = folder.parent
    raw = given or folder.name or "product"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.") or "product"


def run(args: argparse.Namespace) -> int:
    from station.config import RecipeError, load_recipe
    from station.config.propose import ProposalError, propose, recipe_text
    from station.vision.align import CROP_MULTIPLE, crop_height

    out: Path = args.out
    if out.exists() and not args.force:
        print(f"station init-recipe: {out} exists; --force overwrites it", file=sys.stderr)
        return 2
    try:
        proposal = propose(args.data)
    except ProposalError as exc:
        print(f"station init-recipe: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(recipe_text(proposal, out, product_name(args.data, args.name)))
    try:
        recipe = load_recipe(out)
    except RecipeError as exc:  # a bug in the proposal: say so, keep the file to look at
        print(f"station init-recipe: the proposed recipe is refused by the loader: {exc}",
              file=sys.stderr)
        return 1
    p = proposal
    kind = ("a part to find" if p.method == "segment" else "the image is the part")
    print(f"{p.n_measured} of {p.n_images} images measured in {p.folder}")
    for line in p.unreadable[:UNREADABLE_SHOWN]:
        print(f"  skipped {line}")
    if len(p.unreadable) > UNREADABLE_SHOWN:
        print(f"  skipped {len(p.unreadable) - UNREADABLE_SHOWN} more unreadable images")
    print(f"  product: {kind} ({p.notes['method']})")
    if "merge_gap_frac" in p.notes:
        print(f"  pieces of one part merged up to {p.merge_gap_frac:g} of the image apart "
              "(it fell apart at the default; see the recipe's comment)")
    height = crop_height(p.width, recipe.align, CROP_MULTIPLE)  # as `station crops` cuts it
    print(f"  pixels: {p.pixel_format}; orientation: {p.orientation}; crop {p.width} x {height} "
          f"px (width x height; crop_mode {p.crop_mode}, crop_aspect {p.crop_aspect:g})")
    print(f"wrote {out}: check it, then `station crops --recipe {out} --data {args.data} "
          f"--out /tmp/crops --size {p.width}`")
    return 0
