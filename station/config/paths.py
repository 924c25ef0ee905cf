"""Path fields: resolved against the recipe's folder, checked for existence and kind."""

from __future__ import annotations

import os
from pathlib import Path

from station.config.errors import Invalid


def resolve_path(value: str, folder: Path) -> Path:
    """``value`` relative to the recipe's folder; Invalid for what no file system can hold
    (a NUL character, a name too long, a loop of links)."""
    if "\0" in value:
        raise Invalid("a path (this one holds a NUL character)")
    try:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (folder / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise Invalid(f"a usable path ({exc.__class__.__name__}: {exc})") from None


def check_exists(path: Path, kind: str) -> None:
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), path.exists()
    except (OSError, ValueError) as exc:  # e.g. a name longer than the file system allows
        raise Invalid(f"a usable path ({exc.__class__.__name__}: {exc.strerror or exc})"
                       if isinstance(exc, OSError) else f"a usable path ({exc})") from None
    if kind == "dir" and not is_dir:
        raise Invalid(f"an existing folder (not found: {path})" if not exists
                       else f"a folder ({path} is a file)")
    if kind == "file" and not is_file:
        raise Invalid(f"an existing file (not found: {path})" if not exists
                       else f"a regular file ({path} is {_what_is(path)})")
    if not exists:
        raise Invalid(f"an existing path (not found: {path})")


def _what_is(path: Path) -> str:
    """'a folder', 'a device', ... for messages about a path of the wrong kind."""
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    if path.is_char_device() or path.is_block_device():
        return "a device"
    if path.is_fifo():
        return "a named pipe"
    if path.is_socket():
        return "a socket"
    return "not a regular file"


def check_kind_if_present(path: Path, kind: str) -> None:
    """A path the station creates when missing must not already be something else."""
    try:
        exists = path.exists()
    except (OSError, ValueError):
        return  # the component that creates it names the problem
    if exists and kind == "dir" and not path.is_dir():
        raise Invalid(f"a folder ({path} is {_what_is(path)})")
