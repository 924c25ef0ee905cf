"""What a refused recipe says: one :class:`RecipeIssue` per problem, ``file:line: key ...``."""

from __future__ import annotations

import re
from dataclasses import dataclass


class RecipeError(ValueError):
    """A recipe that cannot be used. ``issues`` lists every problem (file, line, key, text)."""

    def __init__(self, issues: list[RecipeIssue] | str):
        if isinstance(issues, str):
            issues = [RecipeIssue("", None, "", issues)]
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.key))
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def line(self) -> int | None:
        """Line of the first problem (1-based), for callers that point an editor at it."""
        return self.issues[0].line if self.issues else None

    @property
    def key(self) -> str:
        return self.issues[0].key if self.issues else ""


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe; ``str()`` gives ``file:line: key ...: what was expected``."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {_one_line(self.message)}"


def _one_line(text: str) -> str:
    """Control characters (a key or value may hold newlines) escaped, so one issue is one line."""
    return _CONTROL_RE.sub(lambda m: repr(m.group(0))[1:-1], text)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


class Invalid(Exception):
    """Raised inside conversion; carries the 'expected ...' text the issue ends with."""
