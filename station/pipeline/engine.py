"""The station's engine: acquisition, triggers, inspection, reject output and records.

Threads, not one loop (DESIGN.md): the acquisition thread fills a latest-frame slot for the
preview and calls the frame-driven trigger; triggered parts go through a bounded queue to the
inspection thread; the reject scheduler and the serial link have their own threads; the
records writer has its own. Nothing here knows Qt: the GUI and ``station run --headless``
both drive this class and read its state.

Overload is explicit: when triggers come faster than the station inspects, the bounded
queue is full and the new part is *shed*: not inspected, the fail-safe acts at its reject
point (``reject.fail_safe``), it gets an ERROR record saying "overload: shed", it is
counted, and an alarm stays up until the station keeps up again. Every part, inspected or
shed, gets its row: rows wait in the engine's own backlog rather than be dropped when the
records writer is behind.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from station.config import DecisionSection
from station.decision import ERROR, REJECT
from station.pipeline.inspector import Inspector, PartResult, PreparedPart
from station.records import PartRecord, Records
from station.reject import RejectScheduler
from station.reject.serial_link import SerialLink
from station.sources import (
    CAMERA_LOST,
    CAMERA_RESTORED,
    SOURCE_ENDED,
    Acquisition,
    SkippedImage,
    make_source,
)
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

# Alarm kinds the banner shows.
ALARM_CAMERA = "camera_lost"
ALARM_SERIAL = "serial_lost"
ALARM_STREAK = "reject_streak"
ALARM_MODEL = "model_error"
SKIP_REASON = "image skipped"  # an unreadable stored image: its own count, no model alarm
ALARM_QUALITY = "image_quality"
ALARM_RECORDS = "records"
ALARM_OVERLOAD = "overload"
ALARM_TRIGGER = "trigger"
# Alarms whose cause means the line is not being inspected (or not protected) while they last.
NOT_INSPECTING_KINDS = frozenset({ALARM_CAMERA, ALARM_TRIGGER, ALARM_SERIAL})
COUNTS_RESET_KEY = "counts.reset"
_ENGINE_ALARMS = (ALARM_CAMERA, ALARM_SERIAL, ALARM_STREAK, ALARM_MODEL, ALARM_QUALITY,
                  ALARM_OVERLOAD, ALARM_TRIGGER)
SHED_REASON = "overload: shed"

Listener = Callable[[str, Any], None]


@dataclass(frozen=True)
class Alarm:
    """One alarm in the banner until the operator acknowledges it."""

    id: int
    kind: str
    message: str
    time: float = field(default_factory=time.time)
    active: bool = True  # the condition still holds (camera still lost, …)


@dataclass(frozen=True)
class EngineStats:
    """What the status bar and the headless printout show."""

    running: bool
    source: str
    camera_fps: float
    frames: int
    dropped_frames: int  # frames missing from the camera's nominal rate (gaps); every frame
    # that arrives goes through the trigger, so none are dropped after acquisition
    inspect_fps: float
    parts: int
    passed: int
    rejected: int
    errors: int
    late: int  # parts the queue could not take in time: the shed ones (the status bar's name)
    latency_p50_ms: float
    latency_p99_ms: float
    serial_state: str
    reject_timing: dict[str, float]
    models: dict[str, str]
    shed: int = 0  # parts not inspected under overload: fail-safe action, ERROR record
    debounced: int = 0  # triggers ignored as bounces of the one before (not parts)
    rows_waiting: int = 0  # rows in the engine's backlog, not yet handed to the records
    rows_lost: int = 0  # rows that could not be recorded at all (alarmed); 0 unless broken


class Engine:
    """Runs one recipe on the line. ``start``/``stop``; state is read, never pushed to Qt.

    ``listener(kind, payload)`` is called from engine threads with ``"part"``
    (:class:`PartResult`), ``"alarm"`` (:class:`Alarm`), ``"alarm_cleared"`` (:class:`Alarm`)
    and ``"state"`` (``"running"``/``"stopped"``/``"ended"``); a GUI re-posts them to its
    own thread.
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
    ) -> None:
        self.recipe = recipe
        self.block_when_busy = block_when_busy
        self.streak_alarm = streak_alarm
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._alarms: dict[int, Alarm] = {}
        self._alarm_seq = 0
        self._open_alarm_by_kind: dict[str, int] = {}
        self._results: deque[PartResult] = deque(maxlen=500)
        self._latencies: deque[float] = deque(maxlen=1000)
        self._done_times: deque[float] = deque(maxlen=240)
        self._counts = {"parts": 0, "passed": 0, "rejected": 0, "errors": 0, "late": 0,
                        "shed": 0}
        self._overloaded = False  # parts are being shed; cleared once the queue drains
        self._streak = 0
        self._last_result: PartResult | None = None
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

        self.inspector = inspector or Inspector.from_recipe(recipe)
        self.inspector.warmup()
        self.undistorter = Undistorter.from_recipe(recipe)
        self.records: Records | None = Records.from_recipe(recipe) if records else None
        self._rows: _RowFeeder | None = None
        if self.records is not None:
            self._rows = _RowFeeder(self.records,
                                    lambda msg: self.raise_alarm(ALARM_RECORDS, msg))
            # Records notify every alarm they store, the engine's own included: only the
            # records' own faults (writer behind, disk) become a records alarm here.
            self.records.add_alarm_listener(
                lambda kind, msg: kind in _ENGINE_ALARMS or self.raise_alarm(ALARM_RECORDS, msg))

        self.link: SerialLink | None = None
        mode = trigger_mode or recipe.trigger.mode
        if recipe.reject.enabled or mode == "serial":
            self.link = SerialLink.from_recipe(recipe, serial_trigger=(mode == "serial"))
            self.link.add_state_listener(self._on_serial_state)
        on_error_rejects = recipe.decision.on_error == "reject"
        self.scheduler = RejectScheduler.from_recipe(
            recipe, self.link if recipe.reject.enabled else None,
            reject_on_error=on_error_rejects)
        if self.records is not None:
            self.scheduler.add_fired_listener(self.records.on_fired)

        self.source = source or make_source(recipe.camera, recipe.trigger, paced=paced)
        # Every frame goes to the trigger (a listener, in order); the preview takes the latest.
        # Parts, not frames, are what queue up for inspection.
        self.acquisition = Acquisition(self.source, queue_size=0)
        self.acquisition.add_alarm_listener(self._on_camera_alarm)
        self.acquisition.add_skip_listener(self._on_skipped_image)
        start_id = self._next_part_number()
        self.counter = PartCounter(start_id)
        debounce_ms = self._debounce_ms(recipe, mode)
        self.trigger: Trigger = make_trigger(
            replace(recipe.trigger, mode=mode, debounce_ms=debounce_ms), frames=self.acquisition,
            serial_link=self.link, localize=recipe.localize, counter=self.counter)
        self.trigger.add_listener(self._on_trigger)
        self.trigger.add_alarm_listener(self._on_trigger_alarm)
        self.software = (self.trigger if isinstance(self.trigger, SoftwareTrigger)
                         else SoftwareTrigger(self.acquisition, self.counter,
                                              debounce_ms=0.0 if block_when_busy
                                              else recipe.trigger.debounce_ms))
        if self.software is not self.trigger:
            self.software.add_listener(self._on_trigger)
        self.acquisition.add_frame_listener(self._on_frame)
        self.quality = QualityMonitor.from_recipe_params(recipe.quality, recipe.path)
        self._quality_frame: Frame | None = None

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

    # -- listeners and state ------------------------------------------------------------
    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def _emit(self, kind: str, payload: Any) -> None:
        for callback in list(self._listeners):
            try:
                callback(kind, payload)
            except Exception:
                log.exception("engine listener failed on %s", kind)

    @property
    def running(self) -> bool:
        return self._running

    def latest_frame(self) -> Frame | None:
        """The newest camera frame, for the preview (never waits for the models)."""
        return self.acquisition.latest()

    def last_result(self) -> PartResult | None:
        return self._last_result

    def results(self) -> list[PartResult]:
        with self._lock:
            return list(self._results)

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
        self._emit("state", "running")

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
        self._emit("state", "stopped")

    def close(self) -> None:
        """Stop, let pending reject outputs fire, and close the port and the records."""
        self.stop()
        self._closing = True  # the port closing on purpose is not a lost link
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
                     cls_threshold: float | None = None, who: str = "engineer") -> None:
        """Change the live decision (engineer mode); recorded as an event."""
        old = self.inspector.decision
        new = replace(old, rule=rule or old.rule,
                      autoencoder_threshold=old.ae_threshold if ae_threshold is None
                      else float(ae_threshold),
                      classifier_threshold=old.cls_threshold if cls_threshold is None
                      else float(cls_threshold))
        if new.rule in ("either", "both") and (self.inspector.autoencoder is None
                                               or self.inspector.classifier is None):
            raise ValueError(f"decision.rule = {new.rule!r} needs both models loaded")
        if new.rule == "autoencoder" and self.inspector.autoencoder is None:
            raise ValueError("decision.rule = 'autoencoder' but no autoencoder is loaded")
        if new.rule == "classifier" and self.inspector.classifier is None:
            raise ValueError("decision.rule = 'classifier' but no classifier is loaded")
        self.inspector.set_decision(new)
        if self.records is not None:
            for key, a, b in (("decision.rule", old.rule, new.rule),
                              ("decision.autoencoder_threshold", old.ae_threshold, new.ae_threshold),
                              ("decision.classifier_threshold", old.cls_threshold,
                               new.cls_threshold)):
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
            c = self._counts
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
            self._counts = dict.fromkeys(self._counts, 0)

    # -- alarms ---------------------------------------------------------------------------
    def raise_alarm(self, kind: str, message: str) -> Alarm:
        """Show an alarm (one per kind while it is open) and record it."""
        with self._lock:
            open_id = self._open_alarm_by_kind.get(kind)
            if open_id is not None and open_id in self._alarms:
                alarm = replace(self._alarms[open_id], message=message, active=True)
                self._alarms[open_id] = alarm
                return alarm
        alarm_id = None
        if self.records is not None and kind != ALARM_RECORDS:
            try:
                alarm_id = self.records.raise_alarm(kind, message)
            except Exception:
                log.exception("could not record alarm %s", kind)
        with self._lock:
            if alarm_id is None:
                self._alarm_seq -= 1
                alarm_id = self._alarm_seq
            alarm = Alarm(alarm_id, kind, message)
            self._alarms[alarm_id] = alarm
            self._open_alarm_by_kind[kind] = alarm_id
        log.info("alarm %s: %s", kind, message)
        self._emit("alarm", alarm)
        return alarm

    def clear_condition(self, kind: str, message: str = "") -> None:
        """The condition behind an alarm is gone; it stays shown until acknowledged."""
        with self._lock:
            alarm_id = self._open_alarm_by_kind.get(kind)
            if alarm_id is None or alarm_id not in self._alarms:
                return
            alarm = replace(self._alarms[alarm_id], active=False,
                            message=message or self._alarms[alarm_id].message)
            self._alarms[alarm_id] = alarm
        self._emit("alarm_cleared", alarm)

    def alarms(self) -> list[Alarm]:
        """Alarms not yet acknowledged, oldest first."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda a: a.time)

    def not_inspecting(self) -> list[Alarm]:
        """The conditions, still holding, under which parts pass unjudged or unprotected:
        no frames, a trigger that cannot watch, a reject output that cannot act.
        Acknowledging such an alarm does not end it; only its cause going away does."""
        with self._lock:
            return sorted((a for a in self._alarms.values()
                           if a.active and a.kind in NOT_INSPECTING_KINDS),
                          key=lambda a: a.time)

    def acknowledge(self, alarm_id: int, who: str = "operator") -> None:
        with self._lock:
            alarm = self._alarms.pop(alarm_id, None)
            if alarm is not None and self._open_alarm_by_kind.get(alarm.kind) == alarm_id:
                del self._open_alarm_by_kind[alarm.kind]
        if alarm is not None and self.records is not None and alarm_id > 0:
            self.records.acknowledge_alarm(alarm_id, who)

    def _on_camera_alarm(self, kind: str, message: str) -> None:
        if kind == CAMERA_LOST:
            self.raise_alarm(ALARM_CAMERA, f"camera lost: {message}")
        elif kind == CAMERA_RESTORED:
            self.clear_condition(ALARM_CAMERA, f"camera lost, now restored: {message}")
        elif kind == SOURCE_ENDED:
            self._emit("state", "ended")

    def _on_trigger_alarm(self, message: str) -> None:
        """The trigger cannot work as configured (an ROI outside the frame), or works again."""
        if message:
            self.raise_alarm(ALARM_TRIGGER, message)
        else:
            self.clear_condition(ALARM_TRIGGER)

    def _on_serial_state(self, state: str, message: str) -> None:
        if self._closing:
            return
        if state == "connected":
            self.clear_condition(ALARM_SERIAL, f"serial link lost, now back: {message}")
        else:
            self.raise_alarm(ALARM_SERIAL, f"serial link {state}: {message}")

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
            shed = self._counts["shed"] + 1
        self.raise_alarm(ALARM_OVERLOAD, f"overload: {shed} part(s) shed: triggers come faster "
                                         f"than the station inspects; each got the fail-safe "
                                         f"({fail_safe}) and an ERROR record")
        self._finish(PartResult(part_id=part_id, verdict=ERROR, t_trigger=event.t,
                                error=reason, trigger=event.source), shed=True)

    def _maybe_end_overload(self) -> None:
        """Once the queue has drained after shedding, the overload condition is over."""
        with self._lock:
            if not self._overloaded or not self._queue.empty():
                return
            self._overloaded = False
            shed = self._counts["shed"]
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
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               min(19, os.getpriority(os.PRIO_PROCESS, 0) + self.CROP_THREAD_NICE))
            except OSError:  # not allowed here: run at the normal priority
                pass
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
        """A part is done (judged, or shed): verdict to the scheduler, counts, its row."""
        if not shed:  # a shed part has no verdict: the fail-safe acts for it
            self.scheduler.set_verdict(result.part_id, result.verdict)
        with self._lock:
            self._last_result = result
            self._results.append(result)
            if not shed:
                self._latencies.append(result.latency_ms)
                self._done_times.append(time.monotonic())
            c = self._counts
            c["parts"] += 1
            c["late"] += int(shed)
            c["shed"] += int(shed)
            if result.verdict == "PASS":
                c["passed"] += 1
                self._streak = 0
            else:
                c["rejected" if result.verdict == REJECT else "errors"] += 1
                self._streak += int(not shed)  # a shed part says nothing about the line
            streak = self._streak
            if self._rows is not None:  # under the lock: rows go out in the results' order
                self._rows.put(self._record_row(result), _images(result))
        if (result.verdict == ERROR and result.error and not shed
                and not result.error.startswith(("part ", SKIP_REASON))):
            self.raise_alarm(ALARM_MODEL, f"part {result.part_id}: {result.error}")
        if not shed and self.streak_alarm and streak == self.streak_alarm:
            self.raise_alarm(ALARM_STREAK, f"{streak} rejects in a row (last: part "
                                           f"{result.part_id}) — check the line and the camera")
        self._emit("part", result)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _record_row(self, r: PartResult) -> PartRecord:
        return PartRecord(
            part_id=r.part_id, verdict=r.verdict, recipe=self.recipe.product.name,
            model_versions=self.inspector.model_versions,
            ae_score_raw=r.ae_raw, ae_score=r.ae_score, cls_score_raw=r.cls_raw,
            cls_score=r.cls_score, reasons=_reasons(r, self.inspector.decision), error=r.error,
            latency_ms=r.latency_ms)

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
            lat = sorted(self._latencies)
            times = list(self._done_times)
            c = dict(self._counts)
        now = time.monotonic()
        recent = [t for t in times if now - t <= 5.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 else 0.0
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
            rows_waiting=self._rows.waiting if self._rows is not None else 0,
            rows_lost=self._rows.lost if self._rows is not None else 0)


class _RowFeeder:
    """Hands part rows to the records writer, in order, without ever dropping one silently.

    ``Records.submit`` refuses a part when its queue is full (a slow disk, a burst of
    parts), and the inspection thread must not wait for the disk. So rows wait here, and
    this thread hands them on no faster than the writer takes them: it waits for the writer
    (a flush) after every ``batch`` rows, well inside the writer's queue. While more than
    ``image_backlog`` rows wait, the images of the waiting ones are left out (the row comes
    first; images are optional). Only past ``max_rows`` waiting rows (a writer that stopped)
    is a row lost, and then it is counted and alarmed.
    """

    def __init__(self, records: Records, alarm: Callable[[str], None], *, batch: int = 64,
                 image_backlog: int = 256, max_rows: int = 50_000) -> None:
        self.records = records
        self._alarm = alarm
        self._batch = batch
        self._image_backlog = image_backlog
        self._max_rows = max_rows
        self._items: deque[tuple[PartRecord, dict[str, np.ndarray]]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._since_flush = 0
        self.lost = 0
        self.images_left_out = 0
        self._thread = threading.Thread(target=self._run, name="records-feeder", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._items) + int(self._busy)

    def put(self, row: PartRecord, images: dict[str, np.ndarray]) -> None:
        """Queue a row (never blocks)."""
        with self._cond:
            if len(self._items) < self._max_rows and not self._stop:
                self._items.append((row, images))
                self._cond.notify_all()
                return
            self.lost += 1
            lost = self.lost
        log.error("record of part %s lost: %d rows already wait for the records writer",
                  row.part_id, self._max_rows)
        self._alarm(f"records writer stalled: {lost} part row(s) could not be recorded "
                    f"(last: part {row.part_id})")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if not self._items:
                    return
                row, images = self._items.popleft()
                self._busy = True
                backlog = len(self._items)
            if images and backlog >= self._image_backlog:
                images = {}
                self.images_left_out += 1
            try:
                self._hand_on(row, images)
            except Exception:  # the records are closed or broken: say so, keep going
                log.exception("record of part %s not written", row.part_id)
                self.lost += 1
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _hand_on(self, row: PartRecord, images: dict[str, np.ndarray]) -> None:
        if self._since_flush >= self._batch:
            self.records.flush(30.0)  # the writer's pace, not the triggers'
            self._since_flush = 0
        while not self.records.submit(row, images):
            self.records.flush(1.0)  # refused: the writer is behind; offer it again
            self._since_flush = 0
            images = {}
        self._since_flush += 1

    def drain(self, timeout: float) -> bool:
        """Wait until every row queued so far is handed on and written."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return self.records.flush(max(0.0, end - time.monotonic()))

    def close(self, timeout: float = 60.0) -> None:
        """Hand every waiting row on, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left = len(self._items)
        if left:
            self.lost += left
            log.error("%d part row(s) not recorded: the records writer did not take them", left)


def percentile(values: list[float], q: float, empty: float = 0.0) -> float:
    """Nearest-rank quantile of already sorted ``values`` (the status bar's and bench's)."""
    if not values:
        return empty
    return float(values[min(len(values) - 1, int(round(q * (len(values) - 1))))])


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


def _reasons(r: PartResult, d: DecisionSection) -> str:
    out = []
    if r.ae_score is not None and r.ae_score >= d.ae_threshold:
        out.append(f"autoencoder {r.ae_score:.2f} >= {d.ae_threshold:.2f}")
    if r.cls_score is not None and r.cls_score >= d.cls_threshold:
        out.append(f"classifier {r.cls_score:.2f} >= {d.cls_threshold:.2f}")
    return "; ".join(out)


def _images(r: PartResult) -> dict[str, np.ndarray]:
    """The crop and its heatmap overlay, for the records' image store."""
    if r.crop is None:
        return {}
    images = {"crop": r.crop}
    if r.heatmap is not None:
        images["heatmap"] = heatmap_overlay(r.crop, r.heatmap)
    return images


def heatmap_overlay(crop: np.ndarray, heatmap: np.ndarray, opacity: float = 0.5,
                    vmax: float = 1.5) -> np.ndarray:
    """BGR image of ``crop`` with ``heatmap`` (1.0 = threshold) over it in JET colours."""
    import cv2

    base = crop if crop.ndim == 3 else cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    h = np.clip(np.nan_to_num(heatmap) / vmax, 0.0, 1.0)
    if h.shape[:2] != base.shape[:2]:
        h = cv2.resize(h, (base.shape[1], base.shape[0]))
    colour = cv2.applyColorMap((h * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (opacity * np.clip(h * 1.5, 0.0, 1.0))[..., None]
    return (base * (1 - alpha) + colour * alpha).astype(np.uint8)
