"""Files a command writes at its end, checked where argparse reads their names.

``station replay --json /proc/x.json`` replayed the whole data set and only then stopped on
a raw ``[Errno 2]``; an evaluation or a bench would lose its minutes the same way. A file
that cannot be written is one line naming the option before anything starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def output_file(text: str) -> Path:
    """A file path the command can write: its folder made, the file opened for writing once
    (and removed again when it did not exist), so a refusal comes now, not at the end.

    >>> output_file("/proc/no/such.json")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: '/proc/no/such.json': cannot write there (No such file or directory)
    """
    path = Path(text)
    existed = path.exists()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: a folder; expected a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: cannot write there ({exc.strerror or exc})") from None
    if not existed:
        path.unlink()
    return path
