"""Product recipes: one TOML file per product, loaded into frozen dataclasses and validated.

Switching products means switching recipes, so a recipe must be refused *before* the line
runs on it, with a message a line engineer can act on: the file, the line, the dotted key,
the value found and the value expected, e.g.::

    recipes/demo.toml:23: reject.pulse_ms = -5: expected an integer between 1 and 10000

The validator is generic: each TOML table maps to a dataclass, the type of each key comes from
the field annotation and its range, choices, help and path handling from the field's
``metadata`` (``min``, ``max``, ``gt``, ``lt``, ``choices``, ``help``, ``path``,
``must_exist``, ``required``, ``nonempty``; ``file_only`` marks keys the GUI must never offer
for editing: native code, test-only port URLs, the PIN hash). ``[localize]`` and ``[align]``
are the parameter dataclasses of :mod:`station.vision.localize` and :mod:`station.vision.align`, validated
the same way.

Hostile files are refused the same way: a binary or non-UTF-8 file, nesting deeper than
:data:`MAX_NESTING`, reject templates that would allocate without bound, pyserial URLs as ports
(:func:`port_problem`), GenTL producers outside the trusted folders, singular intrinsics and
out-of-bounds PIN hashes; tests/test_recipe_properties.py checks with hypothesis that any
text gives a Recipe or ``file:line:`` lines, nothing else.

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

from station.vision.align import AlignParams
from station.vision.localize import LocalizeParams

# The defect kinds the simulated camera renders (station.sim draws them; the recipe names them).
SIMULATED_DEFECTS: tuple[str, ...] = (
    "scratch",
    "chipped_edge",
    "contamination",
    "damaged_thread",
    "bent_tip",
    "broken_tip",
)


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


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A recipe field: its default, the help an engineer sees, and its validation metadata."""
    if is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


# --- sections -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProductSection:
    name: str = _opt("", "product name shown to the operator and stored with every record",
                     required=True, nonempty=True, max_len=120)
    description: str = _opt("", "free text for the engineer", multiline=True)


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
                                    choices=SIMULATED_DEFECTS)


@dataclass(frozen=True)
class CameraSection:
    source: str = _opt("simulated", "where frames come from",
                       choices=("simulated", "opencv", "video", "folder", "genicam"))
    device: str = _opt("0", "opencv: index ('0' = /dev/video0) or device path; video: file; "
                       "folder: image folder; genicam: camera id ('' = first camera)")
    cti: str = _opt("", "GenTL producer (.cti) for genicam cameras; loaded as native code, so "
                    "only from a folder in GENICAM_GENTL64_PATH or STATION_GENTL_PATH (or the "
                    "genicam wheel's own)", path=True, kind="file", file_only=True)
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
    rule: str = _opt("either", "either model rejects / both must / only one model decides; "
                     "left out: either with two models, the one model's name with one",
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
    # strictly inside (0, 1), as FreeRunTrigger requires; "max" only bounds the GUI's editor
    line_frac: float = _opt(0.5, "where the crossing line sits across the ROI (between 0 and "
                            "1, both excluded)", gt=0, lt=1, max=1)
    direction: str = _opt("left_to_right", "direction parts travel in the image",
                          choices=("left_to_right", "right_to_left",
                                   "top_to_bottom", "bottom_to_top"))
    serial_message: str = _opt("TRIG\n", "bytes that mean 'part here' on the serial link",
                               wire=True)
    serial_line: str = _opt("", "modem input line used as trigger ('' = bytes)",
                            choices=("", "CTS", "DSR", "CD", "RI"))
    debounce_ms: float = _opt(20.0, "ignore triggers closer than this (ms)", min=0, max=10000)


REJECT_MESSAGE_FIELDS = ("part_id", "verdict", "seq")


@dataclass(frozen=True)
class RejectSection:
    enabled: bool = _opt(False, "drive the reject output")
    port: str = _opt("", "serial port: a device (/dev/ttyUSB0, /dev/serial/by-id/..., COM3, "
                     "a /dev/pts pty) or loop:// (nothing wired); the serial trigger uses it too")
    allow_url_ports: bool = _opt(False, "tests only: let reject.port be any pyserial URL "
                                 "(socket://, spy://, rfc2217://) or non-device path; never on "
                                 "a line: such URLs open network connections or write files",
                                 file_only=True)
    baudrate: int = _opt(115200, "serial speed (baud)", min=50, max=4_000_000)
    mode: str = _opt("line", "pulse a modem line, or send a byte message",
                     choices=("line", "message"))
    line: str = _opt("DTR", "modem line pulsed in line mode", choices=("DTR", "RTS"))
    message: str = _opt("REJECT {part_id}\n",
                        "message template; fields {part_id}, {verdict}, {seq}", wire=True)
    ack: str = _opt("", "expected acknowledgement ('' = none)", wire=True)
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
    heartbeat_message: str = _opt("HB\n", "heartbeat bytes", wire=True)


@dataclass(frozen=True)
class RecordsSection:
    database: str = _opt("records/records.sqlite", "SQLite database (created if missing)",
                         path=True, must_exist=False)
    images_dir: str = _opt("records/images", "folder for reject (and sampled pass) images",
                           path=True, must_exist=False, kind="dir")
    save_rejects: bool = _opt(True, "store the image of every reject")
    pass_sample_rate: float = _opt(0.01, "share of passes whose image is stored", min=0, max=1)
    disk_budget_mb: int = _opt(2000, "image store size limit (MB); oldest go first",
                               min=1, max=10_000_000)
    min_free_mb: float = _opt(100.0, "free disk space (MB) record images never use: it is "
                              "kept for the rows", min=0, max=1_000_000)


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


# iterations bounded both ways: too few is weak, too many stalls every check_pin (~0.4 s at
# the maximum here); the salt is 16..64 bytes of hex, the digest a sha256 (32 bytes)
PIN_ITERATIONS = 200_000
PIN_MIN_ITERATIONS = 100_000
PIN_MAX_ITERATIONS = 1_000_000
_PIN_RE = re.compile(r"^pbkdf2_sha256\$([1-9][0-9]{0,8})\$((?:[0-9a-f]{2}){16,64})\$([0-9a-f]{64})$")
PIN_UNSET_HELP = ('"" = engineer mode is LOCKED: no PIN set; set one with '
                  "`station set-pin --recipe R`")


@dataclass(frozen=True)
class EngineerSection:
    pin_hash: str = _opt("", "engineer PIN hash 'pbkdf2_sha256$iterations$salt$hash' (from "
                         "`station set-pin --recipe R` or hash_pin()); " + PIN_UNSET_HELP,
                         file_only=True)

    @property
    def pin_set(self) -> bool:
        """A PIN hash is stored: engineer mode opens for whoever enters that PIN."""
        return _pin_parts(self.pin_hash) is not None

    @property
    def locked(self) -> bool:
        """No PIN is set: engineer mode cannot be entered from the screen at all (someone with
        file access sets a PIN with `station set-pin`; the first person at the screen cannot)."""
        return not self.pin_set

    @property
    def pin_required(self) -> bool:
        """Kept for callers written before ``locked``: True when a PIN is stored."""
        return self.pin_set


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


MAX_NESTING = 32  # arrays / inline tables; a recipe needs 2 (camera_matrix)


@dataclass
class _Scan:
    """What a lexical pass over the TOML text found (tomllib reports no positions)."""

    top: list[bool]  # per line (0-based): the line starts outside any string or bracket
    deep_line: int | None = None  # first line nested deeper than MAX_NESTING


def _scan(text: str) -> _Scan:
    """One pass over the text tracking strings (all four kinds), comments and bracket depth.

    Linear in the text and never recursive, so a hostile file costs no more than its length;
    a ``'''`` inside a one-line string stays inside that string.
    """
    top = [True]
    scan = _Scan(top)
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


def _key_lines(text: str, scan: _Scan | None = None) -> dict[str, int]:
    """Map each dotted key, its parents and each table header to its first 1-based line.

    Only lines that start outside strings and brackets count (from :func:`_scan`), so the
    continuation lines of multi-line arrays and strings are never taken for keys.
    """
    scan = scan or _scan(text)
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
            prefix = _split_key(header.group(1))
            _add_key(lines, prefix, number)
            continue
        key_text = _key_part(line)
        if key_text is not None:
            _add_key(lines, prefix + _split_key(key_text), number)
    return lines


def _add_key(lines: dict[str, int], parts: list[str], number: int) -> None:
    """Record a key and every parent it implies (``a.b.c = 1`` defines ``a`` and ``a.b``)."""
    for end in range(1, len(parts) + 1):
        lines.setdefault(".".join(parts[:end]), number)


class _Context:
    """Where errors are reported: file name, key->line map, recipe folder, file checks."""

    def __init__(self, file: str, text: str, folder: Path, check_files: bool,
                 scan: _Scan | None = None):
        self.file = file
        self.lines = _key_lines(text, scan)
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


# --- the generic validator ---------------------------------------------------------------

def _show(value: Any) -> str:
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
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _range_phrase(meta: dict) -> str:
    """'between 1 and 10000', 'greater than 0', '0 or more', ... ('' when unbounded)."""
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if meta.get("lt") is not None:
        below = f"less than {_num(meta['lt'])}"
        above = (f"greater than {_num(gt)}" if gt is not None
                 else f"at least {_num(lo)}" if lo is not None else "")
        return f"{above} and {below}" if above else below
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
    if meta.get("lt") is not None and value >= meta["lt"]:
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
    limit = meta.get("max_len", MAX_STRING_LENGTH)
    if len(value) > limit:
        raise _Invalid(f"a string of at most {limit} characters (this one has {len(value)})")
    if not meta.get("wire"):
        allowed = "\n\t" if meta.get("multiline") else ""
        bad = next((ch for ch in value
                    if (ord(ch) < 0x20 or ord(ch) == 0x7F) and ch not in allowed), None)
        if bad is not None:
            raise _Invalid(f"text without control characters (this one holds {bad!r})")
    if meta.get("path"):
        if not value:
            return Path() if tp is Path else ""
        resolved = _resolve(value, ctx.folder)
        if ctx.check_files and meta.get("must_exist", True):
            _check_exists(resolved, meta.get("kind", "any"))
        elif ctx.check_files:
            _check_kind_if_present(resolved, meta.get("kind", "any"))
        return resolved if tp is Path else str(resolved)
    return Path(value) if tp is Path else value


MAX_STRING_LENGTH = 4096  # a recipe value longer than this is a mistake or an attack


def _resolve(value: str, folder: Path) -> Path:
    """``value`` relative to the recipe's folder; _Invalid for what no file system can hold
    (a NUL character, a name too long, a loop of links)."""
    if "\0" in value:
        raise _Invalid("a path (this one holds a NUL character)")
    try:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (folder / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise _Invalid(f"a usable path ({exc.__class__.__name__}: {exc})") from None


def _check_exists(path: Path, kind: str) -> None:
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), path.exists()
    except (OSError, ValueError) as exc:  # e.g. a name longer than the file system allows
        raise _Invalid(f"a usable path ({exc.__class__.__name__}: {exc.strerror or exc})"
                       if isinstance(exc, OSError) else f"a usable path ({exc})") from None
    if kind == "dir" and not is_dir:
        raise _Invalid(f"an existing folder (not found: {path})" if not exists
                       else f"a folder ({path} is a file)")
    if kind == "file" and not is_file:
        raise _Invalid(f"an existing file (not found: {path})" if not exists
                       else f"a regular file ({path} is {_what_is(path)})")
    if not exists:
        raise _Invalid(f"an existing path (not found: {path})")


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


def _check_kind_if_present(path: Path, kind: str) -> None:
    """A path the station creates when missing must not already be something else."""
    try:
        exists = path.exists()
    except (OSError, ValueError):
        return  # the component that creates it names the problem
    if exists and kind == "dir" and not path.is_dir():
        raise _Invalid(f"a folder ({path} is {_what_is(path)})")


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
    recipe = _check_camera(recipe, ctx)
    _check_undistort(recipe.undistort, ctx)
    _check_localize(recipe, ctx)
    recipe = _check_models(recipe, ctx)
    _check_reject(recipe, ctx)
    if recipe.quality.enabled and not recipe.quality.reference:
        ctx.error("quality.reference", 'quality.reference = "": expected a reference JSON '
                  "(station calibrate check) because quality.enabled is true", "quality")
    pin = recipe.engineer.pin_hash
    if pin and _pin_parts(pin) is None:
        ctx.error("engineer.pin_hash", f"engineer.pin_hash = {_show(pin)}: expected "
                  '"pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>" (from `station set-pin`, '
                  f"iterations {PIN_MIN_ITERATIONS}..{PIN_MAX_ITERATIONS}, salt 16..64 bytes) "
                  f"or {PIN_UNSET_HELP}")
    return recipe


def _check_camera(recipe: Recipe, ctx: _Context) -> Recipe:
    cam = recipe.camera
    if cam.cti:
        from station.sources.genicam import producer_problem  # light: no harvesters import

        try:
            present = Path(cam.cti).is_file()
        except (OSError, ValueError):
            present = True  # producer_problem says what is wrong with it
        problem = producer_problem(cam.cti) if ctx.check_files or present else None
        if problem:
            ctx.error("camera.cti", problem)
    if cam.source in ("folder", "video"):
        kind = "dir" if cam.source == "folder" else "file"
        if not cam.device.strip():
            ctx.error("camera.device", f'camera.device = "": expected the {kind} of the '
                      f"{cam.source} source", "camera.source")
        else:
            try:
                resolved = _resolve(cam.device, ctx.folder)
                if ctx.check_files:
                    _check_exists(resolved, kind)
                recipe = dataclasses.replace(
                    recipe, camera=dataclasses.replace(cam, device=str(resolved)))
            except _Invalid as exc:
                ctx.error("camera.device", f"camera.device = {_show(cam.device)}: expected {exc}")
    elif cam.source == "opencv" and not cam.device.strip():
        ctx.error("camera.device", 'camera.device = "": expected a camera index such as "0" '
                  "or a device path such as /dev/video0")
    return recipe


def _check_undistort(und: UndistortSection, ctx: _Context) -> None:
    from station.vision.undistort import intrinsics_problem

    matrix_ok = len(und.camera_matrix) == 3 and all(len(r) == 3 for r in und.camera_matrix)
    if (und.enabled or und.camera_matrix) and not matrix_ok:
        ctx.error("undistort.camera_matrix", f"undistort.camera_matrix = "
                  f"{_show(und.camera_matrix)}: expected a 3x3 matrix [[fx, 0, cx], [0, fy, cy], "
                  "[0, 0, 1]]" + (" (undistort.enabled is true)" if und.enabled else ""),
                  "undistort")
    elif matrix_ok:
        problem = intrinsics_problem(und.camera_matrix, und.dist_coeffs or (0.0,) * 5)
        if problem and problem.startswith("undistort.camera_matrix"):
            ctx.error("undistort.camera_matrix", f"undistort.camera_matrix = "
                      f"{_show(und.camera_matrix)}: {problem.split(': ', 1)[1].split('; got')[0]}")
    if (und.enabled or und.dist_coeffs) and len(und.dist_coeffs) not in (4, 5, 8, 12, 14):
        ctx.error("undistort.dist_coeffs", f"undistort.dist_coeffs = {_show(und.dist_coeffs)}: "
                  "expected a list of 4, 5, 8, 12 or 14 numbers", "undistort")
    if (und.enabled or und.image_size) and (len(und.image_size) != 2
                                            or max(und.image_size) > IMAGE_SIZE_MAX):
        ctx.error("undistort.image_size", f"undistort.image_size = {_show(und.image_size)}: "
                  f"expected [width, height] in pixels, each at most {IMAGE_SIZE_MAX}",
                  "undistort")


IMAGE_SIZE_MAX = 20000  # px, as camera.width; the remap tables are allocated at this size


ROI_MAX = 100_000  # px; no camera frame is larger


def _check_localize(recipe: Recipe, ctx: _Context) -> None:
    """A region with no size, or an area window that admits nothing, inspects nothing."""
    loc = recipe.localize
    if loc.min_area_frac >= loc.max_area_frac:
        ctx.error("localize.min_area_frac", f"localize.min_area_frac = {_num(loc.min_area_frac)}: "
                  f"expected less than localize.max_area_frac = {_num(loc.max_area_frac)} "
                  "(no part could be found)", "localize.max_area_frac", "localize")
    x, y, w, h = loc.roi
    shown = f"localize.roi = {_show(loc.roi)}"
    if any(v > ROI_MAX for v in loc.roi):
        ctx.error("localize.roi", f"{shown}: expected [x, y, w, h] each at most {ROI_MAX}",
                  "localize")
    elif any(loc.roi) and (w <= 0 or h <= 0):
        ctx.error("localize.roi", f"{shown}: expected a width w and height h above 0 "
                  "([0, 0, 0, 0] = the whole frame)", "localize")
    elif any(loc.roi):
        size = _frame_size(recipe)
        if size and (x + w > size[0] or y + h > size[1]):
            ctx.error("localize.roi", f"{shown}: expected a region inside the {size[0]}x"
                      f"{size[1]} frame (x + w <= {size[0]}, y + h <= {size[1]})", "localize")


def _frame_size(recipe: Recipe) -> tuple[int, int] | None:
    """The frame size when the recipe fixes it (simulated camera, undistortion), else None."""
    und = recipe.undistort
    if und.enabled and len(und.image_size) == 2:
        return und.image_size[0], und.image_size[1]
    if recipe.camera.source == "simulated":
        return recipe.camera.simulated.width, recipe.camera.simulated.height
    return None


def _check_models(recipe: Recipe, ctx: _Context) -> Recipe:
    """A rule must have the models it fuses; a rule left out follows the models configured."""
    models, rule = recipe.models, recipe.decision.rule
    present = [n for n in ("autoencoder", "classifier") if getattr(models, n)]
    decision = ctx.data.get("decision")
    if len(present) == 1 and not (isinstance(decision, dict) and "rule" in decision):
        rule = present[0]  # the default "either" cannot fuse one model: that model decides
        recipe = dataclasses.replace(
            recipe, decision=dataclasses.replace(recipe.decision, rule=rule))
    need = {"autoencoder": ("autoencoder",), "classifier": ("classifier",),
            "both": ("autoencoder", "classifier")}.get(rule, ())
    # A recipe without models is valid (set-up before training); a rule naming a model is not.
    for name in need:
        if not getattr(models, name):
            ctx.error(f"models.{name}", f'models.{name} = "": expected a model file, because '
                      f'decision.rule = "{rule}" uses it', "decision.rule", "models")
    if rule == "either" and len(present) == 1:
        ctx.error("decision.rule", f'decision.rule = "either": expected both models.autoencoder '
                  f"and models.classifier (only models.{present[0]} is set); use decision.rule "
                  f'= "{present[0]}" for one model', f"models.{present[0]}")
    return recipe


REJECT_MESSAGE_SAMPLE = {"part_id": "20260101-120000-000001", "verdict": "FAILSAFE", "seq": 1}
MAX_FORMAT_WIDTH = 64
_SPEC_RE = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<prec>\d+))?"
                      r"[bcdeEfFgGnosxX%]?", re.S)
_DEVICE_PORT_RE = re.compile(
    r"/dev/(?:tty[\w.-]*|cu\.[\w.-]+|pts/\d+|rfcomm\d+|serial/[\w.:+@/-]+)"
    r"|COM[1-9]\d{0,2}|\\\\\.\\COM[1-9]\d{0,2}|loop://")


def port_problem(port: str, allow_url_ports: bool = False) -> str | None:
    """Why ``port`` may not be opened as reject.port (the 'expected ...' text), or None.

    pyserial opens URLs as well as devices: spy://...?file= writes a file and socket:// opens
    a network connection, so only serial devices and loop:// pass unless the recipe sets
    reject.allow_url_ports (for tests)."""
    if allow_url_ports or not port:
        return None
    if _DEVICE_PORT_RE.fullmatch(port) and ".." not in port.split("/"):
        return None
    return ("a serial device (/dev/ttyUSB0, /dev/serial/by-id/..., /dev/pts/N, COM3) or "
            "loop://; other pyserial URLs and paths only with reject.allow_url_ports = true "
            "(tests)")


def _check_reject(recipe: Recipe, ctx: _Context) -> None:
    rej, trig = recipe.reject, recipe.trigger
    if rej.enabled and not rej.port.strip():
        ctx.error("reject.port", 'reject.port = "": expected a serial port (e.g. /dev/ttyUSB0, '
                  "COM3, loop://) because reject.enabled is true", "reject.enabled", "reject")
    problem = port_problem(rej.port, rej.allow_url_ports)
    if problem:
        ctx.error("reject.port", f"reject.port = {_show(rej.port)}: expected {problem}")
    for key in ("message", "ack"):
        problem = _template_problem(getattr(rej, key))
        if problem:
            ctx.error(f"reject.{key}", f"reject.{key} = {_show(getattr(rej, key))}: expected a "
                      f"template using only {{{'}, {'.join(REJECT_MESSAGE_FIELDS)}}} ({problem})")
        elif key == "message" and rej.mode == "message" and not rej.message:
            ctx.error("reject.message", 'reject.message = "": expected a message because '
                      'reject.mode = "message"', "reject.mode", "reject")
    if trig.mode == "serial" and not rej.port.strip():
        ctx.error("trigger.mode", 'trigger.mode = "serial": expected reject.port to name the '
                  "serial port the trigger arrives on", "trigger")
    if trig.mode == "serial" and not (trig.serial_line or trig.serial_message):
        ctx.error("trigger.serial_message", 'trigger.serial_message = "": expected the trigger '
                  "bytes, or set trigger.serial_line", "trigger.mode", "trigger")


def _template_problem(template: str) -> str | None:
    """Why a reject message template cannot be filled safely, or None when it can.

    Checked before formatting: only the known fields, no attribute/index lookups, no nested
    fields in a spec, width and precision at most MAX_FORMAT_WIDTH (``{part_id:>99999999999}``
    would allocate gigabytes); then formatted once with sample values.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return str(exc)
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in REJECT_MESSAGE_FIELDS:
            return "unknown field {" + name + "}"
        if conversion not in (None, "r", "s", "a"):
            return f"unknown conversion !{conversion}"
        found = _SPEC_RE.fullmatch(spec or "")
        if "{" in (spec or "") or not found:
            return f"format spec {spec!r} not understood"
        for part in ("width", "prec"):
            if found.group(part) and int(found.group(part)) > MAX_FORMAT_WIDTH:
                return f"format width or precision above {MAX_FORMAT_WIDTH} in {{{name}:{spec}}}"
    try:
        template.format(**REJECT_MESSAGE_SAMPLE)
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
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
_BOM = "\ufeff"


def _decode(raw: bytes, file: str) -> str:
    """The text of a recipe file, or RecipeError for a binary / non-UTF-8 file (with its byte)."""
    nul = raw.find(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start if nul < 0 else min(nul, exc.start)
        what = "NUL" if bad == nul else "not UTF-8; TOML files are UTF-8 text"
        line = raw.count(b"\n", 0, bad) + 1
        raise RecipeError([RecipeIssue(file, line, "", f"not a text TOML file (byte {bad}: "
                                       f"{what})")]) from None
    _check_text(text, file)
    return text


def _check_text(text: str, file: str) -> None:
    """Refuse a NUL character (a binary file), which tomllib would report as a mere syntax
    error."""
    nul = text.find("\0")
    if nul >= 0:
        byte = len(text[:nul].encode("utf-8", "surrogatepass"))
        raise RecipeError([RecipeIssue(file, text.count("\n", 0, nul) + 1, "",
                                       f"not a text TOML file (byte {byte}: NUL)")])


def _toml_error(message: str, text: str, file: str) -> RecipeError:
    """A tomllib/tomlkit complaint as ``file:line: TOML syntax error: ... (column c)``."""
    found = _POSITION_RE.search(message)
    line = int(found.group(1)) if found else text.count("\n") + 1
    detail = _POSITION_RE.sub("", message)
    column = f" (column {found.group(2)})" if found else ""
    return RecipeError([RecipeIssue(file, line, "", f"TOML syntax error: {detail}{column}")])


def _load_toml(text: str, file: str) -> tuple[dict, _Scan]:
    """tomllib's data and the lexical scan; every failure a RecipeError with a line."""
    _check_text(text, file)
    if text.startswith(_BOM):
        text = " " + text[1:]  # accepted: same columns and lines, tomllib sees no BOM
    scan = _scan(text)
    if scan.deep_line is not None:
        raise RecipeError([RecipeIssue(file, scan.deep_line, "", "arrays or inline tables "
                                       f"nested more than {MAX_NESTING} deep")])
    try:
        return tomllib.loads(text), scan
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(str(exc), text, file) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise RecipeError([RecipeIssue(file, text.count("\n") + 1, "",
                                       f"TOML value refused: {exc}")]) from None


def _parse_text(text: str, path: Path, check_files: bool) -> Recipe:
    file = _display_name(path)
    data, scan = _load_toml(text, file)
    ctx = _Context(file, text, path.resolve().parent, check_files, scan)
    ctx.data = data
    recipe = _build(Recipe, data, "", ctx)
    if recipe is not _FAILED:
        recipe = _check_recipe(dataclasses.replace(recipe, path=path.resolve()), ctx)
    if ctx.issues:
        raise RecipeError(ctx.issues)
    return recipe


def _read(path: Path) -> str:
    """A recipe file's text; a missing, unreadable, binary or non-UTF-8 file is refused."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)  # /dev/zero or a huge file: never read whole
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(str(path), None, "", "recipe file not found")]) from None
    except OSError as exc:
        raise RecipeError([RecipeIssue(str(path), None, "", f"cannot read: {exc}")]) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError([RecipeIssue(_display_name(path), 1, "", "expected a recipe of at "
                                       f"most {MAX_RECIPE_BYTES} bytes (a recipe is a few kB)")])
    return _decode(raw, _display_name(path))


MAX_RECIPE_BYTES = 1 << 20  # a hostile multi-megabyte file is refused before it is parsed


def load_recipe(path: Path | str, check_files: bool = True) -> Recipe:
    """Read and validate a recipe; raises :class:`RecipeError` naming file, line and key.

    ``check_files=False`` skips the existence checks (models, reference, image folders), for
    tools that are about to create those files (training, the demo's first run). A file that
    starts with a UTF-8 byte-order mark is read as if it had none.
    """
    path = Path(path)
    return _parse_text(_read(path), path, check_files)


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
    original = _read(path)
    bom = _BOM if original.startswith(_BOM) else ""  # kept as the file had it
    original = original[len(bom):]
    _load_toml(original, _display_name(path))  # syntax, nesting: refused with their line
    try:
        doc = tomlkit.parse(original)
    except (tomlkit.exceptions.ParseError, RecursionError) as exc:
        raise RecipeError([RecipeIssue(_display_name(path), getattr(exc, "line", None) or 1, "",
                                       f"TOML syntax error: {exc}")]) from None
    for dotted, value in changes.items():
        _set_dotted(doc, dotted, value)
    text = bom + tomlkit.dumps(doc)
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


def _pin_parts(stored: object) -> tuple[int, bytes, str] | None:
    """(iterations, salt, digest hex) of a well-formed stored hash, or None: the one gate both
    the loader and check_pin use, so nothing outside the bounds is ever hashed."""
    if not isinstance(stored, str) or len(stored) > 300:
        return None
    found = _PIN_RE.fullmatch(stored)  # not match: "$" would allow a trailing newline
    if not found:
        return None
    iterations = int(found.group(1))
    if not PIN_MIN_ITERATIONS <= iterations <= PIN_MAX_ITERATIONS:
        return None
    return iterations, bytes.fromhex(found.group(2)), found.group(3)


MIN_PIN_LENGTH = 4


def pin_problem(pin: str) -> str:
    """Why ``pin`` cannot be the engineer PIN ('' when it can): the one rule for
    ``station set-pin`` and the window's change-PIN dialog.

    >>> pin_problem("12")
    'the PIN needs at least 4 characters (got 2)'
    """
    if len(pin) < MIN_PIN_LENGTH:
        return f"the PIN needs at least {MIN_PIN_LENGTH} characters (got {len(pin)})"
    if pin.strip() != pin:
        return "the PIN must not start or end with a space"
    if any(not ch.isprintable() for ch in pin):
        return "the PIN must be printable characters only"
    return ""


def hash_pin(pin: str, iterations: int = PIN_ITERATIONS) -> str:
    """``pbkdf2_sha256$iterations$salt_hex$hash_hex`` for the recipe's ``engineer.pin_hash``."""
    if len(pin) < MIN_PIN_LENGTH:  # the rest of pin_problem is for what a person types
        raise ValueError(f"engineer PIN: expected at least {MIN_PIN_LENGTH} characters")
    if not PIN_MIN_ITERATIONS <= iterations <= PIN_MAX_ITERATIONS:
        raise ValueError(f"engineer PIN: iterations {iterations}: expected between "
                         f"{PIN_MIN_ITERATIONS} and {PIN_MAX_ITERATIONS}")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8", "surrogatepass"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_pin(pin: str, stored: str) -> bool:
    """True when ``pin`` matches the stored hash (constant-time). Never raises and never runs
    more than PIN_MAX_ITERATIONS: an empty, malformed or out-of-bounds ``stored`` never matches
    (``engineer.locked`` tells 'no PIN set' apart)."""
    parts = _pin_parts(stored)
    if parts is None or not isinstance(pin, str) or len(pin) > 1024:
        return False
    iterations, salt, expected = parts
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8", "surrogatepass"), salt, iterations)
    return hmac.compare_digest(digest.hex(), expected)


def set_pin(path: Path | str, pin: str) -> Path | None:
    """Store a new engineer PIN in a recipe file (for `station set-pin`); returns the backup.

    The PIN is hashed (hash_pin) and written with update_recipe, so the recipe is validated and
    its comments kept; raises ValueError for a PIN under 4 characters, RecipeError for a recipe
    that cannot be loaded.
    """
    return update_recipe(path, {"engineer.pin_hash": hash_pin(pin)}, check_files=False)
