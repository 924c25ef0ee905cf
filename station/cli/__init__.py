"""The ``station`` command: one entry point, one module per subcommand.

Subcommand modules are imported only when their command runs, so ``station --help`` stays
fast and works without the ``train`` extra (torch) installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

# name -> (module under station.cli, one-line help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {}


def register(name: str, module: str, help_text: str) -> None:
    """Add a subcommand; modules are listed here in the order a part flows."""
    COMMANDS[name] = (module, help_text)


register("demo", "demo", "run the station on a simulated line with the demo models")
register("run", "run", "run the station on the line from a recipe (window or --headless)")
register("replay", "replay", "run a folder or data set through the station and compare with labels")
register("devices", "devices", "list cameras, GenICam producers and serial ports on this machine")
register("init-recipe", "init_recipe", "propose a commented recipe from a folder of good images")
register("crops", "crops", "write the aligned crop of every image in a data set, with a montage")
register("train", "train", "train the autoencoder and the classifier from a data set")
register("evaluate", "evaluate", "measure a model folder on a data set: metrics JSON and report")
register("calibrate", "calibrate", "calibrate camera, ROI, pixel scale, thresholds and image quality")
register("bench", "bench", "measure model latency, pipeline throughput and memory: JSON out")
register("export-records", "export_records", "export the inspection records database to CSV")
register("set-pin", "set_pin", "set the engineer PIN of a recipe (stored hashed in the recipe)")
register("fleet", "fleet", "one window with every station an MQTT broker knows")

class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line that names the command and the option (its usage
    is one ``--help`` away), like every other error the station prints."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(f"station.cli.{module}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station",
        description="Camera inspection station: inspect parts, train and calibrate models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_help(sys.stderr)
            print(f"\nstation: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    name, rest = argv[0], argv[1:]
    _, help_text = COMMANDS[name]
    sub = OneLineParser(prog=f"station {name}", description=help_text)
    module = _load(name)
    module.add_arguments(sub)
    try:
        args = sub.parse_args(rest)
    except SystemExit as exc:  # --help (0) or a refused argument (2, said on one line)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        return report_error(name, exc)


DEBUG_ENV = "STATION_DEBUG"


def debugging() -> bool:
    """``STATION_DEBUG=1``: tracebacks are shown (for a bug report), else one line each."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class OneLineFormatter(logging.Formatter):
    """Log records with an exception as one line (``message: Type: text``); the traceback
    only under ``STATION_DEBUG=1``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_info[1] is not None and not debugging():
            exc = record.exc_info[1]
            record = logging.makeLogRecord(record.__dict__)
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return super().format(record)


def _file_in_the_way(exc: Exception) -> Path | None:
    """The file standing where a folder had to be made, when that is what ``exc`` is."""
    name = getattr(exc, "filename", None)
    if not isinstance(exc, (FileExistsError, NotADirectoryError)) or not name:
        return None
    path = Path(name)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    return existing if existing is not None and existing.is_file() else None


def report_error(command: str, exc: Exception) -> int:
    """Say what went wrong in one line (one per problem) on stderr; return the exit code.

    A fault the user can fix (recipe, model, records, camera, serial port, a file) is exit
    code 2. Anything else is a bug in the station: exit code 1, and its traceback only with
    ``STATION_DEBUG=1``, for the report.
    """
    from station.pipeline.startup import startup_errors

    if debugging():
        traceback.print_exception(exc)
    in_the_way = _file_in_the_way(exc)
    if in_the_way is not None:  # --out a/b where a is a file: say so, not "File exists"
        print(f"station {command}: {in_the_way}: a file is where a folder is needed",
              file=sys.stderr)
        return 2
    if isinstance(exc, startup_errors()):
        lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
        for line in lines or [type(exc).__name__]:
            print(f"station {command}: {line}", file=sys.stderr)
        return 2
    detail = " ".join(str(exc).split())[:300]
    print(f"station {command}: internal error: {type(exc).__name__}"
          f"{': ' + detail if detail else ''} (a bug; {DEBUG_ENV}=1 shows the traceback)",
          file=sys.stderr)
    return 1


def require_torch(command: str) -> None:
    """Exit with a clear message when a training command runs without the train extra."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit(
            f"station {command} needs PyTorch, which is in the 'train' extra: "
            "pip install 'inspection-station[train]' (or: pip install -e '.[train]')"
        ) from None


if __name__ == "__main__":
    raise SystemExit(main())
