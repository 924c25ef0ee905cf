"""The station's engine: acquisition, triggers, inspection, reject output and records.

Threads, not one loop (docs/design.md): the acquisition thread fills a latest-frame slot for the
preview and calls the frame-driven trigger; triggered parts go through a bounded queue to the
inspection thread; the reject scheduler and the serial link have their own threads; the
records writer has its own. Nothing here knows Qt: the GUI and ``station run --headless``
both drive this class, read its state and follow its typed events (``engine.events``).

Overload is explicit: when triggers come faster than the station inspects, the bounded
queue is full and the new part is *shed*: not inspected, the fail-safe acts at its reject
point (``reject.fail_safe``), it gets an ERROR record saying "overload: shed", it is
counted, and an alarm stays up until the station keeps up again. Every part, inspected or
shed, gets its row: rows wait in the engine's own backlog (:mod:`station.pipeline.rows`)
rather than be dropped when the records writer is behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import replace
from functools import partial
from typing import Any

from station.decision import ERROR
from station.pipeline.alarms import (
    ALARM_MODEL,
    ALARM_OVERLOAD,
    ALARM_QUALITY,
    ALARM_RECORDS,
    ALARM_STREAK,
    ENGINE_ALARMS,
    Alarm,
)
from station.pipeline.events import EngineEvents, EngineState, emit_safely
from station.pipeline.inspector import Inspector, PartResult, PreparedPart, review_copy
from station.pipeline.line_state import LineStatus, LineWatch
from station.pipeline.rows import MANUAL_TRIGGER, RowFeeder, part_images, part_row
from station.pipeline.stats import EngineStats, PartTally, inspect_rate, percentile
from station.records import Records
from station.reject import PulseOutput, RejectScheduler
from station.reject.serial_link import SerialLink
from station.sources import Acquisition, SkippedImage, make_source
from station.sources.base import Frame, FrameSource
from station.trigger import (
    PartCounter,
    SoftwareTrigger,
    Trigger,
    TriggerEvent,
    make_trigger,
)
from station.vision.quality import QualityMonitor
from station.vision.undistort import Undistorter

log = logging.getLogger(__name__)

SKIP_REASON = "image skipped"  # an unreadable stored image: its own count, no model alarm
SHED_REASON = "overload: shed"
COUNTS_RESET_KEY = "counts.reset"


class Engine:
    """Runs one recipe on the line. ``start``/``stop``; state is read, never pushed to Qt.

    ``events`` (:class:`EngineEvents`) are emitted from engine threads: ``part``
    (:class:`PartResult`), ``alarm`` and ``alarm_cleared`` (:class:`Alarm`), ``state``
    (:class:`EngineState`) and ``line`` (:class:`LineStatus`); a GUI re-posts them.
    """

    def __init__(
        self,
        recipe: Any,
        *,
        source: FrameSource | None = None,
        inspector: Inspector | None = None,
        trigger_mode: str | None = None,
        paced: bool = True,
        block_when_busy: bool = False,
        queue_size: int = 8,
        records: bool = True,
        streak_alarm: int = 5,
        reject_output: PulseOutput | None = None,
    ) -> None:
        """``reject_output``: the PLC interface's Reject bit, for ``reject.output = "plc"``."""
        self.recipe = recipe
        self.block_when_busy = block_when_busy
        self.streak_alarm = streak_alarm
        self.events = EngineEvents()
        self._init_state(queue_size)
        self.inspector = inspector or Inspector.from_recipe(recipe)
        self.inspector.warmup()
        self.undistorter = Undistorter.from_recipe(recipe)
        self._open_records(records)
        mode = trigger_mode or recipe.trigger.mode
        self._open_reject_output(mode, reject_output)
        self._open_source_and_triggers(source, paced, mode)
        self.quality = QualityMonitor.from_recipe_params(recipe.quality, recipe.path)
        self._quality_frame: Frame | None = None

    def _init_state(self, queue_size: int) -> None:
        """Counts, the queues between the stages and the threads' bookkeeping."""
        self._lock = threading.RLock()
        self._tally = PartTally()
        self._overloaded = False  # parts are being shed; cleared once the queue drains
        self._running = False
        self._stop = threading.Event()
        self._queue: queue.Queue[TriggerEvent | None] = queue.Queue(maxsize=queue_size)
        # Cropped parts waiting for the models: one slot, so the crop thread works one part
        # ahead of the models (on the other core) and no further.
        self._ready: queue.Queue[tuple[TriggerEvent, PreparedPart | None] | None] = queue.Queue(
            maxsize=1)
        self._pending = 0  # triggered, not yet finished
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._crop_thread: threading.Thread | None = None
        self._closing = False
        self._last_frame_t: float | None = None
        self._missed_frames = 0

    def _open_records(self, records: bool) -> None:
        """The records, the feeder that hands them rows, and the alarm book over them."""
        self.records: Records | None = Records.from_recipe(self.recipe) if records else None
        self.watch = LineWatch(self.records, self._notify, running=lambda: self._running)
        self._book = self.watch.book
        self._rows: RowFeeder | None = None
        if self.records is not None:
            self._rows = RowFeeder(self.records, partial(self.raise_alarm, ALARM_RECORDS))
            self.records.add_alarm_listener(self._on_records_alarm)

    def _notify(self, event: str, payload: Any) -> None:
        emit_safely(getattr(self.events, event), payload)

    def _on_records_alarm(self, kind: str, message: str) -> None:
        """Records notify every alarm they store, the engine's own included: only the
        records' own faults (writer behind, disk) become a records alarm here."""
        if kind not in ENGINE_ALARMS:
            self.raise_alarm(ALARM_RECORDS, message)

    def _open_reject_output(self, mode: str, plc: PulseOutput | None) -> None:
        """The serial link (reject output, serial trigger) and the reject scheduler, whose
        output is the link or, with ``reject.output = "plc"``, the PLC's Reject bit."""
        recipe = self.recipe
        self.link: SerialLink | None = None
        serial_out = recipe.reject.enabled and recipe.reject.output == "serial"
        self.watch.reject_enabled, self.watch.serial_trigger = serial_out, mode == "serial"
        if serial_out or mode == "serial":
            self.link = SerialLink.from_recipe(recipe, serial_trigger=(mode == "serial"))
            self.link.add_state_listener(self.watch.on_serial_state)
        on_error_rejects = recipe.decision.on_error == "reject"
        output = None if not recipe.reject.enabled else self.link if serial_out else plc
        self.scheduler = RejectScheduler.from_recipe(recipe, output,
                                                     reject_on_error=on_error_rejects)
        self.scheduler.add_fired_listener(self.watch.on_fired)
        if self.records is not None:
            self.scheduler.add_fired_listener(self.records.on_fired)

    def _open_source_and_triggers(self, source: FrameSource | None, paced: bool,
                                  mode: str) -> None:
        """The camera, its acquisition thread, the recipe's trigger and the operator's one."""
        recipe = self.recipe
        self.source = source or make_source(recipe.camera, recipe.trigger, paced=paced)
        # Every frame goes to the trigger (a listener, in order); the preview takes the latest.
        # Parts, not frames, are what queue up for inspection.
        self.acquisition = Acquisition(self.source, queue_size=0)
        self.acquisition.add_alarm_listener(self.watch.on_source)
        self.acquisition.add_skip_listener(self._on_skipped_image)
        start_id = self._next_part_number()
        self.counter = PartCounter(start_id)
        debounce_ms = self._debounce_ms(recipe, mode)
        self.trigger: Trigger = make_trigger(
            replace(recipe.trigger, mode=mode, debounce_ms=debounce_ms), frames=self.acquisition,
            serial_link=self.link, localize=recipe.localize, counter=self.counter)
        self.trigger.add_listener(self._on_trigger)
        self.trigger.add_alarm_listener(self.watch.on_trigger)
        self.software = (self.trigger if isinstance(self.trigger, SoftwareTrigger)
                         else SoftwareTrigger(self.acquisition, self.counter,
                                              debounce_ms=0.0 if self.block_when_busy
                                              else recipe.trigger.debounce_ms))
        if self.software is not self.trigger:
            self.software.name = MANUAL_TRIGGER  # inspects only: never fires the reject
            self.software.add_listener(self._on_trigger)
        self.acquisition.add_frame_listener(self._on_frame)

    def _debounce_ms(self, recipe: Any, mode: str) -> float:
        """The trigger's debounce: the recipe's, where a sensor can bounce.

        A replay (``block_when_busy``) or a hardware trigger on a source no sensor fires (a
        photo folder, the simulator: every frame is one part by construction) has nothing to
        bounce; debouncing there would drop parts that come quickly.
        """
        if self.block_when_busy:
            return 0.0
        if mode == "hardware" and not self.source.info.triggered:
            return 0.0
        return float(recipe.trigger.debounce_ms)

    # -- state ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    @property
    def in_flight(self) -> int:
        """Parts triggered and not yet judged (a changeover waits for none)."""
        with self._lock:
            return self._pending

    def latest_frame(self) -> Frame | None:
        """The newest camera frame, for the preview (never waits for the models)."""
        return self.acquisition.latest()

    def last_result(self) -> PartResult | None:
        return self._tally.last

    def results(self) -> list[PartResult]:
        with self._lock:
            return list(self._tally.results)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._stop.clear()
        self._last_frame_t = None
        self._thread = threading.Thread(target=self._inspect_loop, name="inspection", daemon=True)
        self._crop_thread = threading.Thread(target=self._crop_loop, name="crop", daemon=True)
        self._thread.start()
        self._crop_thread.start()
        self.acquisition.start()
        self._running = True
        emit_safely(self.events.state, EngineState.RUNNING)
        self.watch.started()

    def stop(self) -> None:
        """Stop taking frames; parts already triggered are finished and recorded."""
        if not self._running:
            return
        self.acquisition.stop()
        self.wait_idle(timeout=10.0)
        self._stop.set()
        self._queue.put(None)  # the crop thread passes it on to the inspection thread
        for thread in (self._crop_thread, self._thread):
            if thread is not None:
                thread.join(10.0)
        self._thread = self._crop_thread = None
        self._running = False
        if self._rows is not None:  # recorded means on disk: the next engine numbers from it
            self._rows.drain(10.0)
        emit_safely(self.events.state, EngineState.STOPPED)
        self.watch.refresh()

    def close(self) -> None:
        """Stop, let pending reject outputs fire, and close the port and the records."""
        self.stop()
        self._closing = self.watch.closing = True  # the port closing on purpose: no fault
        self.trigger.close()
        if self.software is not self.trigger:
            self.software.close()
        self.scheduler.close()
        if self.link is not None:
            self.link.close()
        if self._rows is not None:
            self._rows.close()  # every row reaches the records before they close
        if self.records is not None:
            self.records.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every triggered part has its verdict (replay and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def wait_finished(self, timeout: float | None = None) -> bool:
        """For a finite source (replay): wait until it ended and every part is done."""
        if not self.acquisition.wait_finished(timeout):
            return False
        return self.wait_idle(timeout)

    # -- operator actions ---------------------------------------------------------------
    def software_trigger(self) -> TriggerEvent:
        """The operator's trigger button: inspect the latest frame now."""
        return self.software.fire()

    def set_decision(self, rule: str | None = None, ae_threshold: float | None = None,
                     cls_threshold: float | None = None, who: str = "engineer",
                     sum_threshold: float | None = None) -> None:
        """Change the live decision (engineer mode); recorded as an event. ``ValueError``
        when the loaded models cannot serve the rule (nothing changed then)."""
        old = self.inspector.decision
        new = replace(old, rule=rule or old.rule,
                      autoencoder_threshold=old.ae_threshold if ae_threshold is None
                      else float(ae_threshold),
                      classifier_threshold=old.cls_threshold if cls_threshold is None
                      else float(cls_threshold),
                      sum_threshold=old.sum_threshold if sum_threshold is None
                      else float(sum_threshold))
        self.inspector.set_decision(new)
        if self.records is not None:
            for key, a, b in (("decision.rule", old.rule, new.rule),
                              ("decision.autoencoder_threshold", old.ae_threshold, new.ae_threshold),
                              ("decision.classifier_threshold", old.cls_threshold,
                               new.cls_threshold),
                              ("decision.sum_threshold", old.sum_threshold, new.sum_threshold)):
                if a != b:
                    self.records.record_event(who, key, a, b)

    # -- counts that survive a restart within a shift ------------------------------------
    def shift_start(self) -> float | None:
        """Epoch of the last confirmed counter reset (None = since records began)."""
        if self.records is None:
            return None
        for event in self.records.events(500):
            if event.get("key") == COUNTS_RESET_KEY:
                return float(event.get("time_epoch") or 0.0) or None
        return None

    def counts(self, wait: bool = True) -> dict[str, int]:
        """Inspected / passed / rejected / errors since the shift started (from the records).

        ``wait=False`` skips waiting for the records writer (the GUI thread must not block;
        the last few parts then show up on the next call).
        """
        if self.records is None:
            c = self._tally.counts
            return {"inspected": c["parts"], "passed": c["passed"],
                    "rejected": c["rejected"], "errors": c["errors"]}
        if wait and self._rows is not None:
            self._rows.drain(2.0)
        return self.records.counts(since=self.shift_start())

    def reset_counts(self, who: str = "operator") -> None:
        """Start a new shift's counts (the GUI asks for a confirmation first)."""
        if self.records is not None:
            self.records.record_event(who, COUNTS_RESET_KEY, "", time.time())
            self.records.flush(2.0)
        with self._lock:
            self._tally.reset_counts()

    # -- alarms (the book keeps them; these are the engine's public face) ----------------
    def raise_alarm(self, kind: str, message: str) -> Alarm:
        """Show an alarm (one per kind while it is open) and record it."""
        return self._book.raise_alarm(kind, message)

    def clear_condition(self, kind: str, message: str = "") -> None:
        """The condition behind an alarm is gone; it stays shown until acknowledged."""
        self._book.clear_condition(kind, message)

    def alarms(self) -> list[Alarm]:
        """Alarms to show, oldest first: not acknowledged yet, or acknowledged and holding."""
        return self._book.alarms()

    def line_state(self) -> LineStatus:
        """Inspecting, stopped, not inspecting or reject output down, and why: the one answer
        the tile, the status bar and the alarm list show (also the ``line`` event)."""
        return self.watch.status()

    def not_inspecting(self) -> list[Alarm]:
        """The conditions, still holding, under which parts pass unjudged or unprotected:
        no frames, a trigger that cannot watch, a reject output that cannot act.
        Acknowledging such an alarm does not end it; only its cause going away does."""
        return self._book.not_inspecting()

    def acknowledge(self, alarm_id: int, who: str = "operator") -> None:
        self._book.acknowledge(alarm_id, who)

    # -- the flow of a part -------------------------------------------------------------
    def _next_part_number(self) -> int:
        """Part ids continue across restarts, so records never hold two parts with one id."""
        if self.records is None:
            return 1
        for row in self.records.recent(1):
            try:
                return int(row["part_id"]) + 1
            except (KeyError, TypeError, ValueError):
                break
        return 1

    def _on_frame(self, frame: Frame) -> None:
        """Acquisition thread: every frame, in order. Cheap work only."""
        self._quality_frame = frame
        info = self.source.info
        if self._last_frame_t is not None and info.fps > 0 and not info.triggered:
            gap = frame.timestamp - self._last_frame_t
            self._missed_frames += max(0, int(round(gap * info.fps)) - 1)
        self._last_frame_t = frame.timestamp
        self.trigger.on_frame(frame)

    def _on_trigger(self, event: TriggerEvent) -> None:
        """A part was seen: schedule its reject point now, inspect it in the other thread."""
        part_id = str(event.part_id)
        if event.source != MANUAL_TRIGGER:  # a manual trigger has no reject point
            self.scheduler.register(part_id, event.t)
        with self._lock:
            self._pending += 1
        try:
            if self.block_when_busy:
                self._queue.put(event)
            else:
                self._queue.put_nowait(event)
        except queue.Full:
            self._shed(event)

    def _on_skipped_image(self, skip: SkippedImage) -> None:
        """An image the source could not read is a part nobody inspected: it gets the
        error verdict (``decision.on_error``, reject by default) and an ERROR row."""
        part_id = str(self.counter.next())
        self.scheduler.register(part_id, skip.timestamp)
        with self._lock:
            self._pending += 1
        self._finish(PartResult(part_id=part_id, verdict=ERROR, t_trigger=skip.timestamp,
                                error=f"{SKIP_REASON}: {skip.path}: {skip.reason}",
                                truth=skip.truth, trigger="source"))

    def _shed(self, event: TriggerEvent) -> None:
        """The inspection cannot keep up: shed this part explicitly (see module docstring)."""
        part_id = str(event.part_id)
        fail_safe = self.scheduler.settings.fail_safe
        reason = (f"{SHED_REASON} (inspection queue full, {self._queue.maxsize} parts "
                  f"waiting): not inspected, fail-safe {fail_safe}")
        self.scheduler.shed(part_id, reason)
        with self._lock:
            self._overloaded = True
            shed = self._tally.counts["shed"] + 1
        self.raise_alarm(ALARM_OVERLOAD, f"overload: {shed} part(s) shed: triggers come faster "
                                         f"than the station inspects; each got the fail-safe "
                                         f"({fail_safe}) and an ERROR record")
        frame = None if event.frame is None else review_copy(event.frame.image)  # for review
        self._finish(PartResult(part_id=part_id, verdict=ERROR, t_trigger=event.t,
                                error=reason, trigger=event.source, frame=frame), shed=True)

    def _maybe_end_overload(self) -> None:
        """Once the queue has drained after shedding, the overload condition is over."""
        with self._lock:
            if not self._overloaded or not self._queue.empty():
                return
            self._overloaded = False
            shed = self._tally.counts["shed"]
        self.clear_condition(ALARM_OVERLOAD, f"overload over: {shed} part(s) shed in all; "
                                             "the station keeps up again")

    # Two stages, two threads: the crop thread finds, aligns and prepares part N+1 while the
    # inspection thread runs the models on part N, so the crop's OpenCV work overlaps the
    # models' instead of adding to each part's time. Order is kept (one thread per stage,
    # FIFO queues); the inspection thread alone finishes parts, as before.
    # The crop thread yields the cores to the models (a positive nice value, Linux: per
    # thread): with slow models it fills the models' idle gaps instead of slowing them down;
    # with fast models the inspection thread waits on it anyway, so nothing else competes.
    CROP_THREAD_NICE = 5

    def _crop_loop(self) -> None:
        if self.CROP_THREAD_NICE and hasattr(os, "setpriority"):
            with contextlib.suppress(OSError):  # not allowed here: run at the normal priority
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               min(19, os.getpriority(os.PRIO_PROCESS, 0) + self.CROP_THREAD_NICE))
        while True:
            event = self._queue.get()
            if event is None:
                self._ready.put(None)
                return
            try:
                prepared = self._crop(event)
            except Exception as exc:  # never lose a part: it goes on as an ERROR
                log.exception("crop failed for part %s", event.part_id)
                prepared = PreparedPart(str(event.part_id), event.t, 0.0, failure=PartResult(
                    part_id=str(event.part_id), verdict=ERROR, t_trigger=event.t,
                    error=f"{type(exc).__name__}: {exc}"))
            self._ready.put((event, prepared))

    def _inspect_loop(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            self._inspect(*item)
            self._maybe_end_overload()
            self._maybe_check_quality()

    def _crop(self, event: TriggerEvent) -> PreparedPart | None:
        frame = event.frame
        if frame is None:
            return None
        image = frame.image
        if self.undistorter is not None:
            image = self.undistorter.apply(image)
        box = getattr(event, "box", None)
        return self.inspector.crop(image, str(event.part_id), box=box, t_trigger=event.t)

    def _inspect(self, event: TriggerEvent, prepared: PreparedPart | None) -> None:
        part_id = str(event.part_id)
        frame = event.frame
        if frame is None or prepared is None:
            result = PartResult(part_id=part_id, verdict=ERROR, t_trigger=event.t,
                                error="no camera frame for this trigger", trigger=event.source)
        else:
            result = self.inspector.judge(prepared)
            result = replace(result, frame_seq=frame.seq, truth=_truth_for(frame, result),
                             trigger=event.source)
        self._finish(result)

    def _finish(self, result: PartResult, shed: bool = False) -> None:
        """A part is done (judged, or shed): verdict to the scheduler, counts, its row.

        A part that never reached the models (shed, unreadable image, no frame) still gets
        its trigger-to-verdict latency, so every record and PLC result carries one.
        """
        if not result.latency_ms and result.t_trigger:
            result = replace(result, latency_ms=(time.monotonic() - result.t_trigger) * 1000.0)
        if not shed and result.trigger != MANUAL_TRIGGER:  # shed: the fail-safe acts for it
            self.scheduler.set_verdict(result.part_id, result.verdict)
        with self._lock:
            streak = self._tally.note(result, shed, time.monotonic())
            if self._rows is not None:  # under the lock: rows go out in the results' order
                row = part_row(result, self.recipe.product.name,
                               self.inspector.model_versions, self.inspector.decision)
                self._rows.put(row, part_images(result))
        if (result.verdict == ERROR and result.error and not shed
                and not result.error.startswith(("part ", SKIP_REASON))):
            self.raise_alarm(ALARM_MODEL, f"part {result.part_id}: {result.error}")
        if not shed and self.streak_alarm and streak == self.streak_alarm:
            self.raise_alarm(ALARM_STREAK, f"{streak} rejects in a row (last: part "
                                           f"{result.part_id}) — check the line and the camera")
        emit_safely(self.events.part, result)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _maybe_check_quality(self) -> None:
        """Image quality at start-up and every ``quality.interval_s`` (the monitor decides)."""
        if self.quality is None or self._quality_frame is None:
            return
        try:
            issues = self.quality.check_if_due(self._quality_frame.image)
        except Exception as exc:
            log.warning("image-quality check failed: %s", exc)
            return
        if issues is None:
            return
        if issues:
            self.raise_alarm(ALARM_QUALITY, "; ".join(i.message for i in issues))
        else:
            self.clear_condition(ALARM_QUALITY)

    # -- numbers ------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        acq = self.acquisition.stats()
        with self._lock:
            lat = sorted(self._tally.latencies)
            times = list(self._tally.done_times)
            c = dict(self._tally.counts)
        fps = inspect_rate(times, time.monotonic())
        return EngineStats(
            running=self._running, source=self.source.name, camera_fps=acq.fps,
            frames=acq.frames, dropped_frames=self._missed_frames, inspect_fps=fps,
            parts=c["parts"], passed=c["passed"], rejected=c["rejected"], errors=c["errors"],
            late=c["late"], latency_p50_ms=percentile(lat, 0.5), latency_p99_ms=percentile(lat, 0.99),
            serial_state=self.link.state if self.link is not None else "off",
            reject_timing=self.scheduler.timing_stats(),
            models=self.inspector.model_versions, shed=c["shed"],
            debounced=self.trigger.debounced + (self.software.debounced
                                                if self.software is not self.trigger else 0),
            unseen=self.trigger.unseen,
            rows_waiting=self._rows.waiting if self._rows is not None else 0,
            rows_lost=self._rows.lost if self._rows is not None else 0)


def _truth_for(frame: Frame, result: PartResult) -> Any:
    """The ground-truth part nearest the inspected box (simulator and replay know it)."""
    truth = frame.truth
    parts = getattr(truth, "parts", None)
    if parts is None:
        return truth
    if not parts:
        return None
    if result.box is None:
        return None
    x, y, w, h = result.box
    cx, cy = x + w / 2, y + h / 2
    return min(parts, key=lambda p: (p.center_xy[0] - cx) ** 2 + (p.center_xy[1] - cy) ** 2)
