"""Why the station could not start, said in the recipe's terms: ``<recipe>: <key> = <value>:
<reason>``. The command line and the window report start-up faults through this one place."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any


def startup_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the recipe or this machine is wrong", not a bug."""
    from station.config import RecipeError
    from station.models.inference import ProviderUnavailable
    from station.models.metadata import ModelRefused
    from station.records import RecordsError
    from station.reject import RejectConfigError
    from station.reject.serial_link import SerialLinkError
    from station.sources.base import SourceError
    from station.sources.datasets import DatasetError
    from station.vision.quality import QualityError
    from station.vision.undistort import UndistortError

    return (RecipeError, ModelRefused, ProviderUnavailable, RecordsError, SourceError,
            SerialLinkError, RejectConfigError, QualityError, UndistortError, DatasetError,
            OSError, ValueError)


def _shown(value: Any, folder: Path | None = None) -> str:
    """A recipe value as it would be written in TOML (paths relative to the recipe)."""
    if isinstance(value, str) and folder is not None and os.path.isabs(value):
        with contextlib.suppress(ValueError):
            value = str(Path(value).relative_to(folder))
    return json.dumps(value) if isinstance(value, str) else str(value)


def _value(recipe: Any, dotted: str) -> Any:
    value = recipe
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def _model_key(recipe: Any, path: Path | None) -> str:
    """Which ``models.*`` key names ``path``, if any."""
    if recipe is None or path is None:
        return ""
    for kind in ("autoencoder", "classifier"):
        named = _value(recipe, f"models.{kind}")
        if named and Path(named).resolve() == path.resolve():
            return f"models.{kind}"
    return ""


def _writable_folder_problem(database: Path) -> str:
    """Why the folder of ``database`` cannot hold it ('' when the folder looks fine)."""
    folder = database.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(folder, os.W_OK):
        return (f"folder {folder} is read-only (the database and its -wal file must be "
                "created there)")
    return ""


def records_problem(database: Path, exc: BaseException) -> str:
    """The reason a records database cannot be used, in the user's terms."""
    if database.is_dir():
        return "is a folder; expected the path of a database file"
    folder = _writable_folder_problem(database)
    if folder:
        return folder
    cause = re.search(r"cannot open \((.*)\)$", str(exc))
    return f"cannot be opened or created there ({cause.group(1) if cause else exc})"


def _records_line(file: str, recipe: Any, exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("records database") and recipe is not None:
        database = Path(_value(recipe, "records.database"))
        return (f"{file}: records.database = {_shown(str(database), recipe.folder)}: "
                f"{records_problem(database, exc)}")
    keyed = re.match(r"(records\.\w+): (.*)$", text)
    if keyed and recipe is not None:
        key = keyed.group(1)
        return f"{file}: {key} = {_shown(_value(recipe, key))}: {keyed.group(2)}"
    return f"{file}: {text}"


def describe_startup_error(recipe_path: Path | str, recipe: Any, exc: BaseException) -> str:
    """``<recipe file>: <key> = <value>: <reason>`` for a start-up fault (or, when no one key
    is at fault, ``<recipe file>: <reason>``). One line per problem, never a traceback."""
    from station.config import RecipeError
    from station.models.inference import ProviderUnavailable
    from station.models.metadata import ModelRefused
    from station.records import RecordsError

    file = str(recipe_path)
    folder = getattr(recipe, "folder", None)
    if isinstance(exc, RecipeError):
        return str(exc)
    if isinstance(exc, ModelRefused):
        key = exc.key or _model_key(recipe, exc.path)
        if key == "models" or not key:
            where = f"{key}: " if key else (f"{exc.path}: " if exc.path else "")
            return f"{file}: {where}{exc.reason}"
        return f"{file}: {key} = {_shown(_value(recipe, key), folder)}: {exc.reason}"
    if isinstance(exc, ProviderUnavailable):
        return f"{file}: models.provider = {_shown(exc.provider)}: {exc}"
    if isinstance(exc, RecordsError):
        return _records_line(file, recipe, exc)
    return f"{file}: {' '.join(str(exc).split()) or type(exc).__name__}"
