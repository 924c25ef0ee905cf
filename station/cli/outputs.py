"""Files a command writes at its end, checked where argparse reads their names.

``station replay --json /proc/x.json`` replayed the whole data set and only then stopped on
a raw ``[Errno 2]``; an evaluation or a bench would lose its minutes the same way. A file
that cannot be written is one line naming the option before anything starts. Nothing is
created here: the command makes the folder when it writes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from station.records.schema import pseudo_filesystem


def output_file(text: str) -> Path:
    """A file path the command can write: a folder is refused, and so is a place where
    neither the file nor its folder could be made.

    >>> output_file("/proc/no/such.json")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: '/proc/no/such.json': cannot write there (/proc is a system pseudo-filesystem)
    """
    path = Path(text)
    try:
        problem = _problem(path)
    except OSError as exc:  # a name too long, a folder on the way this user may not enter
        problem = exc.strerror or str(exc)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return path


def _problem(path: Path) -> str:
    if path.is_dir():
        return "a folder; expected a file name"
    if os.path.lexists(path):  # an existing file (or /dev/stdout, a pipe): written as it is
        ok = not path.is_file() or os.access(path, os.W_OK)
        return "" if ok else "cannot write there (the file is not writable)"
    root = pseudo_filesystem(path)  # no file can be made there, whatever root may "write"
    if root:
        return f"cannot write there ({root} is a system pseudo-filesystem)"
    folder = next(p for p in path.absolute().parents if os.path.lexists(p))  # "/" exists
    if not folder.is_dir():
        return f"cannot write there ({folder} is a file, not a folder)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write there (folder {folder} is not writable)"
    return ""
