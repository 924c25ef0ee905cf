"""Reading a recipe file: size, binary and encoding checks, a BOM accepted, TOML syntax errors
with their line, then the build and the cross-key rules."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from station.config.checks import check_recipe
from station.config.convert import FAILED, Context, build
from station.config.errors import RecipeError, RecipeIssue
from station.config.keylines import MAX_NESTING, Scan, scan_text
from station.config.schema import Recipe


def display_name(path: Path) -> str:
    """The path as the user would recognise it: relative to the working folder when inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
BOM = "\ufeff"


def _decode(raw: bytes, file: str) -> str:
    """The text of a recipe file, or RecipeError for a binary / non-UTF-8 file (with its byte)."""
    nul = raw.find(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start if nul < 0 else min(nul, exc.start)
        what = "NUL" if bad == nul else "not UTF-8; TOML files are UTF-8 text"
        line = raw.count(b"\n", 0, bad) + 1
        raise RecipeError([RecipeIssue(file, line, "", f"not a text TOML file (byte {bad}: "
                                       f"{what})")]) from None
    _check_text(text, file)
    return text


def _check_text(text: str, file: str) -> None:
    """Refuse a NUL character (a binary file), which tomllib would report as a mere syntax
    error."""
    nul = text.find("\0")
    if nul >= 0:
        byte = len(text[:nul].encode("utf-8", "surrogatepass"))
        raise RecipeError([RecipeIssue(file, text.count("\n", 0, nul) + 1, "",
                                       f"not a text TOML file (byte {byte}: NUL)")])


def _toml_error(message: str, text: str, file: str) -> RecipeError:
    """A tomllib/tomlkit complaint as ``file:line: TOML syntax error: ... (column c)``."""
    found = _POSITION_RE.search(message)
    line = int(found.group(1)) if found else text.count("\n") + 1
    detail = _POSITION_RE.sub("", message)
    column = f" (column {found.group(2)})" if found else ""
    return RecipeError([RecipeIssue(file, line, "", f"TOML syntax error: {detail}{column}")])


def load_toml(text: str, file: str) -> tuple[dict, Scan]:
    """tomllib's data and the lexical scan; every failure a RecipeError with a line."""
    _check_text(text, file)
    if text.startswith(BOM):
        text = " " + text[1:]  # accepted: same columns and lines, tomllib sees no BOM
    scan = scan_text(text)
    if scan.deep_line is not None:
        raise RecipeError([RecipeIssue(file, scan.deep_line, "", "arrays or inline tables "
                                       f"nested more than {MAX_NESTING} deep")])
    try:
        return tomllib.loads(text), scan
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(str(exc), text, file) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise RecipeError([RecipeIssue(file, text.count("\n") + 1, "",
                                       f"TOML value refused: {exc}")]) from None


def parse_text(text: str, path: Path, check_files: bool) -> Recipe:
    file = display_name(path)
    data, scan = load_toml(text, file)
    ctx = Context(file, text, path.resolve().parent, check_files, scan)
    ctx.data = data
    recipe = build(Recipe, data, "", ctx)
    if recipe is not FAILED:
        recipe = check_recipe(dataclasses.replace(recipe, path=path.resolve()), ctx)
    if ctx.issues:
        raise RecipeError(ctx.issues)
    return recipe


def read_recipe_text(path: Path) -> str:
    """A recipe file's text; a missing, unreadable, binary or non-UTF-8 file is refused."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)  # /dev/zero or a huge file: never read whole
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(str(path), None, "", "recipe file not found")]) from None
    except OSError as exc:
        raise RecipeError([RecipeIssue(str(path), None, "", f"cannot read: {exc}")]) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError([RecipeIssue(display_name(path), 1, "", "expected a recipe of at "
                                       f"most {MAX_RECIPE_BYTES} bytes (a recipe is a few kB)")])
    return _decode(raw, display_name(path))


MAX_RECIPE_BYTES = 1 << 20  # a hostile multi-megabyte file is refused before it is parsed


def load_recipe(path: Path | str, check_files: bool = True) -> Recipe:
    """Read and validate a recipe; raises :class:`RecipeError` naming file, line and key.

    ``check_files=False`` skips the existence checks (models, reference, image folders), for
    tools that are about to create those files (training, the demo's first run). A file that
    starts with a UTF-8 byte-order mark is read as if it had none.
    """
    path = Path(path)
    return parse_text(read_recipe_text(path), path, check_files)


def list_recipes(folder: Path | str) -> list[Path]:
    """The recipe files in a folder, sorted, without the backups update_recipe leaves."""
    return sorted(p for p in Path(folder).glob("*.toml") if not p.name.endswith(".bak.toml"))
