"""The PLC handshake, independent of the protocol: the Modbus and OPC UA servers map it.

States (in the spirit of OPC 40100's machine-vision state machine):

* **Idle** — the engine is stopped, or a recipe changeover is running;
* **Error** — the engine runs but the line is not inspected or a REJECT cannot leave it (camera
  lost, trigger blind, reject output down: :meth:`Engine.line_state`);
* **Busy** — a part is in flight (triggered, not yet judged), or the queue of results the
  PLC has not acknowledged is full;
* **Ready** — none of these: a trigger would be accepted now.

**Ready** rises when the engine runs and inspects with no part in flight and room for a
result; it falls the moment a trigger is accepted (Busy) and rises again once that part is
judged and its result latched. With ``trigger.mode = "plc"``, :meth:`trigger` starts a part
on the latest frame and returns its id; a trigger while not Ready (Busy, Idle, Error) or within
``trigger.debounce_ms`` is *refused* with a reason (nothing is queued: the PLC triggers again
when Ready). With any other trigger mode the station triggers itself and the PLC's Trigger is
refused, but results, Ready/Busy and the rest work the same.

**Results**: every line part's verdict (not the operator's manual trigger) is latched in a
bounded FIFO of un-acknowledged results (``queue_size``). :meth:`current_result` is the oldest;
``result_valid`` says one is presented. A second result before the PLC's acknowledgement
waits behind the first (nothing is overwritten); when the queue is full the station is Busy
(no PLC trigger is accepted) and, if its own trigger keeps producing parts, the oldest
un-acknowledged result is dropped and counted in ``overruns`` (the records keep every part).
Acknowledge with :meth:`acknowledge` (a method call: the result is removed, the next one is
presented at once) or, for bit protocols, :meth:`set_ack`: a rising ResultAck removes the
presented result and holds ResultValid low until the PLC drops ResultAck, so the PLC sees an
edge for each result (four-phase handshake).

**Changeover** (:meth:`request_recipe`, :meth:`select_recipe`): refused while a PLC-triggered
part is in flight (code BUSY; a self-triggering line finishes its parts in flight on the old
recipe, as the window does), for an unknown number (UNKNOWN) or a refused recipe (REFUSED: the old
recipe keeps running); while it runs the state is Idle and the code IN_PROGRESS. Results
already latched stay to be acknowledged; the recipe number and name follow the new engine.

``reject_pulse`` is the Reject bit of ``reject.output = "plc"``, driven by the reject
scheduler (:class:`station.plant.pulse.RejectPulse`). ``heartbeat`` counts seconds (mod
65536) while the station process answers. ``changed`` (no arguments) is emitted after
anything a server shows may have changed, from the thread that changed it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from psygnal import Signal

from station.decision import Verdict
from station.pipeline import Engine, LineState
from station.pipeline.inspector import PartResult
from station.pipeline.rows import MANUAL_TRIGGER
from station.plant.host import SelectCode, StationHost, plc_busy
from station.trigger import PlcTrigger

log = logging.getLogger(__name__)


class PlcState(IntEnum):
    IDLE = 0
    READY = 1
    BUSY = 2
    ERROR = 3


RESULT_CODES = {Verdict.PASS: 1, Verdict.REJECT: 2, Verdict.ERROR: 3}


@dataclass(frozen=True)
class PlcResult:
    """One part's result as the PLC reads it; scores are normalized (1.0 = threshold)."""

    seq: int  # 1, 2, ... per station run: tells results apart when part ids repeat
    part_id: str
    verdict: str
    code: int  # 1 pass, 2 reject, 3 error
    reason: str
    time: float  # unix time the verdict was latched
    ae_score: float | None = None
    cls_score: float | None = None
    ae_raw: float | None = None
    cls_raw: float | None = None
    latency_ms: float = 0.0
    recipe: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)


def result_reason(r: PartResult) -> str:
    """Why the part got its verdict, in one line."""
    if r.error:
        return r.error
    scores = [f"{name} {value:.2f}" for name, value in (("autoencoder", r.ae_score),
                                                        ("classifier", r.cls_score))
              if value is not None]
    return f"{r.verdict}: " + ", ".join(scores) + " (1.0 = threshold)"


class PlcHandshake:
    """Ready/Busy/Trigger/ResultValid/ResultAck and the recipe selection; see module doc."""

    changed = Signal()

    def __init__(self, host: StationHost, queue_size: int = 16, heartbeat_s: float = 1.0
                 ) -> None:
        self.host = host
        self.queue_size = max(1, int(queue_size))
        self.heartbeat_s = heartbeat_s
        self._lock = threading.RLock()
        self._results: deque[PlcResult] = deque()
        self._ack_held = False
        self._seq = 0
        self._t0 = time.monotonic()
        self.overruns = 0
        self.acknowledged = 0
        self.triggers_refused = 0
        self.last_refusal = ""
        self.trigger_pending = ""  # the part the PLC triggered, until its result is latched
        self.select_code = SelectCode.NONE
        self.select_reason = ""
        self.select_requested = ""
        self._select_thread: threading.Thread | None = None
        self.counts = {"inspected": 0, "passed": 0, "rejected": 0, "errors": 0}
        self.recipe_number = 0
        self.recipe_name = ""
        self._engine: Engine | None = None
        host.engine_changed.connect(self._attach)
        host.pulse.changed.connect(self._on_pulse)
        self._attach(host.engine)

    # -- following the engine -------------------------------------------------------------
    def _attach(self, engine: Engine) -> None:
        """A (new) engine: follow its events; take its shift counts and recipe number."""
        old = self._engine
        if old is not None:
            for signal, slot in self._slots(old):
                signal.disconnect(slot)
        entry = self.host.current_entry()
        counts = engine.counts(wait=False)
        with self._lock:
            self._engine = engine
            self.counts = {k: int(counts.get(k) or 0) for k in self.counts}
            self.recipe_number = entry.number if entry else 0
            self.recipe_name = entry.name if entry else engine.recipe.path.stem
        for signal, slot in self._slots(engine):
            signal.connect(slot)
        engine.trigger.add_listener(self._on_trigger_event)
        self._poke()

    def _slots(self, engine: Engine) -> list:
        ev = engine.events
        return [(ev.part, self._on_part), (ev.state, self._on_any), (ev.line, self._on_any),
                (ev.alarm, self._on_any), (ev.alarm_cleared, self._on_any)]

    def _on_any(self, _payload: object = None) -> None:
        self._poke()

    def _on_pulse(self, _active: bool) -> None:
        self._poke()

    def _on_trigger_event(self, _event: object) -> None:
        self._poke()  # Busy rose

    def _poke(self) -> None:
        try:
            self.changed.emit()
        except Exception:
            log.exception("PLC handshake listener failed")

    def _on_part(self, r: PartResult) -> None:
        """Inspection thread: count the part; latch a line part's result for the PLC."""
        key = {Verdict.PASS: "passed", Verdict.REJECT: "rejected"}.get(r.verdict, "errors")
        engine = self._engine
        with self._lock:
            self.counts["inspected"] += 1
            self.counts[key] += 1
            if str(r.part_id) == self.trigger_pending:
                self.trigger_pending = ""
            if r.trigger != MANUAL_TRIGGER:
                self._seq += 1
                self._results.append(PlcResult(
                    self._seq, str(r.part_id), str(r.verdict), RESULT_CODES.get(r.verdict, 3),
                    result_reason(r), time.time(), r.ae_score, r.cls_score, r.ae_raw, r.cls_raw,
                    r.latency_ms, self.recipe_name,
                    dict(engine.inspector.model_versions) if engine is not None else {}))
                if len(self._results) > self.queue_size:
                    lost = self._results.popleft()
                    self.overruns += 1
                    log.warning("PLC result queue full (%d not acknowledged): result of part "
                                "%s dropped (it is in the records)", self.queue_size, lost.part_id)
        self._poke()

    # -- state ----------------------------------------------------------------------------
    @property
    def state(self) -> PlcState:
        return self.state_and_why()[0]

    def state_and_why(self) -> tuple[PlcState, str]:
        """The state, and why it is not Ready ("" when it is)."""
        engine = self.host.engine
        if self.host.changing:
            return PlcState.IDLE, "recipe changeover running"
        if not engine.running:
            return PlcState.IDLE, "station stopped"
        line = engine.line_state()
        if line.state != LineState.INSPECTING:
            return PlcState.ERROR, line.summary or str(line.state)
        if engine.in_flight:
            return PlcState.BUSY, f"{engine.in_flight} part(s) in flight"
        with self._lock:
            if len(self._results) >= self.queue_size:
                return PlcState.BUSY, f"{len(self._results)} results not acknowledged"
        return PlcState.READY, ""

    @property
    def ready(self) -> bool:
        return self.state == PlcState.READY

    @property
    def heartbeat(self) -> int:
        return int((time.monotonic() - self._t0) / self.heartbeat_s) & 0xFFFF

    @property
    def reject_pulse(self) -> bool:
        return self.host.pulse.active

    def alarms(self) -> list[tuple[str, str]]:
        """The alarms whose condition holds now: (kind, message)."""
        return [(a.kind, a.message) for a in self.host.engine.alarms() if a.active]

    # -- trigger --------------------------------------------------------------------------
    def trigger(self) -> tuple[bool, str]:
        """The PLC's Trigger: ``(True, part_id)`` or ``(False, reason)``; see module doc."""
        with self._lock:
            engine = self.host.engine
            plc_trigger = engine.trigger
            ok, why = True, ""
            if not isinstance(plc_trigger, PlcTrigger):
                ok, why = False, (f'trigger.mode = "{engine.recipe.trigger.mode}": the station '
                                  'triggers itself (set trigger.mode = "plc")')
            else:
                state, detail = self.state_and_why()
                if state != PlcState.READY:
                    ok, why = False, f"not ready: {state.name.lower()} ({detail})"
            event = plc_trigger.fire() if ok and isinstance(plc_trigger, PlcTrigger) else None
            if ok and event is None:
                ok, why = False, "debounced: within trigger.debounce_ms of the last trigger"
            elif event is not None:  # its result (inspection thread) waits for this lock
                self.trigger_pending = str(event.part_id)
            if not ok:
                self.triggers_refused += 1
                self.last_refusal = why
        if not ok:
            log.info("PLC trigger refused: %s", why)
            self._poke()
            return False, why
        assert event is not None
        return True, str(event.part_id)

    # -- results --------------------------------------------------------------------------
    @property
    def result_valid(self) -> bool:
        with self._lock:
            return bool(self._results) and not self._ack_held

    def current_result(self) -> PlcResult | None:
        """The presented result: the oldest not acknowledged (None while ResultAck is held)."""
        with self._lock:
            return self._results[0] if self._results and not self._ack_held else None

    @property
    def ack_held(self) -> bool:
        """ResultAck is held high by the PLC (bit protocols: :meth:`set_ack`)."""
        with self._lock:
            return self._ack_held

    @property
    def results_waiting(self) -> int:
        with self._lock:
            return len(self._results)

    def acknowledge(self, seq: int | None = None) -> tuple[bool, str]:
        """Acknowledge the presented result (``seq``: only if it is that one)."""
        with self._lock:
            if not self._results or self._ack_held:
                return False, "no result to acknowledge"
            first = self._results[0]
            if seq is not None and seq != first.seq:
                return False, f"result {seq} is not the one presented ({first.seq})"
            self._results.popleft()
            self.acknowledged += 1
        self._poke()
        return True, first.part_id

    def set_ack(self, level: bool) -> tuple[bool, str]:
        """ResultAck as a bit: rising = acknowledge and hold ResultValid low; falling = the
        next result (if any) is presented."""
        with self._lock:
            if level == self._ack_held:
                return True, "unchanged"
            if level:
                ok, what = self.acknowledge()
                if not ok:  # nothing presented: refused, and not held
                    return ok, what
                self._ack_held = True
            else:
                self._ack_held = False
                ok, what = True, "released"
        self._poke()
        return ok, what

    # -- recipes --------------------------------------------------------------------------
    def select_recipe(self, key: str | int) -> tuple[bool, str]:
        """Change over now (in the caller's thread): ``(ok, reason)``."""
        with self._lock:
            if self._select_thread is not None and self._select_thread.is_alive():
                return False, "busy: a changeover is running"
            self.select_requested = str(key)
            self.select_code, self.select_reason = SelectCode.IN_PROGRESS, "changeover running"
        self._poke()
        outcome = self.host.select(key)
        self._answer(outcome.code, outcome.reason)
        return outcome.ok, outcome.reason

    def request_recipe(self, key: str | int) -> SelectCode:
        """Start a changeover in the background (bit protocols cannot wait seconds); the
        answer lands in ``select_code`` / ``select_reason``. Unknown keys and a busy
        station are answered at once."""
        with self._lock:
            if self._select_thread is not None and self._select_thread.is_alive():
                return SelectCode.BUSY  # the running one keeps its code
            self.select_requested = str(key)
            entry, why = self.host.find(key)
            if entry is None:
                self.select_code, self.select_reason = SelectCode.UNKNOWN, why
            elif plc_busy(self.host.engine) and entry.path != self.host.recipe.path.resolve():
                self.select_code, self.select_reason = SelectCode.BUSY, "busy: part in flight"
            else:
                self.select_code, self.select_reason = SelectCode.IN_PROGRESS, "changeover running"
                self._select_thread = threading.Thread(
                    target=self._select_worker, args=(key,), name="plc-changeover", daemon=True)
                self._select_thread.start()
            code = self.select_code
        self._poke()
        return code

    def _select_worker(self, key: str | int) -> None:
        try:
            outcome = self.host.select(key)
            self._answer(outcome.code, outcome.reason)
        except Exception as exc:  # never leave IN_PROGRESS behind
            log.exception("changeover to %s failed", key)
            self._answer(SelectCode.REFUSED, f"{type(exc).__name__}: {exc}")

    def _answer(self, code: SelectCode, reason: str) -> None:
        with self._lock:
            self.select_code, self.select_reason = code, reason
        if code != SelectCode.OK:
            log.warning("PLC recipe selection %s: %s", self.select_requested, reason)
        self._poke()

    def wait_select(self, timeout: float = 60.0) -> bool:
        """Wait for a background changeover to end (tests, shutdown)."""
        thread = self._select_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """Stop following the engine (the servers are closed first)."""
        self.wait_select(30.0)
        self.host.engine_changed.disconnect(self._attach)
        self.host.pulse.changed.disconnect(self._on_pulse)
        if self._engine is not None:
            for signal, slot in self._slots(self._engine):
                signal.disconnect(slot)
