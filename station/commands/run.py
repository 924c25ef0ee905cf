"""``station run``: the station on the line, in the window or headless.

Every fault a user can fix at start-up (a refused model, a provider this machine lacks, a
records database that cannot be written, a camera or serial port that will not open) is
one line on stderr naming the recipe file and the key, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="the product's recipe (TOML)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: print live statistics on the terminal")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--kiosk", action="store_true", help="full-screen operator window")
    parser.add_argument("--quiet", action="store_true", help="headless: no line per part")


NOT_INSPECTING_EXIT = 3  # the run ended with the camera lost, the trigger blind or the output down


def run(args: argparse.Namespace) -> int:
    return start_station(args.recipe, headless=args.headless, seconds=args.seconds,
                         kiosk=args.kiosk, quiet=args.quiet)


def startup_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the recipe or this machine is wrong", not a bug."""
    from station.datasets import DatasetError
    from station.inference import ProviderUnavailable
    from station.modelmeta import ModelRefused
    from station.quality import QualityError
    from station.recipe import RecipeError
    from station.records import RecordsError
    from station.reject import RejectConfigError
    from station.serial_link import SerialLinkError
    from station.sources.base import SourceError
    from station.undistort import UndistortError

    return (RecipeError, ModelRefused, ProviderUnavailable, RecordsError, SourceError,
            SerialLinkError, RejectConfigError, QualityError, UndistortError, DatasetError,
            OSError, ValueError)


def _shown(value: Any, folder: Path | None = None) -> str:
    """A recipe value as it would be written in TOML (paths relative to the recipe)."""
    if isinstance(value, str) and folder is not None and os.path.isabs(value):
        try:
            value = str(Path(value).relative_to(folder))
        except ValueError:
            pass
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
    from station.inference import ProviderUnavailable
    from station.modelmeta import ModelRefused
    from station.recipe import RecipeError
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


def start_station(recipe_path: Path, *, headless: bool, seconds: float | None,
                  kiosk: bool = False, quiet: bool = False, command: str = "run") -> int:
    """Open the recipe and run it; every startup fault is one clear line and exit code 2."""
    from station.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(recipe_path)
    except RecipeError as exc:
        print(f"station {command}: {exc}", file=sys.stderr)
        return 2
    if not headless:
        from station._qt.app import run_app

        return run_app(recipe.path, kiosk=kiosk, seconds=seconds, command=command,
                       shown_path=recipe_path)
    from station.engine import Engine
    from station.headless import run_headless, truth_summary

    try:
        engine = Engine(recipe)
    except startup_errors() as exc:
        print(f"station {command}: {describe_startup_error(recipe_path, recipe, exc)}",
              file=sys.stderr)
        return 2
    with engine:
        print(f"station: {recipe.product.name}: camera {engine.source.name}, trigger "
              f"{engine.trigger.name}, models {engine.inspector.model_versions}, decision "
              f"{engine.inspector.decision.rule}", flush=True)
        stats = run_headless(engine, seconds, show_parts=not quiet)
        summary = truth_summary(engine)
        timing = stats.reject_timing
        blocked = engine.not_inspecting()
    print(f"inspected {stats.parts} parts: {stats.passed} passed, {stats.rejected} rejected, "
          f"{stats.errors} errors; {stats.dropped_frames} frames dropped", flush=True)
    if summary["unknown"] < stats.parts:
        print("against ground truth: "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items() if k != "unknown"))
    if timing.get("count"):
        print(f"reject outputs: {timing['count']}, timing error p50 {timing['p50']:.2f} ms, "
              f"p99 {timing['p99']:.2f} ms, max {timing['max']:.2f} ms")
    for alarm in blocked:  # a supervisor (systemd, a script) must see that the line was unsafe
        print(f"station {command}: ended while not inspecting: {alarm.kind}: {alarm.message}",
              file=sys.stderr)
    return NOT_INSPECTING_EXIT if blocked else 0
