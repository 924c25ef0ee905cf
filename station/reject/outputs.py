"""The serial link's output side: the writer thread, line pulses, byte messages, heartbeats.

Outputs are performed in order by one writer thread so a caller never blocks on the port; a
pulse's trailing edge and an acknowledgement's time-out are timers, not sleeps, so one part's
output never delays the next part's. ``SerialLink`` mixes this in and owns the port.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import serial

from station.reject.messages import AckBook, LinkStats, OutputJob, SendResult, as_bytes, finish
from station.reject.modem import NO_MODEM_LINES, check_pulse, lacks_modem_lines

log = logging.getLogger(__name__)


class LinkOutputs:
    """Mixin: the outputs of a ``SerialLink`` and the writer thread that performs them."""

    # provided by SerialLink
    port: str
    stats: LinkStats
    heartbeat_s: float
    heartbeat_message: bytes
    _lock: threading.RLock
    _port: serial.SerialBase | None
    _port_ok: bool
    _state_message: str
    _closing: bool
    _acks: AckBook

    def _set_state(self, state: str, message: str) -> None:
        raise NotImplementedError

    def _port_lost(self, reason: str) -> None:
        raise NotImplementedError

    def _init_outputs(self) -> None:
        self._io = threading.Lock()  # held by the writer around port operations and by close
        self._jobs: queue.Queue[OutputJob | None] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()

    # ------------------------------------------------------------------ the callers' side

    def pulse_async(self, line: str, width_ms: float, direct: bool = False) -> Future:
        """Assert ``line`` now, de-assert it ``width_ms`` later (a writer-thread timer).

        ``direct``: assert it in the calling thread when the port is free, saving the
        hand-off to the writer thread (a thread wake-up, up to the GIL's switch interval);
        the reject scheduler's timer thread uses this at the deadline.
        """
        width_s = check_pulse(line, width_ms)
        return self._submit(OutputJob("pulse", Future(), line=line, width_s=width_s), direct)

    def send_async(
        self, message: bytes | str, expect_ack: bytes | str | None = None,
        timeout_ms: float = 100.0, direct: bool = False,
    ) -> Future:
        """Write ``message``; when ``expect_ack`` is given, the result waits for it."""
        ack = as_bytes(expect_ack) if expect_ack else None
        job = OutputJob("send", Future(), data=as_bytes(message), ack=ack,
                        ack_timeout_s=timeout_ms / 1000)
        return self._submit(job, direct)

    def pulse(self, line: str, width_ms: float) -> SendResult:
        """Blocking form of :meth:`pulse_async`: returns once the line is asserted."""
        return self.pulse_async(line, width_ms).result()

    def send(
        self, message: bytes | str, expect_ack: bytes | str | None = None, timeout_ms: float = 100.0
    ) -> SendResult:
        """Blocking form of :meth:`send_async`: returns on ack, time-out or write."""
        return self.send_async(message, expect_ack, timeout_ms).result()

    def _submit(self, job: OutputJob, direct: bool = False) -> Future:
        if self._closing:
            job.future.set_result(SendResult(False, None, error="serial link is closed"))
            return job.future
        if direct and self._run_job(job, blocking=False):
            self._jobs.put(OutputJob("wake", job.future))  # the writer re-plans its timers
            return job.future
        self._jobs.put(job)
        return job.future

    # ------------------------------------------------------------------ the writer thread

    def _writer_loop(self) -> None:
        next_heartbeat = time.monotonic() + self.heartbeat_s if self.heartbeat_s > 0 else None
        while True:
            now = time.monotonic()
            with self._lock:
                wake = [self._timers[0][0]] if self._timers else []
                wake += self._acks.deadlines()
            if next_heartbeat is not None:
                wake.append(next_heartbeat)
            timeout = max(0.0, min(wake) - now) if wake else 0.2
            try:
                job = self._jobs.get(timeout=min(timeout, 0.2))
            except queue.Empty:
                job = None
            else:
                if job is None:
                    break
                if job.kind != "wake":
                    self._run_job(job)
            now = time.monotonic()
            self._run_due_timers(now)
            self._expire_acks(now)
            if next_heartbeat is not None and now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_s
                self._run_job(OutputJob("heartbeat", Future(), data=self.heartbeat_message))
        self._drain_at_close()

    def _run_due_timers(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, fn = heapq.heappop(self._timers)
            fn()

    def _drain_at_close(self) -> None:
        """Closing: release any held line and answer every waiter."""
        with self._lock:
            timers, self._timers = sorted(self._timers), []
        for _, _, fn in timers:
            fn()
        with self._lock:
            pending = self._acks.take_all()
        for p in pending:
            finish(p.future, SendResult(False, p.sent_at, False, None, "link closed before ack"))
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.kind != "wake":
                finish(job.future, SendResult(False, None, error="serial link is closed"))

    def _run_job(self, job: OutputJob, blocking: bool = True) -> bool:
        """Perform one output; False only when not ``blocking`` and the port was busy."""
        # the I/O lock keeps the reader from closing the port in the middle of a write
        if not self._io.acquire(blocking):
            return False
        try:
            with self._lock:
                port = self._port if self._port_ok else None
                down_reason = self._state_message
            if port is None:
                self._count_failure(job, f"serial link down ({down_reason})", while_down=True)
                return True
            try:
                self._do_job(port, job)
            except Exception as exc:  # never let one output kill the writer thread
                log.exception("serial output failed unexpectedly")
                self._count_failure(job, f"output failed on {self.port}: {exc!r}")
        finally:
            self._io.release()
        return True

    def _do_job(self, port: serial.SerialBase, job: OutputJob) -> None:
        try:
            if job.kind == "pulse":
                self._assert_line(port, job)
                return
            if job.ack is not None:
                with self._lock:  # register before writing: a fast peer may answer at once
                    pending = self._acks.register(job.ack, time.monotonic(), job.future)
            port.write(job.data)
            sent_at = time.monotonic()
            self._count_success(job.kind)
            if job.ack is None:
                finish(job.future, SendResult(True, sent_at))
            else:
                with self._lock:
                    if not job.future.done():  # else acked already, timed from before the write
                        pending.sent_at = sent_at
                    pending.deadline = sent_at + job.ack_timeout_s
        except (OSError, TypeError, AttributeError, ValueError) as exc:
            # TypeError/AttributeError: pyserial's fd vanished under it (device gone)
            if job.ack is not None:
                with self._lock:
                    self._acks.forget(job.future)
            if job.kind == "pulse" and lacks_modem_lines(exc):
                message = NO_MODEM_LINES.format(port=self.port, error=exc)
                self._count_failure(job, message)
                self._set_state("error", message)
                return
            self._count_failure(job, f"write failed on {self.port}: {exc}")
            self._port_lost(f"write failed: {exc}")

    def _assert_line(self, port: serial.SerialBase, job: OutputJob) -> None:
        """A pulse's leading edge now; its trailing edge is a writer-thread timer."""
        setattr(port, job.line.lower(), True)
        sent_at = time.monotonic()
        self._add_timer(sent_at + job.width_s, lambda: self._release_line(port, job.line))
        self._count_success(job.kind)
        finish(job.future, SendResult(True, sent_at))

    def _release_line(self, port, line: str) -> None:
        try:
            with self._io:
                setattr(port, line.lower(), False)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("could not release %s on %s: %s", line, self.port, exc)

    def _add_timer(self, when: float, fn: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._timers, (when, next(self._timer_seq), fn))

    def _expire_acks(self, now: float) -> None:
        with self._lock:
            expired = self._acks.expired(now)
            if not expired:
                return
            self.stats.acks_missed += len(expired)
            self.stats.outputs_failed += len(expired)
        for p in expired:
            waited = (now - p.sent_at) * 1000
            msg = f"no acknowledgement {p.expect!r} within {waited:.0f} ms"
            self.stats.last_error = msg
            log.warning("serial %s: %s", self.port, msg)
            finish(p.future, SendResult(False, p.sent_at, False, None, msg))

    def _count_success(self, kind: str) -> None:
        with self._lock:
            if kind == "heartbeat":
                self.stats.heartbeats_sent += 1
            else:
                self.stats.outputs_sent += 1

    def _count_failure(self, job: OutputJob, message: str, while_down: bool = False) -> None:
        with self._lock:
            if job.kind != "heartbeat":
                self.stats.outputs_failed += 1
                self.stats.failed_while_down += int(while_down)
            self.stats.last_error = message
        finish(job.future, SendResult(False, None, None if job.ack is None else False,
                                      None, message))
