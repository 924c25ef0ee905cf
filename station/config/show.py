"""Values and ranges as the error messages spell them (TOML spelling, one line, cut when long)."""

from __future__ import annotations

from typing import Any


def show_value(value: Any) -> str:
    """A value as TOML spells it, for error messages; long values are cut to keep one line."""
    text = _show_full(value)
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX] + "…"


_SHOW_MAX = 120


def _show_full(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of {value.bit_length()} bits>"  # str() refuses > 4300 digits
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return str(value)


def num_text(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def range_phrase(meta: dict) -> str:
    """'between 1 and 10000', 'greater than 0', '0 or more', ... ('' when unbounded)."""
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if meta.get("lt") is not None:
        below = f"less than {num_text(meta['lt'])}"
        above = (f"greater than {num_text(gt)}" if gt is not None
                 else f"at least {num_text(lo)}" if lo is not None else "")
        return f"{above} and {below}" if above else below
    if lo is not None and hi is not None:
        return f"between {num_text(lo)} and {num_text(hi)}"
    if gt is not None and hi is not None:
        return f"greater than {num_text(gt)} and at most {num_text(hi)}"
    if lo is not None:
        return f"at least {num_text(lo)}" if lo else "0 or more"
    if gt is not None:
        return f"greater than {num_text(gt)}"
    if hi is not None:
        return f"at most {num_text(hi)}"
    return ""


def range_text(meta: dict, noun: str) -> str:
    phrase = range_phrase(meta)
    if not phrase:
        return noun
    return f"{noun} of {phrase}" if phrase[0].isdigit() or phrase.startswith("at ") else (
        f"{noun} {phrase}")


def in_range(value: float, meta: dict) -> bool:
    if meta.get("min") is not None and value < meta["min"]:
        return False
    if meta.get("gt") is not None and value <= meta["gt"]:
        return False
    if meta.get("lt") is not None and value >= meta["lt"]:
        return False
    return not (meta.get("max") is not None and value > meta["max"])


def choices_text(choices: tuple) -> str:
    return "one of " + ", ".join(show_value(c) for c in choices)
