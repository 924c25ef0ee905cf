"""``station run``: the station on the line, in the window or headless.

Every fault a user can fix at start-up (a refused model, a provider this machine lacks, a
records database that cannot be written, a camera or serial port that will not open) is
one line on stderr naming the recipe file and the key, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

from station.cli.numbers import amount
from station.pipeline.startup import describe_startup_error, startup_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="the product's recipe (TOML)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: print live statistics on the terminal")
    parser.add_argument("--seconds", type=amount(above=0), default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--kiosk", action="store_true", help="full-screen operator window")
    parser.add_argument("--quiet", action="store_true", help="headless: no line per part")
    add_screenshot_argument(parser)
    add_plant_arguments(parser)


def add_screenshot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                        help="with --seconds: save the window as a PNG just before it closes "
                             "(manuals, a support request)")


def add_plant_arguments(parser: argparse.ArgumentParser) -> None:
    """``--modbus``, ``--opcua`` and ``--mqtt``: each overrides (and enables) the recipe's section."""
    parser.add_argument("--mqtt", metavar="URL", default=None,
                        help="publish results, status and alarms to this broker "
                             "(mqtt://host[:port], mqtts:// for TLS); overrides and enables "
                             "the recipe's [mqtt]")
    parser.add_argument("--modbus", metavar="HOST:PORT", type=modbus_address, default=None,
                        help="serve the PLC handshake over Modbus TCP on HOST:PORT (overrides "
                             "and enables the recipe's [modbus]; the window or --headless)")
    parser.add_argument("--opcua", metavar="ENDPOINT", type=opcua_endpoint, default=None,
                        help="serve the station over OPC UA at ENDPOINT, e.g. "
                             "opc.tcp://127.0.0.1:4840/station (overrides and enables the "
                             "recipe's [opcua]; the window or --headless)")


def modbus_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) for ``--modbus``."""
    found = re.fullmatch(r"\[?([^\s\[\]]+?)\]?:(\d{1,5})", text.strip())
    if not found or not 1 <= int(found.group(2)) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT with a port 1..65535, "
                                         "e.g. 127.0.0.1:5020")
    return found.group(1), int(found.group(2))


def opcua_endpoint(text: str) -> str:
    if not re.fullmatch(r"opc\.tcp://[^\s/:]+(:\d{1,5})?(/\S*)?", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected opc.tcp://HOST:PORT/PATH, e.g. "
                                         "opc.tcp://127.0.0.1:4840/station")
    return text.strip()


NOT_INSPECTING_EXIT = 3  # the run ended with the camera lost, the trigger blind or the output down
RECORDS_LOST_EXIT = 4  # the records database refused rows to the end: parts without a record


def run(args: argparse.Namespace) -> int:
    return start_station(args.recipe, headless=args.headless, seconds=args.seconds,
                         kiosk=args.kiosk, quiet=args.quiet, modbus=getattr(args, "modbus", None),
                         opcua=getattr(args, "opcua", None), mqtt=getattr(args, "mqtt", None),
                         screenshot=getattr(args, "screenshot", None))


def screenshot_problem(screenshot: Path | None, headless: bool, seconds: float | None) -> str:
    """Why ``--screenshot`` cannot be honoured ('' when it can): it saves the window at the
    end of a timed run."""
    if screenshot is None:
        return ""
    if headless:
        return "--screenshot saves the window; --headless has none"
    if seconds is None:
        return "--screenshot needs --seconds (the window is saved just before it closes)"
    if screenshot.suffix.lower() != ".png":
        return f"--screenshot {screenshot}: expected a .png file"
    return ""


def start_station(recipe_path: Path, *, headless: bool, seconds: float | None,
                  kiosk: bool = False, quiet: bool = False, command: str = "run",
                  modbus: tuple[str, int] | None = None, opcua: str | None = None,
                  mqtt: str | None = None, screenshot: Path | None = None) -> int:
    """Open the recipe and run it; every startup fault is one clear line and exit code 2.
    ``modbus``, ``opcua`` and ``mqtt`` (the flags) override and enable the recipe's sections."""
    from station.config import RecipeError, load_recipe, mqtt_url_problem
    from station.plant import with_overrides

    problem = screenshot_problem(screenshot, headless, seconds)
    if problem:
        print(f"station {command}: {problem}", file=sys.stderr)
        return 2
    if mqtt is not None and mqtt_url_problem(mqtt):
        print(f"station {command}: --mqtt {mqtt}: expected {mqtt_url_problem(mqtt)}",
              file=sys.stderr)
        return 2

    adjust = partial(with_overrides, modbus=modbus, opcua=opcua)
    try:
        recipe = adjust(load_recipe(recipe_path))
    except RecipeError as exc:
        print(f"station {command}: {exc}", file=sys.stderr)
        return 2
    if not headless:
        from station.ui.app import run_app

        return run_app(recipe.path, kiosk=kiosk, seconds=seconds, command=command,
                       shown_path=recipe_path, mqtt=mqtt, modbus=modbus, opcua=opcua,
                       screenshot=screenshot)
    return _headless(recipe_path, recipe, adjust, seconds=seconds, quiet=quiet,
                     command=command, mqtt=mqtt)


def _headless(recipe_path: Path, recipe: Any, adjust: Any, *, seconds: float | None,
              quiet: bool, command: str, mqtt: str | None) -> int:
    """The headless station: the host (engine across changeovers), its PLC servers and its
    MQTT publisher; the summary at the end."""
    from station.cli.headless import run_headless, truth_summary
    from station.plant.services import ServerStartError, open_station

    try:
        host, services, publisher = open_station(recipe, adjust, mqtt)
    except ServerStartError as exc:  # a port in use: one line, nothing left running
        print(f"station {command}: {recipe_path}: {exc}", file=sys.stderr)
        return 2
    except startup_errors() as exc:
        print(f"station {command}: {describe_startup_error(recipe_path, recipe, exc)}",
              file=sys.stderr)
        return 2
    if publisher is not None:
        print(f"station: publishing to {publisher.section.url} under "
              f"{publisher.ident.topic('result').rsplit('/', 1)[0]}/", flush=True)
    try:
        engine = host.engine
        print(f"station: {recipe.product.name}: camera {engine.source.name}, trigger "
              f"{engine.trigger.name}, models {engine.inspector.model_versions}, decision "
              f"{engine.inspector.decision.rule}"
              + "".join(f"; {line}" for line in services.describe()), flush=True)
        stats = run_headless(host, seconds, show_parts=not quiet)
        engine = host.engine
        summary = truth_summary(engine)
        timing = stats.reject_timing
        blocked = engine.not_inspecting()
    finally:
        services.stop()
        host.close()
        if publisher is not None:
            publisher.close()  # the last results, then "online": false
    # closing can add one: a part to push off still short of the reject point at the stop
    blocked += [a for a in host.engine.not_inspecting() if a not in blocked]
    print(f"inspected {stats.parts} parts: {stats.passed} passed, {stats.rejected} rejected, "
          f"{stats.errors} errors; {stats.dropped_frames} frames dropped", flush=True)
    if summary["unknown"] < stats.parts:
        print("against ground truth: "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items() if k != "unknown"))
    if timing.get("count"):
        print(f"reject outputs: {timing['count']}, timing error p50 {timing['p50']:.2f} ms, "
              f"p99 {timing['p99']:.2f} ms, max {timing['max']:.2f} ms")
    for alarm in blocked:  # a supervisor (systemd, a script) must see that the line was unsafe
        print(f"station {command}: ended while not inspecting: {alarm.kind}: {alarm.message}",
              file=sys.stderr)
    records = host.engine.records
    lost = records.lost_rows if records is not None else 0
    if lost and records is not None:  # logged as CRITICAL; the exit code is for a supervisor
        print(f"station {command}: {lost} record row(s) never written: the records database "
              f"{records.database_path} refused them to the end", file=sys.stderr)
    return NOT_INSPECTING_EXIT if blocked else RECORDS_LOST_EXIT if lost else 0
