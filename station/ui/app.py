"""``run_app``: the QApplication, the engine and the window (``station run``, ``station demo``)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run_app(recipe_path: Path, *, kiosk: bool = False, seconds: float | None = None,
            screenshot: Path | None = None, command: str = "run",
            shown_path: Path | None = None, mqtt: str | None = None) -> int:
    """Open the operator window on ``recipe_path`` and start inspecting.

    ``seconds`` quits after that long (demos, checks under Xvfb); ``screenshot`` saves the
    window as a PNG just before quitting. Returns the exit code: 2 when the recipe or its
    models are refused (one line on stderr, as ``station <command>: <file>: <key> = ...``,
    the file named as ``shown_path`` when given), else 0. ``mqtt``: the ``--mqtt`` flag.
    """
    from PySide6.QtCore import QCoreApplication, QEvent, QTimer
    from PySide6.QtWidgets import QApplication

    from station.config import RecipeError, load_recipe
    from station.pipeline.startup import describe_startup_error, startup_errors
    from station.ui.main_window import MainWindow, make_engine

    try:
        recipe = load_recipe(recipe_path)
    except RecipeError as exc:
        print(f"station {command}: {exc}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Inspection station")
    try:
        engine, publisher = _engine_and_publisher(recipe, mqtt, make_engine)
    except startup_errors() as exc:  # a refused model, serial port, camera, records: one line
        where = shown_path if shown_path is not None else recipe_path
        print(f"station {command}: {describe_startup_error(where, recipe, exc)}", file=sys.stderr)
        return 2
    window = MainWindow(engine)
    _follow(window, publisher)
    if kiosk:
        window.showFullScreen()
    else:
        window.show()
    engine.start()
    window.on_state("running")
    started = time.monotonic()
    samples: list[tuple[float, float]] = []  # (camera fps, preview fps), once a second

    def sample() -> None:
        if time.monotonic() - started >= 3.0 and window.engine is not None:
            samples.append((window.engine.stats().camera_fps, window.live.shown_fps))

    sampler = QTimer()
    sampler.timeout.connect(sample)
    sampler.start(1000)

    def finish() -> None:
        stats = engine.stats()
        elapsed = time.monotonic() - started
        print(f"station: {elapsed:.0f} s; camera {stats.frames / elapsed:.1f} fps on average "
              f"(now {stats.camera_fps:.1f}); preview {window.live.frames_shown / elapsed:.1f} fps "
              f"on average (now {window.live.shown_fps:.1f}), {window.live.frames_shown} frames "
              f"shown of {stats.frames} captured; {stats.parts} parts inspected, latency p50 "
              f"{stats.latency_p50_ms:.1f} ms p99 {stats.latency_p99_ms:.1f} ms", flush=True)
        if samples:
            cam = sorted(c for c, _ in samples)
            shown = sorted(v for _, v in samples)
            print(f"station: per-second rates after warm-up ({len(samples)} samples): camera "
                  f"min {cam[0]:.1f} median {cam[len(cam) // 2]:.1f} fps; preview min "
                  f"{shown[0]:.1f} median {shown[len(shown) // 2]:.1f} fps", flush=True)
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(screenshot))
            print(f"station: screenshot saved to {screenshot}", flush=True)
        window.close()
        app.quit()

    if seconds is not None:
        QTimer.singleShot(int(seconds * 1000), finish)
    app.aboutToQuit.connect(window.shutdown)
    code = app.exec()
    window.shutdown()
    _close(publisher)
    # Closing the last window also posted a Quit of its own, still waiting: handled after
    # exec returned it would stop every later event loop of this process (tests run more)
    QCoreApplication.removePostedEvents(app, QEvent.Type.Quit)
    return int(code)


def _engine_and_publisher(recipe: Any, url: str | None, make_engine: Any) -> tuple[Any, Any]:
    """The engine, and the MQTT publisher (the recipe's [mqtt], ``url`` overriding it)
    following it, or None when MQTT is off. A setting that cannot work closes the engine and
    raises (one line, like any start-up fault)."""
    from station.plant.mqtt import open_publisher

    engine = make_engine(recipe)
    try:
        publisher = open_publisher(recipe, url)
    except Exception:
        engine.close()
        raise
    if publisher is not None:
        publisher.attach(engine)
    return engine, publisher


def _follow(window: Any, publisher: Any) -> None:
    """The publisher follows the window's engine across recipe switches."""
    if publisher is not None:
        window.engine_changed.connect(publisher.attach)


def _close(publisher: Any) -> None:
    """The last results, then "online": false (after the engine closed)."""
    if publisher is not None:
        publisher.close()
