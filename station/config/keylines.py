"""Where each key sits in the TOML text (tomllib reports no positions), so errors name a line.

One linear lexical pass (:func:`scan_text`) finds the lines that start outside strings and
brackets and refuses nesting deeper than :data:`MAX_NESTING`; :func:`key_lines` maps each
dotted key, its parents and each table header to its first line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def split_key(text: str) -> list[str]:
    """Split a TOML dotted key (bare or quoted parts) into its parts."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s]+)', text)
    return [a or b or c for a, b, c in parts]


MAX_NESTING = 32  # arrays / inline tables; a recipe needs 2 (camera_matrix)


@dataclass
class Scan:
    """What a lexical pass over the TOML text found (tomllib reports no positions)."""

    top: list[bool]  # per line (0-based): the line starts outside any string or bracket
    deep_line: int | None = None  # first line nested deeper than MAX_NESTING


def scan_text(text: str) -> Scan:
    """One pass over the text tracking strings (all four kinds), comments and bracket depth.

    Linear in the text and never recursive, so a hostile file costs no more than its length;
    a ``'''`` inside a one-line string stays inside that string.
    """
    top = [True]
    scan = Scan(top)
    depth, state, i, n = 0, "", 0, len(text)
    line_start = True
    while i < n:
        ch = text[i]
        if ch == "\n":
            if state in ('"', "'"):
                state = ""  # an unterminated one-line string ends here (tomllib reports it)
            top.append(not state and depth == 0)
            line_start = True
            i += 1
        elif state:
            i = _scan_string(text, i, state)
            if i < 0:
                state, i = "", -i
        elif ch in " \t\r":
            i += 1
        elif ch == "#" or (line_start and depth == 0 and ch == "["):
            nl = text.find("\n", i)  # a comment or a [table] header: nothing nests there
            i = n if nl < 0 else nl
        else:
            line_start = False
            if text.startswith(('"""', "'''"), i):
                state, i = text[i : i + 3], i + 3
            elif ch in "\"'":
                state, i = ch, i + 1
            else:
                depth += 1 if ch in "[{" else -1 if ch in "]}" else 0
                depth = max(depth, 0)
                if depth > MAX_NESTING and scan.deep_line is None:
                    scan.deep_line = len(top)
                i += 1
    return scan


def _scan_string(text: str, i: int, state: str) -> int:
    """Advance inside a string: the next index, or minus the index just past its end."""
    ch = text[i]
    if ch == "\\" and state[0] == '"':
        return i + 1 if text.startswith("\n", i + 1) else i + 2
    if not text.startswith(state, i):
        return i + 1
    end = i + len(state)
    if len(state) == 3:  # up to two more quotes belong to the string: """a"""" ends after a"
        while end < len(text) and end - i < 5 and text[end] == state[0]:
            end += 1
    return -end


def _key_part(line: str) -> str | None:
    """The key of a ``key = value`` line (up to the first ``=`` outside quotes), or None."""
    quote = ""
    for pos, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return line[:pos]
        elif ch == "#":
            return None
    return None


def key_lines(text: str, scan: Scan | None = None) -> dict[str, int]:
    """Map each dotted key, its parents and each table header to its first 1-based line.

    Only lines that start outside strings and brackets count (from :func:`scan_text`), so the
    continuation lines of multi-line arrays and strings are never taken for keys.
    """
    scan = scan or scan_text(text)
    lines: dict[str, int] = {}
    prefix: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if number > len(scan.top) or not scan.top[number - 1]:
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER_RE.match(line)
        if header and "=" not in line.split("]")[0]:
            prefix = split_key(header.group(1))
            _add_key(lines, prefix, number)
            continue
        key_text = _key_part(line)
        if key_text is not None:
            _add_key(lines, prefix + split_key(key_text), number)
    return lines


def _add_key(lines: dict[str, int], parts: list[str], number: int) -> None:
    """Record a key and every parent it implies (``a.b.c = 1`` defines ``a`` and ``a.b``)."""
    for end in range(1, len(parts) + 1):
        lines.setdefault(".".join(parts[:end]), number)
