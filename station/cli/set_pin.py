"""``station set-pin``: set (or change) the engineer PIN of a recipe.

A recipe with ``engineer.pin_hash = ""`` keeps engineer mode locked: the window never lets
whoever comes first choose the PIN. Whoever can write the recipe file sets it here, typed
twice without echo (or one line on stdin with ``--pin-stdin``, for scripts). Only a salted
PBKDF2 hash goes into the recipe, through the recipe's own write-back (validated, comments
kept, dated backup beside it), and the change is recorded as an event in the records.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TextIO

from station.config import pin_problem


class PinInputError(ValueError):
    """The PIN given cannot be used (too short, two entries differ, nothing entered)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="the recipe (TOML) to change")
    parser.add_argument("--pin-stdin", action="store_true",
                        help="read the PIN from the first line of stdin instead of asking twice")


def read_pin(from_stdin: bool, stdin: TextIO | None = None) -> str:
    """The new PIN: one line of ``stdin``, or typed twice at the terminal without echo."""
    if from_stdin:
        line = (stdin or sys.stdin).readline()
        if not line:
            raise PinInputError("--pin-stdin: nothing on stdin")
        pin = line.rstrip("\r\n")
    else:
        try:
            pin = getpass.getpass("New engineer PIN: ")
            again = getpass.getpass("Type it again: ")
        except EOFError:
            raise PinInputError("no PIN entered") from None
        if pin != again:
            raise PinInputError("the two entries differ; nothing changed")
    problem = pin_problem(pin)
    if problem:
        raise PinInputError(f"{problem}; nothing changed")
    return pin


def record_pin_change(recipe, who: str, had_pin: bool) -> str:
    """Record the change in the recipe's records; '' or why it could not be recorded."""
    from station.records import Records, RecordsError

    try:
        with Records.from_recipe(recipe) as records:
            records.record_event(who, "engineer.pin_hash", "set" if had_pin else "", "changed")
    except (RecordsError, OSError) as exc:
        return str(exc)
    return ""


def current_pin_hash(path: Path) -> str | None:
    """The recipe's ``engineer.pin_hash`` ('' = none), or None when only that key is
    refused (a malformed hash is what set-pin repairs); any other problem raises."""
    from station.config import RecipeError, load_recipe

    try:
        return load_recipe(path, check_files=False).engineer.pin_hash
    except RecipeError as exc:
        if any(issue.key != "engineer.pin_hash" for issue in exc.issues):
            raise
        return None


def run(args: argparse.Namespace) -> int:
    from station.config import RecipeError, load_recipe, set_pin

    try:
        before = current_pin_hash(args.recipe)
        pin = read_pin(args.pin_stdin)
        backup = set_pin(args.recipe, pin)
        recipe = load_recipe(args.recipe, check_files=False)
    except (RecipeError, PinInputError, OSError) as exc:
        for line in str(exc).splitlines():
            print(f"station set-pin: {line}", file=sys.stderr)
        return 2
    kept = f"; previous version kept as {backup.name}" if backup else ""
    print(f"station set-pin: engineer PIN set for {args.recipe} (stored as a salted hash{kept})")
    problem = record_pin_change(recipe, f"set-pin ({_user()})", before != "")
    if problem:
        print(f"station set-pin: warning: the change is not in the records: {problem}",
              file=sys.stderr)
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"
