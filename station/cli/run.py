"""``station run``: the station on the line, in the window or headless.

Every fault a user can fix at start-up (a refused model, a provider this machine lacks, a
records database that cannot be written, a camera or serial port that will not open) is
one line on stderr naming the recipe file and the key, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from station.pipeline.startup import describe_startup_error, startup_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="the product's recipe (TOML)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: print live statistics on the terminal")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--kiosk", action="store_true", help="full-screen operator window")
    parser.add_argument("--quiet", action="store_true", help="headless: no line per part")
    add_plant_arguments(parser)


def add_plant_arguments(parser: argparse.ArgumentParser) -> None:
    """The plant-network flags ``station run`` and ``station demo`` share."""
    parser.add_argument("--mqtt", metavar="URL", default=None,
                        help="publish results, status and alarms to this broker "
                             "(mqtt://host[:port], mqtts:// for TLS); overrides and enables "
                             "the recipe's [mqtt]")


NOT_INSPECTING_EXIT = 3  # the run ended with the camera lost, the trigger blind or the output down


def run(args: argparse.Namespace) -> int:
    return start_station(args.recipe, headless=args.headless, seconds=args.seconds,
                         kiosk=args.kiosk, quiet=args.quiet, mqtt=args.mqtt)


def start_station(recipe_path: Path, *, headless: bool, seconds: float | None,
                  kiosk: bool = False, quiet: bool = False, command: str = "run",
                  mqtt: str | None = None) -> int:
    """Open the recipe and run it; every startup fault is one clear line and exit code 2.
    ``mqtt`` (the ``--mqtt`` flag) overrides and enables the recipe's [mqtt]."""
    from station.config import RecipeError, load_recipe, mqtt_url_problem

    if mqtt is not None and mqtt_url_problem(mqtt):
        print(f"station {command}: --mqtt {mqtt}: expected {mqtt_url_problem(mqtt)}",
              file=sys.stderr)
        return 2

    try:
        recipe = load_recipe(recipe_path)
    except RecipeError as exc:
        print(f"station {command}: {exc}", file=sys.stderr)
        return 2
    if not headless:
        from station.ui.app import run_app

        return run_app(recipe.path, kiosk=kiosk, seconds=seconds, command=command,
                       shown_path=recipe_path, mqtt=mqtt)
    from station.cli.headless import run_headless, truth_summary
    from station.pipeline import Engine
    from station.plant.mqtt import open_publisher

    publisher = None
    try:
        engine = Engine(recipe)
        try:
            publisher = open_publisher(recipe, mqtt)
        except startup_errors():
            engine.close()
            raise
    except startup_errors() as exc:
        print(f"station {command}: {describe_startup_error(recipe_path, recipe, exc)}",
              file=sys.stderr)
        return 2
    if publisher is not None:
        publisher.attach(engine)
        print(f"station: publishing to {publisher.section.url} under "
              f"{publisher.ident.topic('result').rsplit('/', 1)[0]}/", flush=True)
    try:
        with engine:
            print(f"station: {recipe.product.name}: camera {engine.source.name}, trigger "
                  f"{engine.trigger.name}, models {engine.inspector.model_versions}, decision "
                  f"{engine.inspector.decision.rule}", flush=True)
            stats = run_headless(engine, seconds, show_parts=not quiet)
            summary = truth_summary(engine)
            timing = stats.reject_timing
            blocked = engine.not_inspecting()
    finally:
        if publisher is not None:
            publisher.close()  # the last results, then "online": false
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
    return NOT_INSPECTING_EXIT if blocked else 0
