"""Progress bars on long work that suit where they are read.

A terminal redraws one line ten times a second. A log (stderr redirected to a file, a CI
job, a service's journal) keeps every redraw: a 23-minute ``station train`` wrote about
ten thousand carriage-return updates into one line. Where the stream is not a terminal the
bar is redrawn at most every :data:`LOG_INTERVAL_S` seconds instead, and always at its end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

#: seconds between two redraws of a bar written to a log rather than a terminal
LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr (or ``file``), redrawn at most every
    :data:`LOG_INTERVAL_S` seconds when that stream is not a terminal (unless ``mininterval``
    says otherwise).

    >>> import io
    >>> log = io.StringIO()
    >>> total = sum(progress_bar(range(100_000), desc="crops", file=log))
    >>> log.getvalue().count("crops:")  # the first and the last state, not one per step
    2
    """
    stream = kwargs.setdefault("file", sys.stderr)
    if not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", 2 * LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
