"""Headless running: live statistics on the terminal, and a summary at the end.

``station run --headless`` and ``station demo --headless`` print what the GUI would show.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from station.pipeline import Alarm, Engine, EngineStats
from station.pipeline.inspector import PartResult
from station.pipeline.rows import score_text
from station.plant import StationHost


def format_stats(s: EngineStats) -> str:
    """One status line: the numbers an operator would glance at."""
    yield_pct = 100.0 * s.passed / s.parts if s.parts else 0.0
    return (f"parts {s.parts:5d}  pass {s.passed:5d}  reject {s.rejected:4d}  error {s.errors:3d}"
            f"  yield {yield_pct:5.1f}%  camera {s.camera_fps:5.1f} fps  inspect "
            f"{s.inspect_fps:4.1f}/s  latency p50 {s.latency_p50_ms:5.1f} ms p99 "
            f"{s.latency_p99_ms:5.1f} ms  dropped {s.dropped_frames}  serial {s.serial_state}"
            + (f"  shed {s.shed}" if s.shed else "")
            + (f"  debounced {s.debounced}" if s.debounced else "")
            + (f"  unseen {s.unseen}" if s.unseen else "")
            + (f"  rows lost {s.rows_lost}" if s.rows_lost else ""))


def part_line(r: PartResult) -> str:
    """One part on the terminal: id, verdict, scores, latency, truth when known, why."""
    truth = getattr(r.truth, "label", None)
    kind = getattr(r.truth, "defect", "")
    known = "" if truth is None else (f"  truth defect ({kind})" if truth and kind
                                      else f"  truth {'defect' if truth else 'good'}")
    scores = []
    if r.ae_score is not None:
        scores.append(f"ae {score_text(r.ae_score):>5}")
    if r.cls_score is not None:
        scores.append(f"cls {score_text(r.cls_score):>5}")
    why = f"  ({r.error})" if r.error else ""
    return (f"part {r.part_id:>6}  {r.verdict:6}  {'  '.join(scores)}  "
            f"{r.latency_ms:6.1f} ms{known}{why}")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM end the run as Ctrl-C does: the engine stops, its records are kept.

    A service manager stops a station with SIGTERM, whose default would kill it mid-part; a
    station started in the background by a script inherits SIGINT ignored and could not be
    stopped with it. Signals reach only the main thread, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_headless(station: Engine | StationHost, seconds: float | None,
                 out: TextIO = sys.stdout, show_parts: bool = True,
                 interval: float = 1.0) -> EngineStats:
    """Run until ``seconds`` pass (or the source ends, or Ctrl-C); print as it goes.

    Given a :class:`StationHost`, it follows the engine a changeover (a PLC's recipe
    selection) puts in place."""
    def on_part(r: PartResult) -> None:
        print(part_line(r), file=out, flush=True)

    def on_alarm(alarm: Alarm) -> None:
        print(f"ALARM {alarm.kind}: {alarm.message}", file=out, flush=True)

    def attach(engine: Engine) -> None:
        if show_parts:
            engine.events.part.connect(on_part)
        engine.events.alarm.connect(on_alarm)

    def changed(engine: Engine) -> None:
        print(f"recipe changed to {engine.recipe.path.name} ({engine.recipe.product.name})",
              file=out, flush=True)
        attach(engine)

    host = station if isinstance(station, StationHost) else None
    engine = station.engine if isinstance(station, StationHost) else station
    attach(engine)
    if host is not None:
        host.engine_changed.connect(changed)
    for alarm in engine.alarms():  # raised while the engine was built (a port missing at start)
        print(f"ALARM {alarm.kind}: {alarm.message}", file=out, flush=True)
    start = time.monotonic()
    engine.start()
    next_line = start + interval
    try:
        with stop_on_signals():
            while True:
                engine = host.engine if host is not None else engine
                now = time.monotonic()
                if seconds is not None and now - start >= seconds:
                    break
                # the source has ended, and not for a changeover's stop
                if engine.acquisition.finished and (host is None or (
                        not host.changing and engine is host.engine)):
                    break
                if now >= next_line:
                    print(format_stats(engine.stats()), file=out, flush=True)
                    next_line += interval
                time.sleep(0.05)
    except KeyboardInterrupt:
        print("stopping", file=out, flush=True)
    if host is not None:
        host.engine_changed.disconnect(changed)
        engine = host.engine
    engine.stop()
    stats = engine.stats()
    print(format_stats(stats), file=out, flush=True)
    return stats


def truth_summary(engine: Engine) -> dict[str, int]:
    """Verdicts against ground truth where the source knows it (simulator, replay)."""
    tp = fp = tn = fn = unknown = 0
    for r in engine.results():
        label = getattr(r.truth, "label", None)
        if label is None:
            unknown += 1
            continue
        rejected = r.verdict != "PASS"
        if label and rejected:
            tp += 1
        elif label:
            fn += 1
        elif rejected:
            fp += 1
        else:
            tn += 1
    return {"defects_rejected": tp, "defects_passed": fn, "good_rejected": fp,
            "good_passed": tn, "unknown": unknown}
