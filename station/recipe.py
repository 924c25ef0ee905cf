"""Product recipes: one TOML file per product, loaded into frozen dataclasses and validated.

Switching products means switching recipes, so a recipe must be refused *before* the line
runs on it, with a message a line engineer can act on: the file, the line, the dotted key,
the value found and the value expected, e.g.::

    recipes/demo.toml:23: reject.pulse_ms = -5: expected an integer between 1 and 10000

The validator is generic: each TOML table maps to a dataclass, the type of each key comes from
the field annotation and its range, choices, help and path handling from the field's
``metadata`` (``min``, ``max``, ``gt``, ``choices``, ``help``, ``path``, ``must_exist``,
``required``, ``nonempty``). ``[localize]`` and ``[align]`` are the parameter dataclasses of
:mod:`station.localize` and :mod:`station.align`, validated the same way.

Path fields (``metadata["path"]``) are resolved relative to the recipe's folder and stored as
absolute path strings ("" = not set). Write-back (:func:`update_recipe`) edits the TOML text
with tomlkit so comments and layout survive, validates the result before writing, writes
atomically and leaves a timestamped backup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import os
import re
import secrets
import shutil
import string
import tempfile
import time
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomlkit

from station.align import AlignParams
from station.localize import LocalizeParams
from station.synthetic import DEFECT_TYPES


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
        return f"{where}: {self.message}"


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A recipe field: its default, the help an engineer sees, and its validation metadata."""
    if is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


# --- sections -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProductSection:
    name: str = _opt("", "product name shown to the operator and stored with every record",
                     required=True, nonempty=True)
    description: str = _opt("", "free text for the engineer")


@dataclass(frozen=True)
class SimulatedCamera:
    width: int = _opt(960, "frame width (px)", min=64, max=8192)
    height: int = _opt(540, "frame height (px)", min=64, max=8192)
    fps: float = _opt(30.0, "frames per second", gt=0, max=1000)
    speed_px_s: float = _opt(300.0, "belt speed (px per second)", gt=0, max=100000)
    pitch_px: float = _opt(480.0, "distance between parts on the belt (px)", gt=0, max=100000)
    defect_rate: float = _opt(0.2, "share of parts rendered with a defect", min=0, max=1)
    seed: int = _opt(0, "random seed: the same seed gives the same parts", min=0)
    color: bool = _opt(False, "render colour (BGR) frames instead of grey")
    images: str = _opt("", "optional folder of real part photos to carry across the belt",
                       path=True, kind="dir")
    defects: tuple[str, ...] = _opt((), "defect kinds rendered on defective parts (empty = all)",
                                    choices=DEFECT_TYPES)


@dataclass(frozen=True)
class CameraSection:
    source: str = _opt("simulated", "where frames come from",
                       choices=("simulated", "opencv", "video", "folder", "genicam"))
    device: str = _opt("0", "opencv: index ('0' = /dev/video0) or device path; video: file; "
                       "folder: image folder; genicam: camera id ('' = first camera)")
    cti: str = _opt("", "GenTL producer (.cti) for genicam cameras", path=True, kind="file")
    backend: str = _opt("any", "OpenCV capture backend",
                        choices=("any", "v4l2", "gstreamer", "ffmpeg"))
    width: int = _opt(0, "requested frame width (px); 0 = driver default", min=0, max=20000)
    height: int = _opt(0, "requested frame height (px); 0 = driver default", min=0, max=20000)
    fps: float = _opt(0.0, "requested frames per second; 0 = driver default", min=0, max=10000)
    exposure_us: float = _opt(0.0, "exposure time (microseconds); 0 = driver default",
                              min=0, max=10_000_000)
    gain_db: float | None = _opt(None, "analogue gain (dB); absent = driver default",
                                 min=0, max=60)
    pixel_format: str = _opt("mono8", "pixel format delivered to the pipeline",
                             choices=("mono8", "bgr8"))
    loop: bool = _opt(True, "video/folder sources: start again at the end")
    simulated: SimulatedCamera = _opt(SimulatedCamera(), "the simulated conveyor")


@dataclass(frozen=True)
class UndistortSection:
    enabled: bool = _opt(False, "undistort frames before anything else")
    camera_matrix: tuple[tuple[float, ...], ...] = _opt(
        (), "3x3 intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (station calibrate camera)")
    dist_coeffs: tuple[float, ...] = _opt((), "distortion coefficients (4, 5, 8, 12 or 14)")
    image_size: tuple[int, ...] = _opt((), "[w, h] of the frames the calibration used", min=1)


@dataclass(frozen=True)
class ModelsSection:
    autoencoder: str = _opt("", "autoencoder ONNX file ('' = none)", path=True, kind="file")
    classifier: str = _opt("", "classifier ONNX file ('' = none)", path=True, kind="file")
    provider: str = _opt("auto", "onnxruntime execution provider",
                         choices=("auto", "cpu", "cuda"))
    threads: int = _opt(0, "inference threads; 0 = automatic", min=0, max=256)
    size: int = _opt(0, "crop size (px); 0 = take it from the model metadata", min=0, max=4096)


@dataclass(frozen=True)
class DecisionSection:
    rule: str = _opt("either", "either model rejects / both must / only one model decides",
                     choices=("either", "both", "autoencoder", "classifier"))
    autoencoder_threshold: float = _opt(
        1.0, "reject above this normalized score (1.0 = the model's own threshold)",
        gt=0, max=1000)
    classifier_threshold: float = _opt(
        1.0, "reject above this normalized score (1.0 = the model's own threshold)",
        gt=0, max=1000)
    on_error: str = _opt("reject", "verdict when a part cannot be inspected",
                         choices=("reject", "pass"))


@dataclass(frozen=True)
class TriggerSection:
    mode: str = _opt("free_run", "what starts an inspection: free_run = a part crossing the "
                     "line; serial = a sensor on the serial link; software = the operator's "
                     "button; hardware = every frame is a part (triggered camera, photo folder)",
                     choices=("free_run", "serial", "software", "hardware"))
    line_frac: float = _opt(0.5, "where the crossing line sits across the ROI (0..1)",
                            min=0, max=1)
    direction: str = _opt("left_to_right", "direction parts travel in the image",
                          choices=("left_to_right", "right_to_left",
                                   "top_to_bottom", "bottom_to_top"))
    serial_message: str = _opt("TRIG\n", "bytes that mean 'part here' on the serial link")
    serial_line: str = _opt("", "modem input line used as trigger ('' = bytes)",
                            choices=("", "CTS", "DSR", "CD", "RI"))
    debounce_ms: float = _opt(20.0, "ignore triggers closer than this (ms)", min=0, max=10000)


REJECT_MESSAGE_FIELDS = ("part_id", "verdict", "seq")


@dataclass(frozen=True)
class RejectSection:
    enabled: bool = _opt(False, "drive the reject output")
    port: str = _opt("", "serial port: /dev/ttyUSB0, COM3, a pty path, or loop:// for tests")
    baudrate: int = _opt(115200, "serial speed (baud)", min=50, max=4_000_000)
    mode: str = _opt("line", "pulse a modem line, or send a byte message",
                     choices=("line", "message"))
    line: str = _opt("DTR", "modem line pulsed in line mode", choices=("DTR", "RTS"))
    message: str = _opt("REJECT {part_id}\n",
                        "message template; fields {part_id}, {verdict}, {seq}")
    ack: str = _opt("", "expected acknowledgement ('' = none)")
    ack_timeout_ms: int = _opt(200, "how long to wait for the acknowledgement (ms)",
                               min=1, max=10000)
    delay_mode: str = _opt("time", "fire after a delay in ms, or after N further parts",
                           choices=("time", "count"))
    delay_ms: float = _opt(500.0, "trigger-to-reject delay (ms), delay_mode = time",
                           min=0, max=600000)
    delay_parts: int = _opt(3, "parts between camera and reject point, delay_mode = count",
                            min=1, max=10000)
    pulse_ms: int = _opt(50, "pulse width (ms)", min=1, max=10000)
    fail_safe: str = _opt("reject", "action when no verdict is ready in time",
                          choices=("reject", "pass"))
    heartbeat_s: float = _opt(0.0, "heartbeat period (s); 0 = off", min=0, max=3600)
    heartbeat_message: str = _opt("HB\n", "heartbeat bytes")


@dataclass(frozen=True)
class RecordsSection:
    database: str = _opt("records/records.sqlite", "SQLite database (created if missing)",
                         path=True, must_exist=False)
    images_dir: str = _opt("records/images", "folder for reject (and sampled pass) images",
                           path=True, must_exist=False)
    save_rejects: bool = _opt(True, "store the image of every reject")
    pass_sample_rate: float = _opt(0.01, "share of passes whose image is stored", min=0, max=1)
    disk_budget_mb: int = _opt(2000, "image store size limit (MB); oldest go first",
                               min=1, max=10_000_000)


@dataclass(frozen=True)
class QualitySection:
    enabled: bool = _opt(False, "check focus, brightness, contrast and glare")
    reference: str = _opt("", "quality reference JSON (station calibrate check)",
                          path=True, kind="file")
    interval_s: float = _opt(60.0, "seconds between checks; 0 = at start-up only",
                             min=0, max=86400)
    focus_drop: float = _opt(0.5, "alarm when focus falls by this fraction", min=0, max=1)
    brightness_shift: float = _opt(30.0, "alarm when brightness moves by this many grey levels",
                                   min=0, max=255)
    contrast_drop: float = _opt(0.4, "alarm when contrast falls by this fraction", min=0, max=1)
    glare_frac: float = _opt(0.02, "alarm when saturated pixels grow by this share",
                             min=0, max=1)


@dataclass(frozen=True)
class ScaleSection:
    mm_per_px: float = _opt(0.0, "millimetres per pixel; 0 = unknown", min=0, max=1000)


_PIN_RE = re.compile(r"^pbkdf2_sha256\$(\d+)\$([0-9a-f]{16,})\$([0-9a-f]{64})$")


@dataclass(frozen=True)
class EngineerSection:
    pin_hash: str = _opt("", "engineer PIN hash 'pbkdf2_sha256$iterations$salt$hash' "
                         "('' = no PIN); set it with the GUI or hash_pin()")

    @property
    def pin_required(self) -> bool:
        return bool(self.pin_hash)


@dataclass(frozen=True)
class Recipe:
    """A whole product recipe. ``path`` is the file it was read from (absolute)."""

    product: ProductSection = _opt(ProductSection(), "the product", required=True)
    camera: CameraSection = _opt(CameraSection(), "camera source and settings")
    undistort: UndistortSection = _opt(UndistortSection(), "lens undistortion")
    localize: LocalizeParams = _opt(LocalizeParams(), "finding the part in the frame")
    align: AlignParams = _opt(AlignParams(), "canonical pose and crop")
    models: ModelsSection = _opt(ModelsSection(), "model files and inference")
    decision: DecisionSection = _opt(DecisionSection(), "thresholds and fusion rule")
    trigger: TriggerSection = _opt(TriggerSection(), "what starts an inspection")
    reject: RejectSection = _opt(RejectSection(), "reject output")
    records: RecordsSection = _opt(RecordsSection(), "records and image store")
    quality: QualitySection = _opt(QualitySection(), "image-quality checks")
    scale: ScaleSection = _opt(ScaleSection(), "pixel scale")
    engineer: EngineerSection = _opt(EngineerSection(), "engineer mode")
    path: Path = field(default=Path("recipe.toml"), metadata={"internal": True})

    @property
    def folder(self) -> Path:
        """The recipe's folder: relative paths in the recipe are relative to it."""
        return self.path.parent


# --- key -> line ------------------------------------------------------------------------

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_key(text: str) -> list[str]:
    """Split a TOML dotted key (bare or quoted parts) into its parts."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^.\s]+)', text)
    return [a or b or c for a, b, c in parts]


def _bracket_depth(text: str) -> int:
    """Net ``[``/``{`` opened by a line (strings and comments skipped), for multi-line values."""
    depth, quote, i = 0, "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth


def _key_lines(text: str) -> dict[str, int]:
    """Map each dotted key and table header to its (first) 1-based line number.

    tomllib reports no positions, so the text is scanned: ``[table]`` headers set the prefix,
    ``key = value`` lines add keys; continuation lines of multi-line arrays and strings are
    skipped.
    """
    lines: dict[str, int] = {}
    prefix: list[str] = []
    in_string: str | None = None
    depth = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            depth = max(0, depth + _bracket_depth(line))
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER_RE.match(line)
        if header and "=" not in line.split("]")[0]:
            prefix = _split_key(header.group(1))
            lines.setdefault(".".join(prefix), number)
            continue
        if "=" not in line:
            continue
        key_text, value = line.split("=", 1)
        lines.setdefault(".".join(prefix + _split_key(key_text)), number)
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                in_string = quote
        if not in_string:
            depth = max(0, _bracket_depth(value))
    return lines


class _Context:
    """Where errors are reported: file name, key->line map, recipe folder, file checks."""

    def __init__(self, file: str, text: str, folder: Path, check_files: bool):
        self.file = file
        self.lines = _key_lines(text)
        self.folder = folder
        self.check_files = check_files
        self.issues: list[RecipeIssue] = []

    def line_of(self, key: str) -> int | None:
        parts = key.replace("[", ".[").split(".")
        parts = [p for p in parts if not p.startswith("[")]
        while parts:
            found = self.lines.get(".".join(parts))
            if found:
                return found
            parts.pop()
        return None

    def error(self, key: str, message: str, line: int | None = None) -> None:
        self.issues.append(RecipeIssue(self.file, line or self.line_of(key), key, message))


# --- the generic validator ---------------------------------------------------------------

def _show(value: Any) -> str:
    """A value as TOML spells it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _range_phrase(meta: dict) -> str:
    """'between 1 and 10000', 'greater than 0', '0 or more', ... ('' when unbounded)."""
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}"
    if gt is not None and hi is not None:
        return f"greater than {_num(gt)} and at most {_num(hi)}"
    if lo is not None:
        return f"at least {_num(lo)}" if lo else "0 or more"
    if gt is not None:
        return f"greater than {_num(gt)}"
    if hi is not None:
        return f"at most {_num(hi)}"
    return ""


def _range_text(meta: dict, noun: str) -> str:
    phrase = _range_phrase(meta)
    if not phrase:
        return noun
    return f"{noun} of {phrase}" if phrase[0].isdigit() or phrase.startswith("at ") else (
        f"{noun} {phrase}")


def _in_range(value: float, meta: dict) -> bool:
    if meta.get("min") is not None and value < meta["min"]:
        return False
    if meta.get("gt") is not None and value <= meta["gt"]:
        return False
    return not (meta.get("max") is not None and value > meta["max"])


def _choices_text(choices: tuple) -> str:
    return "one of " + ", ".join(_show(c) for c in choices)


class _Invalid(Exception):
    """Raised inside conversion; carries the 'expected ...' text."""


def _convert(value: Any, tp: Any, meta: dict, key: str, ctx: _Context) -> Any:
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
            raise _Invalid(f"a table [{key}]")
        return _build(tp, value, key, ctx)
    if origin in (tuple, list):
        return _convert_sequence(value, tp, meta, key, ctx)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid("true or false")
        return value
    if tp is int:
        noun = "an integer"
        if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, meta):
            raise _Invalid(_range_text(meta, noun))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value) or not _in_range(value, meta):
            raise _Invalid(_range_text(meta, "a number"))
        return float(value)
    if tp is str or tp is Path:
        return _convert_str(value, tp, meta, key, ctx)
    raise TypeError(f"recipe field {key}: unsupported annotation {tp}")


def _convert_str(value: Any, tp: Any, meta: dict, key: str, ctx: _Context) -> Any:
    choices = meta.get("choices")
    if not isinstance(value, str):
        raise _Invalid(_choices_text(choices) if choices else "a string (in quotes)")
    if choices and value not in choices:
        raise _Invalid(_choices_text(choices))
    if meta.get("nonempty") and not value.strip():
        raise _Invalid("a non-empty string")
    if meta.get("path"):
        if not value:
            return Path() if tp is Path else ""
        resolved = _resolve(value, ctx.folder)
        if ctx.check_files and meta.get("must_exist", True):
            _check_exists(resolved, meta.get("kind", "any"))
        return resolved if tp is Path else str(resolved)
    return Path(value) if tp is Path else value


def _resolve(value: str, folder: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (folder / path).resolve()


def _check_exists(path: Path, kind: str) -> None:
    if kind == "dir" and not path.is_dir():
        raise _Invalid(f"an existing folder (not found: {path})" if not path.exists()
                       else f"a folder ({path} is a file)")
    if kind == "file" and not path.is_file():
        raise _Invalid(f"an existing file (not found: {path})" if not path.exists()
                       else f"a file ({path} is a folder)")
    if not path.exists():
        raise _Invalid(f"an existing path (not found: {path})")


def _convert_sequence(value: Any, tp: Any, meta: dict, key: str, ctx: _Context) -> tuple:
    """A TOML array into a tuple: ``tuple[X, ...]``/``list[X]`` any length, ``tuple[X, Y]`` fixed;
    ``min``/``max``/``gt`` apply to every element."""
    args = typing.get_args(tp)
    variable = typing.get_origin(tp) is list or (len(args) == 2 and args[1] is Ellipsis)
    if not isinstance(value, list) or (not variable and len(value) != len(args)):
        raise _Invalid(_sequence_text(tp, meta))
    elem_types = [args[0]] * len(value) if variable else list(args)
    out = []
    for i, (item, item_tp) in enumerate(zip(value, elem_types, strict=True)):
        try:
            out.append(_convert(item, item_tp, meta, f"{key}[{i}]", ctx))
        except _Invalid:
            raise _Invalid(_sequence_text(tp, meta)) from None
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
        text += ", each " + _choices_text(meta["choices"])
    if _range_phrase(meta):
        text += " each " + _range_phrase(meta)
    return text


def _build(cls: type, data: dict, prefix: str, ctx: _Context) -> Any:
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
                          + (f"a table [{key}]" if table else _expected(hints[name], f.metadata)),
                          line=ctx.line_of(prefix) or 1)
            elif is_dataclass(hints[name]):
                kwargs[name] = _build(hints[name], {}, key, ctx)  # defaults, paths resolved
            elif f.metadata.get("path") and isinstance(f.default, str) and f.default:
                kwargs[name] = str(_resolve(f.default, ctx.folder))
            continue
        try:
            kwargs[name] = _convert(data[name], hints[name], dict(f.metadata), key, ctx)
        except _Invalid as exc:
            ctx.error(key, f"{key} = {_show(data[name])}: expected {exc}")
    if len(ctx.issues) > issues_before:
        return _FAILED
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        ctx.error(prefix, f"[{prefix}]: {exc}")
        return _FAILED


_FAILED = object()


def _expected(tp: Any, meta: dict) -> str:
    try:
        _convert(object(), tp, meta, "", _Context("", "", Path("."), False))
    except _Invalid as exc:
        return str(exc)
    return "a value"


def _did_you_mean(name: str, known: dict) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# --- checks that span several keys ------------------------------------------------------

def _check_recipe(recipe: Recipe, ctx: _Context) -> Recipe:
    """Rules no single field can express; returns the recipe with derived paths resolved."""
    cam = recipe.camera
    if cam.source in ("folder", "video"):
        kind = "dir" if cam.source == "folder" else "file"
        if not cam.device.strip():
            ctx.error("camera.device", f'camera.device = "": expected the {kind} of the '
                      f"{cam.source} source")
        else:
            resolved = _resolve(cam.device, ctx.folder)
            try:
                if ctx.check_files:
                    _check_exists(resolved, kind)
                recipe = dataclasses.replace(
                    recipe, camera=dataclasses.replace(cam, device=str(resolved)))
            except _Invalid as exc:
                ctx.error("camera.device", f"camera.device = {_show(cam.device)}: expected {exc}")
    elif cam.source == "opencv" and not cam.device.strip():
        ctx.error("camera.device", 'camera.device = "": expected a camera index such as "0" '
                  "or a device path such as /dev/video0")

    und = recipe.undistort
    matrix_ok = len(und.camera_matrix) == 3 and all(len(r) == 3 for r in und.camera_matrix)
    if (und.enabled or und.camera_matrix) and not matrix_ok:
        ctx.error("undistort.camera_matrix", f"undistort.camera_matrix = "
                  f"{_show(und.camera_matrix)}: expected a 3x3 matrix [[fx, 0, cx], [0, fy, cy], "
                  "[0, 0, 1]]" + (" (undistort.enabled is true)" if und.enabled else ""))
    elif matrix_ok and (und.camera_matrix[0][0] <= 0 or und.camera_matrix[1][1] <= 0):
        ctx.error("undistort.camera_matrix", f"undistort.camera_matrix = "
                  f"{_show(und.camera_matrix)}: expected positive focal lengths fx and fy")
    if (und.enabled or und.dist_coeffs) and len(und.dist_coeffs) not in (4, 5, 8, 12, 14):
        ctx.error("undistort.dist_coeffs", f"undistort.dist_coeffs = {_show(und.dist_coeffs)}: "
                  "expected a list of 4, 5, 8, 12 or 14 numbers")
    if (und.enabled or und.image_size) and len(und.image_size) != 2:
        ctx.error("undistort.image_size", f"undistort.image_size = {_show(und.image_size)}: "
                  "expected [width, height] in pixels")

    models, rule = recipe.models, recipe.decision.rule
    need = {"autoencoder": ("autoencoder",), "classifier": ("classifier",),
            "both": ("autoencoder", "classifier")}.get(rule, ())
    # A recipe without models is valid (set-up before training); a rule naming a model is not.
    for name in need:
        if not getattr(models, name):
            ctx.error(f"models.{name}", f'models.{name} = "": expected a model file, because '
                      f'decision.rule = "{rule}" uses it')

    rej = recipe.reject
    if rej.enabled and not rej.port.strip():
        ctx.error("reject.port", 'reject.port = "": expected a serial port (e.g. /dev/ttyUSB0, '
                  "COM3, loop://) because reject.enabled is true")
    problem = _template_problem(rej.message)
    if problem:
        ctx.error("reject.message", f"reject.message = {_show(rej.message)}: expected a template "
                  f"using only {{{'}, {'.join(REJECT_MESSAGE_FIELDS)}}} ({problem})")
    elif rej.mode == "message" and not rej.message:
        ctx.error("reject.message", 'reject.message = "": expected a message because '
                  'reject.mode = "message"')
    if recipe.trigger.mode == "serial" and not rej.port.strip():
        ctx.error("trigger.mode", 'trigger.mode = "serial": expected reject.port to name the '
                  "serial port the trigger arrives on")
    if recipe.trigger.mode == "serial" and not (recipe.trigger.serial_line
                                                or recipe.trigger.serial_message):
        ctx.error("trigger.serial_message", 'trigger.serial_message = "": expected the trigger '
                  "bytes, or set trigger.serial_line")
    if recipe.quality.enabled and not recipe.quality.reference:
        ctx.error("quality.reference", 'quality.reference = "": expected a reference JSON '
                  "(station calibrate check) because quality.enabled is true")
    if recipe.engineer.pin_hash and not _PIN_RE.match(recipe.engineer.pin_hash):
        ctx.error("engineer.pin_hash", f"engineer.pin_hash = {_show(recipe.engineer.pin_hash)}: "
                  'expected "pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>" (from hash_pin) '
                  'or "" for no PIN')
    return recipe


def _template_problem(template: str) -> str | None:
    """Why a reject message template cannot be filled, or None when it can."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return str(exc)
    unknown = [n for n in names if n not in REJECT_MESSAGE_FIELDS]
    if unknown:
        return "unknown field " + ", ".join("{" + n + "}" for n in unknown)
    try:
        template.format(part_id=1, verdict="REJECT", seq=1)
    except (ValueError, IndexError, KeyError) as exc:
        return str(exc)
    return None


# --- public API ---------------------------------------------------------------------------

def _display_name(path: Path) -> str:
    """The path as the user would recognise it: relative to the working folder when inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _parse_text(text: str, path: Path, check_files: bool) -> Recipe:
    file = _display_name(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _POSITION_RE.search(message)
        line = int(found.group(1)) if found else len(text.splitlines()) or 1
        detail = _POSITION_RE.sub("", message)
        column = f" (column {found.group(2)})" if found else ""
        raise RecipeError([RecipeIssue(file, line, "", f"TOML syntax error: {detail}{column}")]
                          ) from None
    ctx = _Context(file, text, path.resolve().parent, check_files)
    recipe = _build(Recipe, data, "", ctx)
    if recipe is not _FAILED:
        recipe = _check_recipe(dataclasses.replace(recipe, path=path.resolve()), ctx)
    if ctx.issues:
        raise RecipeError(ctx.issues)
    return recipe


def load_recipe(path: Path | str, check_files: bool = True) -> Recipe:
    """Read and validate a recipe; raises :class:`RecipeError` naming file, line and key.

    ``check_files=False`` skips the existence checks (models, reference, image folders), for
    tools that are about to create those files (training, the demo's first run).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(str(path), None, "", "recipe file not found")]) from None
    except OSError as exc:
        raise RecipeError([RecipeIssue(str(path), None, "", f"cannot read: {exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError([RecipeIssue(_display_name(path), line, "",
                                       "not UTF-8 text (TOML files must be UTF-8)")]) from None
    return _parse_text(text, path, check_files)


def list_recipes(folder: Path | str) -> list[Path]:
    """The recipe files in a folder, sorted, without the backups update_recipe leaves."""
    return sorted(p for p in Path(folder).glob("*.toml") if not p.name.endswith(".bak.toml"))


def _plain(value: Any) -> Any:
    """Python value from numpy arrays/scalars, tuples and paths, as TOML can store it."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _set_dotted(doc: tomlkit.TOMLDocument, dotted: str, value: Any) -> None:
    parts = _split_key(dotted)
    if not parts:
        raise RecipeError([RecipeIssue("", None, dotted, f"{dotted!r}: not a key")])
    table: Any = doc
    for part in parts[:-1]:
        if part not in table:
            if value is None:
                return
            table[part] = tomlkit.table()
        table = table[part]
        if not isinstance(table, dict):
            raise RecipeError([RecipeIssue("", None, dotted, f"{dotted}: {part} is not a table")])
    last = parts[-1]
    if value is None:
        if last in table:
            del table[last]
        return
    value = _plain(value)
    item = tomlkit.item(value)
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        item.multiline(True)
    table[last] = item


def update_recipe(path: Path | str, changes: dict[str, Any], backup: bool = True,
                  check_files: bool = True) -> Path | None:
    """Change dotted keys in a recipe file, keeping its comments and layout.

    The changed recipe is validated before anything is written (a refused change raises
    :class:`RecipeError` and leaves the file untouched); the file is replaced atomically; with
    ``backup`` the previous version is kept as ``<name>.YYYYmmdd-HHMMSS.bak.toml`` beside it and
    its path returned. A value of None removes the key (back to the default).
    """
    path = Path(path)
    try:
        original = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError([RecipeIssue(str(path), None, "", f"cannot read: {exc}")]) from None
    try:
        doc = tomlkit.parse(original)
    except tomlkit.exceptions.ParseError as exc:
        raise RecipeError([RecipeIssue(_display_name(path), getattr(exc, "line", None), "",
                                       f"TOML syntax error: {exc}")]) from None
    for dotted, value in changes.items():
        _set_dotted(doc, dotted, value)
    text = tomlkit.dumps(doc)
    _parse_text(text, path, check_files)  # raises before anything is written

    backup_path: Path | None = None
    if backup:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup_path = path.with_name(f"{path.stem}.{stamp}.bak.toml")
        n = 2
        while backup_path.exists():
            backup_path = path.with_name(f"{path.stem}.{stamp}-{n}.bak.toml")
            n += 1
        shutil.copy2(path, backup_path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup_path


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain TOML-able data (tables -> dicts, tuples -> lists, None left out)."""

    def convert(obj: Any) -> Any:
        if is_dataclass(obj):
            return {f.name: convert(getattr(obj, f.name)) for f in fields(obj)
                    if not f.metadata.get("internal") and getattr(obj, f.name) is not None}
        if isinstance(obj, tuple | list):
            return [convert(v) for v in obj]
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return convert(recipe)


def field_info(dotted: str) -> tuple[Any, dict[str, Any]]:
    """The type annotation and validation metadata of a recipe key (``"reject.pulse_ms"``).

    One walk over the section dataclasses, for tooltips and the engineer's editors alike.
    """
    cls: Any = Recipe
    tp: Any = None
    meta: dict[str, Any] = {}
    for part in dotted.split("."):
        found = {f.name: f for f in fields(cls)}.get(part) if is_dataclass(cls) else None
        if found is None:
            raise KeyError(dotted)
        meta = dict(found.metadata)
        tp = typing.get_type_hints(cls)[part]
        cls = tp
    return tp, meta


def field_help(dotted: str) -> str:
    """The help text of a recipe key (e.g. ``"reject.pulse_ms"``), for tooltips."""
    return str(field_info(dotted)[1].get("help", ""))


# --- engineer PIN --------------------------------------------------------------------------

PIN_ITERATIONS = 200_000


def hash_pin(pin: str, iterations: int = PIN_ITERATIONS) -> str:
    """``pbkdf2_sha256$iterations$salt_hex$hash_hex`` for the recipe's ``engineer.pin_hash``."""
    if len(pin) < 4:
        raise ValueError("engineer PIN: expected at least 4 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_pin(pin: str, stored: str) -> bool:
    """True when ``pin`` matches the stored hash (constant-time). An empty or malformed
    ``stored`` never matches; callers check ``engineer.pin_required`` for 'no PIN set'."""
    found = _PIN_RE.match(stored or "")
    if not found:
        return False
    iterations, salt, expected = int(found.group(1)), bytes.fromhex(found.group(2)), found.group(3)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest.hex(), expected)
