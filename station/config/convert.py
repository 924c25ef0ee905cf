"""The generic validator: a TOML table into its section dataclass, every problem recorded.

The type of each key comes from the field annotation, its range, choices and path handling
from the field's metadata (see :mod:`station.config.schema`); each problem becomes a
:class:`~station.config.errors.RecipeIssue` at the key's line.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from station.config.errors import Invalid, RecipeIssue
from station.config.keylines import Scan, key_lines
from station.config.paths import check_exists, check_kind_if_present, resolve_path
from station.config.show import choices_text, in_range, range_phrase, range_text, show_value


class Context:
    """Where errors are reported: file name, key->line map, recipe folder, file checks."""

    def __init__(self, file: str, text: str, folder: Path, check_files: bool,
                 scan: Scan | None = None):
        self.file = file
        self.lines = key_lines(text, scan)
        self.folder = folder
        self.check_files = check_files
        self.issues: list[RecipeIssue] = []
        self.data: dict = {}  # the TOML as parsed, for rules on what the file spells out

    def line_of(self, key: str) -> int | None:
        parts = key.replace("[", ".[").split(".")
        parts = [p for p in parts if not p.startswith("[")]
        while parts:
            found = self.lines.get(".".join(parts))
            if found:
                return found
            parts.pop()
        return None

    def error(self, key: str, message: str, *also: str, line: int | None = None) -> None:
        """Record an issue at the line of ``key``, else of the first of ``also`` in the file,
        else line 1 (a rule on keys left at their defaults)."""
        for candidate in (key, *also):
            line = line or self.line_of(candidate)
        self.issues.append(RecipeIssue(self.file, line or 1, key, message))


def _convert(value: Any, tp: Any, meta: dict, key: str, ctx: Context) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"recipe field {key}: unsupported annotation {tp}")
        return _convert(value, options[0], meta, key, ctx)
    if origin is typing.Literal:
        return _convert(value, type(typing.get_args(tp)[0]),
                        {**meta, "choices": typing.get_args(tp)}, key, ctx)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise Invalid(f"a table [{key}]")
        return build(tp, value, key, ctx)
    if origin in (tuple, list):
        return _convert_sequence(value, tp, meta, key, ctx)
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid("true or false")
        return value
    if tp is int:
        noun = "an integer"
        if isinstance(value, bool) or not isinstance(value, int) or not in_range(value, meta):
            raise Invalid(range_text(meta, noun))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value) or not in_range(value, meta):
            raise Invalid(range_text(meta, "a number"))
        return float(value)
    if tp is str or tp is Path:
        return _convert_str(value, tp, meta, key, ctx)
    raise TypeError(f"recipe field {key}: unsupported annotation {tp}")


def _convert_str(value: Any, tp: Any, meta: dict, key: str, ctx: Context) -> Any:
    choices = meta.get("choices")
    if not isinstance(value, str):
        raise Invalid(choices_text(choices) if choices else "a string (in quotes)")
    if choices and value not in choices:
        raise Invalid(choices_text(choices))
    if meta.get("nonempty") and not value.strip():
        raise Invalid("a non-empty string")
    limit = meta.get("max_len", MAX_STRING_LENGTH)
    if len(value) > limit:
        raise Invalid(f"a string of at most {limit} characters (this one has {len(value)})")
    if not meta.get("wire"):
        allowed = "\n\t" if meta.get("multiline") else ""
        bad = next((ch for ch in value
                    if (ord(ch) < 0x20 or ord(ch) == 0x7F) and ch not in allowed), None)
        if bad is not None:
            raise Invalid(f"text without control characters (this one holds {bad!r})")
    if meta.get("path"):
        if not value:
            return Path() if tp is Path else ""
        resolved = resolve_path(value, ctx.folder)
        if ctx.check_files and meta.get("must_exist", True):
            check_exists(resolved, meta.get("kind", "any"))
        elif ctx.check_files:
            check_kind_if_present(resolved, meta.get("kind", "any"))
        return resolved if tp is Path else str(resolved)
    return Path(value) if tp is Path else value


MAX_STRING_LENGTH = 4096  # a recipe value longer than this is a mistake or an attack


def _convert_sequence(value: Any, tp: Any, meta: dict, key: str, ctx: Context) -> tuple:
    """A TOML array into a tuple: ``tuple[X, ...]``/``list[X]`` any length, ``tuple[X, Y]`` fixed;
    ``min``/``max``/``gt`` apply to every element."""
    args = typing.get_args(tp)
    variable = typing.get_origin(tp) is list or (len(args) == 2 and args[1] is Ellipsis)
    if not isinstance(value, list) or (not variable and len(value) != len(args)):
        raise Invalid(_sequence_text(tp, meta))
    elem_types = [args[0]] * len(value) if variable else list(args)
    out = []
    for i, (item, item_tp) in enumerate(zip(value, elem_types, strict=True)):
        try:
            out.append(_convert(item, item_tp, meta, f"{key}[{i}]", ctx))
        except Invalid:
            raise Invalid(_sequence_text(tp, meta)) from None
    return tuple(out)


def _sequence_text(tp: Any, meta: dict) -> str:
    args = typing.get_args(tp)
    variable = typing.get_origin(tp) is list or (len(args) == 2 and args[1] is Ellipsis)
    inner = args[0] if args else Any
    if typing.get_origin(inner) in (tuple, list):
        return "a list of lists of numbers"
    noun = "integers" if inner is int else "numbers" if inner is float else "strings"
    count = "" if variable else f"{len(args)} "
    text = f"a list of {count}{noun}"
    if meta.get("choices"):
        text += ", each " + choices_text(meta["choices"])
    if range_phrase(meta):
        text += " each " + range_phrase(meta)
    return text


def build(cls: Any, data: dict, prefix: str, ctx: Context) -> Any:
    """Build dataclass ``cls`` from a TOML table, recording every problem in ``ctx``."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init and not f.metadata.get("internal")}
    dot = f"{prefix}." if prefix else ""
    kwargs: dict[str, Any] = {}
    issues_before = len(ctx.issues)
    for name in data:
        if name not in known:
            where = f"[{prefix}]" if prefix else "the top level"
            ctx.error(f"{dot}{name}", f"{dot}{name}: unknown key in {where}; expected one of: "
                      + ", ".join(known) + _did_you_mean(name, known))
    for name, f in known.items():
        key = f"{dot}{name}"
        if name not in data:
            if f.metadata.get("required"):
                table = is_dataclass(hints[name])
                ctx.error(key, f"{key}: missing; expected "
                          + (f"a table [{key}]" if table else _expected(hints[name], dict(f.metadata))),
                          line=ctx.line_of(prefix) or 1)
            elif is_dataclass(hints[name]):
                kwargs[name] = build(hints[name], {}, key, ctx)  # defaults, paths resolved
            elif f.metadata.get("path") and isinstance(f.default, str) and f.default:
                kwargs[name] = str(resolve_path(f.default, ctx.folder))
            continue
        try:
            kwargs[name] = _convert(data[name], hints[name], dict(f.metadata), key, ctx)
        except Invalid as exc:
            ctx.error(key, f"{key} = {show_value(data[name])}: expected {exc}")
    if len(ctx.issues) > issues_before:
        return FAILED
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        ctx.error(prefix, f"[{prefix}]: {exc}")
        return FAILED


FAILED = object()


def _expected(tp: Any, meta: dict) -> str:
    try:
        _convert(object(), tp, meta, "", Context("", "", Path("."), False))
    except Invalid as exc:
        return str(exc)
    return "a value"


def _did_you_mean(name: str, known: dict) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
