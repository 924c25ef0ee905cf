"""Numbers on the command line, checked where argparse reads them.

A budget of ``--minutes -1`` or ``nan`` used to train at the smallest budget without a
word, ``--seconds nan`` ran the demo forever and ``--min-seconds inf`` never finished a
bench. Each numeric option says its range here instead, and a number outside it is one
line from argparse that names the option (``argument --minutes: ...``) before anything
starts.

>>> count(1)("3"), amount(above=0)("2.5")
(3, 2.5)
>>> amount(above=0)("nan")
Traceback (most recent call last):
argparse.ArgumentTypeError: 'nan': expected a finite number, above 0
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def count(low: int = 0, high: int | None = None) -> Callable[[str], int]:
    """An integer from ``low`` (to ``high``, when given)."""
    span = f"from {low} to {high}" if high is not None else f"{low} or more"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number {span}")
        return value

    return parse


def amount(low: float = 0.0, above: float | None = None, below: float | None = None
           ) -> Callable[[str], float]:
    """A finite number: above ``above`` when given, else ``low`` or more; under ``below``
    when given."""
    span = f"above {above:g}" if above is not None else f"{low:g} or more"
    if below is not None:
        span = f"{span} and under {below:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (math.isfinite(value) and (value > above if above is not None else value >= low)
              and (below is None or value < below))
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number, {span}")
        return value

    return parse
