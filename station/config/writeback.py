"""Writing a recipe back: tomlkit keeps comments and layout, the result is validated before
anything is written, the file is replaced atomically and the old one kept as a backup."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import tomlkit

from station.config.errors import RecipeError, RecipeIssue
from station.config.keylines import split_key
from station.config.pin import hash_pin
from station.config.toml_io import BOM, display_name, load_toml, parse_text, read_recipe_text


def _plain(value: Any) -> Any:
    """Python value from numpy arrays/scalars, tuples and paths, as TOML can store it."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _set_dotted(doc: tomlkit.TOMLDocument, dotted: str, value: Any) -> None:
    parts = split_key(dotted)
    if not parts:
        raise RecipeError([RecipeIssue("", None, dotted, f"{dotted!r}: not a key")])
    table: Any = doc
    for part in parts[:-1]:
        if part not in table:
            if value is None:
                return
            table[part] = tomlkit.table()
        table = table[part]
        if not isinstance(table, dict):
            raise RecipeError([RecipeIssue("", None, dotted, f"{dotted}: {part} is not a table")])
    last = parts[-1]
    if value is None:
        if last in table:
            del table[last]
        return
    value = _plain(value)
    item = tomlkit.item(value)
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        item.multiline(True)
    table[last] = item


def update_recipe(path: Path | str, changes: dict[str, Any], backup: bool = True,
                  check_files: bool = True, dry_run: bool = False) -> Path | None:
    """Change dotted keys in a recipe file, keeping its comments and layout.

    The changed recipe is validated before anything is written (a refused change raises
    :class:`RecipeError` and leaves the file untouched); the file is replaced atomically; with
    ``backup`` the previous version is kept as ``<name>.YYYYmmdd-HHMMSS.bak.toml`` beside it and
    its path returned. A value of None removes the key (back to the default). With
    ``dry_run`` the change is only checked: refused as a write would be, nothing written.
    """
    path = Path(path)
    original = read_recipe_text(path)
    bom = BOM if original.startswith(BOM) else ""  # kept as the file had it
    original = original[len(bom):]
    load_toml(original, display_name(path))  # syntax, nesting: refused with their line
    try:
        doc = tomlkit.parse(original)
    except (tomlkit.exceptions.ParseError, RecursionError) as exc:
        raise RecipeError([RecipeIssue(display_name(path), getattr(exc, "line", None) or 1, "",
                                       f"TOML syntax error: {exc}")]) from None
    for dotted, value in changes.items():
        _set_dotted(doc, dotted, value)
    text = bom + tomlkit.dumps(doc)
    parse_text(text, path, check_files)  # raises before anything is written
    if dry_run:
        return None

    backup_path: Path | None = None
    if backup:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup_path = path.with_name(f"{path.stem}.{stamp}.bak.toml")
        n = 2
        while backup_path.exists():
            backup_path = path.with_name(f"{path.stem}.{stamp}-{n}.bak.toml")
            n += 1
        shutil.copy2(path, backup_path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup_path


def set_pin(path: Path | str, pin: str) -> Path | None:
    """Store a new engineer PIN in a recipe file (for `station set-pin`); returns the backup.

    The PIN is hashed (hash_pin) and written with update_recipe, so the recipe is validated and
    its comments kept; raises ValueError for a PIN under 4 characters, RecipeError for a recipe
    that cannot be loaded.
    """
    return update_recipe(path, {"engineer.pin_hash": hash_pin(pin)}, check_files=False)
