"""``run_app``: the QApplication, the station and the window (``station run``, ``station demo``).

The window runs the same station as ``--headless``: a :class:`station.plant.StationHost`
(the engine across changeovers), the PLC servers its recipe enables and the MQTT publisher.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run_app(recipe_path: Path, *, kiosk: bool = False, seconds: float | None = None,
            screenshot: Path | None = None, command: str = "run",
            shown_path: Path | None = None, mqtt: str | None = None,
            modbus: tuple[str, int] | None = None, opcua: str | None = None) -> int:
    """Open the operator window on ``recipe_path`` and start inspecting.

    ``seconds`` quits after that long (demos, checks under Xvfb); ``screenshot`` saves the
    window as a PNG just before quitting. Returns the exit code: 2 when the recipe, its
    models or a port are refused (one line on stderr, as ``station <command>: <file>: <key>
    = ...``, the file named as ``shown_path`` when given), else 0. ``mqtt``, ``modbus`` and
    ``opcua``: the command line's flags, each overriding (and enabling) the recipe's section.
    """
    from functools import partial

    from PySide6.QtCore import QCoreApplication, QEvent, QTimer
    from PySide6.QtWidgets import QApplication

    from station.plant.services import link_summary
    from station.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Inspection station")
    started_station = _start(recipe_path, shown_path or recipe_path, command, mqtt, modbus, opcua)
    if started_station is None:
        return 2
    host, services, publisher = started_station
    engine = host.engine
    window = MainWindow(engine, host=host, links=partial(link_summary, services, publisher))
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

    closed: list[bool] = []

    def closing() -> None:  # the PLC servers go first: a PLC never talks to a closed engine
        if not closed:
            closed.append(True)
            services.stop()
            window.shutdown()

    def finish() -> None:
        _report(host.engine, window, time.monotonic() - started, samples, screenshot)
        closing()
        window.close()
        app.quit()

    if seconds is not None:
        QTimer.singleShot(int(seconds * 1000), finish)
    app.aboutToQuit.connect(closing)
    code = app.exec()
    closing()
    host.pulse.close()
    _close(publisher)
    # Closing the last window also posted a Quit of its own, still waiting: handled after
    # exec returned it would stop every later event loop of this process (tests run more)
    QCoreApplication.removePostedEvents(app, QEvent.Type.Quit)
    return int(code)


def _start(recipe_path: Path, where: Path, command: str, mqtt: str | None,
           modbus: tuple[str, int] | None, opcua: str | None) -> tuple[Any, Any, Any] | None:
    """The recipe (with the flags), its host, PLC servers and publisher; None when something
    is refused, after one line on stderr naming ``where`` and nothing left running."""
    from functools import partial

    from station.config import RecipeError, load_recipe
    from station.pipeline.startup import describe_startup_error, startup_errors
    from station.plant import with_overrides
    from station.plant.services import ServerStartError, open_station

    adjust = partial(with_overrides, modbus=modbus, opcua=opcua)
    try:
        recipe = adjust(load_recipe(recipe_path))
    except RecipeError as exc:
        print(f"station {command}: {exc}", file=sys.stderr)
        return None
    try:
        host, services, publisher = open_station(recipe, adjust, mqtt)
    except ServerStartError as exc:  # a PLC port in use: one line, nothing left running
        print(f"station {command}: {where}: {exc}", file=sys.stderr)
        return None
    except startup_errors() as exc:  # a refused model, serial port, camera, records: one line
        print(f"station {command}: {describe_startup_error(where, recipe, exc)}", file=sys.stderr)
        return None
    for line in services.describe():
        print(f"station: {line}", flush=True)
    return host, services, publisher


def _report(engine: Any, window: Any, elapsed: float, samples: list[tuple[float, float]],
            screenshot: Path | None) -> None:
    """What a timed run (``seconds``) prints at its end, and the screenshot."""
    stats = engine.stats()
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


def _close(publisher: Any) -> None:
    """The last results, then "online": false (after the engine closed)."""
    if publisher is not None:
        publisher.close()
