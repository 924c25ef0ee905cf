"""The serial port to the line's PLC: reject outputs, trigger input, heartbeat, reconnect.

One ``SerialLink`` owns one pyserial port (opened with ``serial.serial_for_url`` so
``loop://`` works in tests and the demo). Two threads share it:

* the **reader** reads bytes (trigger messages, acknowledgements), polls a modem status line
  for trigger edges, and owns the port's life: it notices a vanished port (a pty whose peer
  closed, an unplugged USB adapter), closes it and reopens it with back-off;
* the **writer** performs outputs in order (line pulses, byte messages, heartbeats) so a
  caller never blocks on the port: a pulse's trailing edge and an acknowledgement's time-out
  are timers, not sleeps, so one part's output never delays the next part's.

Outputs while the link is down fail at once, are counted, and say why; the station keeps
running and shows "serial link lost" from the state listeners.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import serial

log = logging.getLogger(__name__)

OUTPUT_LINES = ("DTR", "RTS")
INPUT_LINES = ("CTS", "DSR", "CD", "RI")
STATES = ("connected", "disconnected", "error")

NO_MODEM_LINES = (
    "this port has no modem lines ({port}: {error}); a pseudo-terminal or a USB adapter "
    "without DTR/RTS/CTS/DSR wiring cannot pulse or watch a line — use mode=message "
    "for the reject output (and a byte message for the trigger)"
)


class SerialLinkError(RuntimeError, ValueError):
    """A configuration the port cannot honour (bad line name, no modem lines).

    Also a ``ValueError``: it is a bad setting, and start-up reports those in one line.
    """


@dataclass(frozen=True)
class SendResult:
    """What became of one output: written, acknowledged, or why not."""

    ok: bool  # written, and acknowledged when an acknowledgement was asked for
    sent_at: float | None  # monotonic time the bytes were written / the line asserted
    acked: bool | None = None  # None when no acknowledgement was expected
    ack_latency_ms: float | None = None
    error: str = ""


@dataclass
class LinkStats:
    """Counters the GUI and the bench show; outputs_failed includes those during outages."""

    outputs_sent: int = 0
    outputs_failed: int = 0
    failed_while_down: int = 0
    acks_received: int = 0
    acks_missed: int = 0
    heartbeats_sent: int = 0
    triggers: int = 0
    reconnects: int = 0
    disconnects: int = 0
    last_error: str = ""


@dataclass
class _Job:
    kind: str  # "pulse" | "send" | "heartbeat"
    future: Future
    line: str = ""
    width_s: float = 0.0
    data: bytes = b""
    ack: bytes | None = None
    ack_timeout_s: float = 0.0


@dataclass
class _PendingAck:
    expect: bytes
    deadline: float
    sent_at: float
    future: Future


class TriggerLineParser:
    """Counts trigger messages in a byte stream: whole lines equal to the token, nothing else.

    The token is the configured trigger message without its CR/LF (``"TRIG\\n"`` ->
    ``TRIG``); a line ends at CR, LF or CR LF. ``RETRIG``, ``TRIGGER`` or ``TRIG`` inside
    noise are not triggers: a substring match would fire on them. Bytes arrive in any
    chunking; the result does not depend on it. Memory stays bounded: a line longer than
    the token cannot match, so it is skipped up to its end.
    """

    def __init__(self, message: bytes | str) -> None:
        token = _as_bytes(message).strip(b"\r\n")
        if not token or b"\r" in token or b"\n" in token:
            raise SerialLinkError(
                f"trigger message {_as_bytes(message)!r}: expected one line of text such as "
                "'TRIG\\n' (it is matched as a whole line)")
        self.token = token
        self._line = bytearray()
        self._skipping = False  # inside a line already longer than the token

    def reset(self) -> None:
        """A new stream (the port was reopened): the next byte starts a line."""
        self._line.clear()
        self._skipping = False

    def feed(self, data: bytes) -> int:
        """Take the next bytes; the number of trigger lines they completed."""
        pieces = _LINE_END.split(bytes(data))
        count = 0
        for piece in pieces[:-1]:  # each of these ends a line
            if not self._skipping and len(self._line) + len(piece) == len(self.token) \
                    and self._line + piece == self.token:
                count += 1
            self._line.clear()
            self._skipping = False
        self._take_partial(pieces[-1])
        return count

    def _take_partial(self, piece: bytes) -> None:
        if self._skipping:
            return
        if len(self._line) + len(piece) > len(self.token):
            self._line.clear()
            self._skipping = True
        else:
            self._line += piece


_LINE_END = re.compile(rb"\r\n|\r|\n")


class SerialLink:
    """A serial port with its own I/O threads; see the module docstring for why."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        trigger_message: bytes | str = b"",
        trigger_line: str = "",
        heartbeat_s: float = 0.0,
        heartbeat_message: bytes | str = b"",
        line_poll_ms: float = 1.0,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 2.0,
        write_timeout_s: float = 0.5,
        connect: bool = True,
    ) -> None:
        if not port:
            raise SerialLinkError("serial port is empty: expected e.g. 'loop://' or '/dev/ttyUSB0'")
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise SerialLinkError(f"baudrate must be a positive integer, got {baudrate!r}")
        if trigger_line and trigger_line not in INPUT_LINES:
            raise SerialLinkError(
                f"trigger line {trigger_line!r} is not an input modem line: expected one of "
                f"{', '.join(INPUT_LINES)} (or '' for none)"
            )
        self.port = port
        self.baudrate = baudrate
        self.trigger_message = _as_bytes(trigger_message)
        self._trigger_parser = (TriggerLineParser(self.trigger_message)
                                if self.trigger_message else None)
        self.trigger_line = trigger_line
        self.heartbeat_s = float(heartbeat_s)
        self.heartbeat_message = _as_bytes(heartbeat_message)
        if self.heartbeat_s > 0 and not self.heartbeat_message:
            raise SerialLinkError("heartbeat_s > 0 needs a heartbeat_message to send")
        self._line_poll_s = max(line_poll_ms, 0.2) / 1000.0
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._write_timeout_s = write_timeout_s

        self.stats = LinkStats()
        self._lock = threading.RLock()  # guards state, stats, pending acks, listeners
        self._io = threading.Lock()  # held by the writer around port operations and by close
        self._port: serial.SerialBase | None = None
        self._port_ok = False
        self._state = "disconnected"
        self._state_message = "not opened yet"
        self._state_known = False  # no open attempted yet: nothing to tell a listener
        self._notify = threading.RLock()  # serializes state notifications
        self._modem_lines_ok: bool | None = None
        self._line_watch_disabled = False
        self._last_level: bool | None = None
        self._pending_acks: list[_PendingAck] = []
        self._rx = bytearray()
        self._trigger_listeners: list[Callable[[float], None]] = []
        self._state_listeners: list[Callable[[str, str], None]] = []
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stop = threading.Event()  # stops the reader, after the writer has finished
        self._closing = False
        self._connected = threading.Event()

        if connect:
            self._try_open()
        self._reader = threading.Thread(target=self._reader_loop, name="serial-reader", daemon=True)
        self._writer = threading.Thread(target=self._writer_loop, name="serial-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    @classmethod
    def from_recipe(cls, recipe, serial_trigger: bool | None = None, **kwargs) -> SerialLink:
        """Build the link from a recipe (its ``reject`` and ``trigger`` sections).

        Trigger input is set up only when the trigger is the serial link (``serial_trigger``,
        default: the recipe's ``trigger.mode == "serial"``): a line watched for nothing would
        cost polling, and on a pty an error state.
        """
        reject = recipe.reject
        trigger = getattr(recipe, "trigger", None)
        if serial_trigger is None:
            serial_trigger = getattr(trigger, "mode", "serial") == "serial"
        line = getattr(trigger, "serial_line", "") or ""
        return cls(
            reject.port,
            int(reject.baudrate),
            trigger_message=(getattr(trigger, "serial_message", b"") or b"")
            if serial_trigger and not line else b"",
            trigger_line=line if serial_trigger else "",
            heartbeat_s=float(getattr(reject, "heartbeat_s", 0) or 0),
            heartbeat_message=getattr(reject, "heartbeat_message", b"") or b"",
            **kwargs,
        )

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """"connected" | "disconnected" | "error" (a fault the port itself cannot fix)."""
        return self._state

    @property
    def state_message(self) -> str:
        return self._state_message

    def add_state_listener(self, cb: Callable[[str, str], None]) -> None:
        """``cb(state, message)`` on every change; called from the I/O threads.

        A fault that already holds (the port was missing when the link was built, before
        anyone listened) is told to the new listener at once: later retries end in the same
        state and message, which are not announced again, so it would never hear of it.
        """
        with self._notify:
            with self._lock:
                self._state_listeners.append(cb)
                state, message = self._state, self._state_message
                known = self._state_known
            if known and state != "connected":
                cb(state, message)

    def add_trigger_listener(self, cb: Callable[[float], None]) -> None:
        """``cb(t_monotonic)`` for each trigger message or modem-line rising edge."""
        with self._lock:
            self._trigger_listeners.append(cb)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _set_state(self, state: str, message: str) -> None:
        # one notification at a time, in order, and none between a new listener's
        # registration and the replay of the state it joined in
        with self._notify:
            with self._lock:
                self._state_known = True
                if state == self._state and message == self._state_message:
                    return
                self._state, self._state_message = state, message
                if state == "connected":
                    self._connected.set()
                else:
                    self._connected.clear()
                listeners = list(self._state_listeners)
            quiet = state == "connected" or self._closing  # closing on purpose is no fault
            (log.info if quiet else log.warning)("serial %s: %s", state, message)
            for cb in listeners:
                try:
                    cb(state, message)
                except Exception:  # a listener's bug must not kill the I/O thread
                    log.exception("serial state listener failed")

    # ------------------------------------------------------------------ outputs

    def pulse_async(self, line: str, width_ms: float, direct: bool = False) -> Future:
        """Assert ``line`` now, de-assert it ``width_ms`` later (a writer-thread timer).

        ``direct``: assert it in the calling thread when the port is free, saving the
        hand-off to the writer thread (a thread wake-up, up to the GIL's switch interval);
        the reject scheduler's timer thread uses this at the deadline.
        """
        if line not in OUTPUT_LINES:
            raise SerialLinkError(f"reject line {line!r}: expected one of {', '.join(OUTPUT_LINES)}")
        if width_ms <= 0:
            raise SerialLinkError(f"pulse width must be > 0 ms, got {width_ms!r}")
        return self._submit(_Job("pulse", Future(), line=line, width_s=width_ms / 1000.0), direct)

    def send_async(
        self, message: bytes | str, expect_ack: bytes | str | None = None,
        timeout_ms: float = 100.0, direct: bool = False,
    ) -> Future:
        """Write ``message``; when ``expect_ack`` is given, the result waits for it."""
        ack = _as_bytes(expect_ack) if expect_ack else None
        job = _Job("send", Future(), data=_as_bytes(message), ack=ack, ack_timeout_s=timeout_ms / 1000)
        return self._submit(job, direct)

    def pulse(self, line: str, width_ms: float) -> SendResult:
        """Blocking form of :meth:`pulse_async`: returns once the line is asserted."""
        return self.pulse_async(line, width_ms).result()

    def send(
        self, message: bytes | str, expect_ack: bytes | str | None = None, timeout_ms: float = 100.0
    ) -> SendResult:
        """Blocking form of :meth:`send_async`: returns on ack, time-out or write."""
        return self.send_async(message, expect_ack, timeout_ms).result()

    def check_modem_lines(self) -> None:
        """Raise ``SerialLinkError`` now if the open port cannot drive DTR/RTS.

        Used at start-up in line mode, so a pty or a bare adapter is refused before the
        first reject instead of failing at it. A port that is not open is not judged.
        """
        with self._lock:
            port = self._port if self._port_ok else None
        if port is None:
            return
        try:
            port.dtr = port.dtr
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL):
                raise SerialLinkError(NO_MODEM_LINES.format(port=self.port, error=exc)) from exc
            raise

    def input_lines(self) -> dict[str, bool]:
        """The input modem lines now (for the engineer's wiring check); {} if unreadable."""
        with self._lock:
            port = self._port if self._port_ok else None
        if port is None:
            return {}
        try:
            return {name: bool(getattr(port, name.lower())) for name in INPUT_LINES}
        except (OSError, serial.SerialException):
            return {}

    def _submit(self, job: _Job, direct: bool = False) -> Future:
        if self._closing:
            job.future.set_result(SendResult(False, None, error="serial link is closed"))
            return job.future
        if direct and self._run_job(job, blocking=False):
            self._jobs.put(_Job("wake", job.future))  # the writer re-plans its timers
            return job.future
        self._jobs.put(job)
        return job.future

    def _writer_loop(self) -> None:
        next_heartbeat = time.monotonic() + self.heartbeat_s if self.heartbeat_s > 0 else None
        while True:
            now = time.monotonic()
            with self._lock:
                wake = [self._timers[0][0]] if self._timers else []
                wake += [p.deadline for p in self._pending_acks]
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
            while True:
                with self._lock:
                    if not self._timers or self._timers[0][0] > now:
                        break
                    _, _, fn = heapq.heappop(self._timers)
                fn()
            self._expire_acks(now)
            if next_heartbeat is not None and now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_s
                self._run_job(_Job("heartbeat", Future(), data=self.heartbeat_message))
        # closing: release any held line and answer every waiter
        with self._lock:
            timers, self._timers = sorted(self._timers), []
        for _, _, fn in timers:
            fn()
        with self._lock:
            pending, self._pending_acks = self._pending_acks, []
        for p in pending:
            self._finish(p.future, SendResult(False, p.sent_at, False, None, "link closed before ack"))
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.kind != "wake":
                self._finish(job.future, SendResult(False, None, error="serial link is closed"))

    def _run_job(self, job: _Job, blocking: bool = True) -> bool:
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

    def _do_job(self, port: serial.SerialBase, job: _Job) -> None:
        try:
            if job.kind == "pulse":
                setattr(port, job.line.lower(), True)
                sent_at = time.monotonic()
                self._add_timer(sent_at + job.width_s, lambda: self._release_line(port, job.line))
                self._count_success(job.kind)
                self._finish(job.future, SendResult(True, sent_at))
                return
            if job.ack is not None:
                with self._lock:  # register before writing: a fast peer may answer at once
                    pending = _PendingAck(job.ack, float("inf"), time.monotonic(), job.future)
                    self._pending_acks.append(pending)
            port.write(job.data)
            sent_at = time.monotonic()
            self._count_success(job.kind)
            if job.ack is None:
                self._finish(job.future, SendResult(True, sent_at))
            else:
                with self._lock:
                    if not job.future.done():  # else acked already, timed from before the write
                        pending.sent_at = sent_at
                    pending.deadline = sent_at + job.ack_timeout_s
        except (OSError, TypeError, AttributeError, ValueError) as exc:
            # TypeError/AttributeError: pyserial's fd vanished under it (device gone)
            if job.ack is not None:
                with self._lock:
                    self._pending_acks = [p for p in self._pending_acks if p.future is not job.future]
            if (job.kind == "pulse" and isinstance(exc, OSError)
                    and exc.errno in (errno.ENOTTY, errno.EINVAL)):
                message = NO_MODEM_LINES.format(port=self.port, error=exc)
                self._count_failure(job, message)
                self._set_state("error", message)
                return
            self._count_failure(job, f"write failed on {self.port}: {exc}")
            self._port_lost(f"write failed: {exc}")

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
            expired = [p for p in self._pending_acks if p.deadline <= now]
            if not expired:
                return
            self._pending_acks = [p for p in self._pending_acks if p.deadline > now]
            self.stats.acks_missed += len(expired)
            self.stats.outputs_failed += len(expired)
        for p in expired:
            waited = (now - p.sent_at) * 1000
            msg = f"no acknowledgement {p.expect!r} within {waited:.0f} ms"
            self.stats.last_error = msg
            log.warning("serial %s: %s", self.port, msg)
            self._finish(p.future, SendResult(False, p.sent_at, False, None, msg))

    def _count_success(self, kind: str) -> None:
        with self._lock:
            if kind == "heartbeat":
                self.stats.heartbeats_sent += 1
            else:
                self.stats.outputs_sent += 1

    def _count_failure(self, job: _Job, message: str, while_down: bool = False) -> None:
        with self._lock:
            if job.kind != "heartbeat":
                self.stats.outputs_failed += 1
                self.stats.failed_while_down += int(while_down)
            self.stats.last_error = message
        self._finish(job.future, SendResult(False, None, None if job.ack is None else False,
                                            None, message))

    @staticmethod
    def _finish(future: Future, result: SendResult) -> None:
        if not future.done():
            future.set_result(result)

    # ------------------------------------------------------------------ input + port life

    def _try_open(self) -> bool:
        kwargs = {"timeout": 0.05, "write_timeout": self._write_timeout_s}
        if "://" not in self.port:
            kwargs["exclusive"] = True  # two stations on one port would steal each other's bytes
        try:
            port = serial.serial_for_url(self.port, self.baudrate, do_not_open=True, **kwargs)
            # pyserial asserts DTR and RTS on open by default: on a reject line that would be
            # a reject signal held for as long as the port is open
            port.dtr = False
            port.rts = False
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            with self._lock:
                self.stats.last_error = f"could not open {self.port}: {exc}"
            self._set_state("disconnected", f"could not open {self.port}: {exc}")
            return False
        self._last_level = None
        if self.trigger_line and not self._line_watch_disabled:
            try:  # the level at open, so an edge before the reader's first poll still counts
                self._last_level = bool(getattr(port, self.trigger_line.lower()))
            except OSError:
                pass  # no modem lines: the reader reports it
        with self._lock:
            self._port, self._port_ok = port, True
            self._rx.clear()
            if self._trigger_parser is not None:
                self._trigger_parser.reset()
        self._set_state("connected", f"{self.port} open at {self.baudrate} baud")
        return True

    def _port_lost(self, reason: str) -> None:
        """Mark the port unusable now; the reader thread closes and reopens it."""
        with self._lock:
            if not self._port_ok:
                return
            self._port_ok = False
            self.stats.disconnects += 1
            self.stats.last_error = reason
            port = self._port
        self._set_state("disconnected", f"serial link lost on {self.port}: {reason}")
        try:
            port.cancel_read()
        except Exception:  # the port may already be half-gone; the reader notices anyway
            pass

    def _close_port(self) -> None:
        with self._lock:
            port, self._port, self._port_ok = self._port, None, False
            pending, self._pending_acks = self._pending_acks, []
            self.stats.acks_missed += len(pending)
            self.stats.outputs_failed += len(pending)
        for p in pending:
            self._finish(p.future, SendResult(False, p.sent_at, False, None, "link lost before ack"))
        if port is not None:
            try:
                with self._io:
                    port.close()
            except Exception as exc:  # closing a vanished device may fail; it is gone either way
                log.debug("closing %s: %s", self.port, exc)

    def _reader_loop(self) -> None:
        backoff = self._reconnect_min_s
        while not self._stop.is_set():
            with self._lock:
                port = self._port if self._port_ok else None
            if port is None:
                self._close_port()
                if self._stop.wait(backoff):
                    break
                if self._try_open():
                    with self._lock:
                        self.stats.reconnects += 1
                    backoff = self._reconnect_min_s
                else:
                    backoff = min(backoff * 2, self._reconnect_max_s)
                continue
            watch = self.trigger_line and not self._line_watch_disabled
            try:
                wanted = self._line_poll_s if watch else 0.05
                if port.timeout != wanted:  # the setter reconfigures the tty: only on change
                    port.timeout = wanted
                data = port.read(max(1, port.in_waiting))
                now = time.monotonic()
                if data:
                    self._on_bytes(data, now)
                if watch:
                    level = bool(getattr(port, self.trigger_line.lower()))
                    if self._last_level is False and level:
                        self._fire_trigger(time.monotonic())
                    self._last_level = level
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EINVAL) and watch:
                    self._line_watch_disabled = True
                    self._set_state("error", NO_MODEM_LINES.format(port=self.port, error=exc))
                    continue
                if not self._stop.is_set():
                    self._port_lost(str(exc))
            except (serial.SerialException, TypeError, AttributeError, ValueError) as exc:
                # pyserial raises TypeError/AttributeError when the fd vanished under it
                if not self._stop.is_set():
                    self._port_lost(str(exc))
        self._close_port()

    def _on_bytes(self, data: bytes, now: float) -> None:
        with self._lock:
            self._rx += data
            triggers = self._trigger_parser.feed(data) if self._trigger_parser else 0
            acked: list[_PendingAck] = []
            for p in list(self._pending_acks):
                i = self._rx.find(p.expect)
                if i >= 0:
                    del self._rx[i : i + len(p.expect)]
                    self._pending_acks.remove(p)
                    acked.append(p)
            self.stats.acks_received += len(acked)
            keep = max([len(p.expect) for p in self._pending_acks] + [64])
            if len(self._rx) > 4 * keep:  # unmatched noise: keep only a possible partial match
                del self._rx[: len(self._rx) - keep]
        for p in acked:
            self._finish(p.future, SendResult(True, p.sent_at, True, (now - p.sent_at) * 1000))
        for _ in range(triggers):
            self._fire_trigger(now)

    def _fire_trigger(self, t: float) -> None:
        with self._lock:
            self.stats.triggers += 1
            listeners = list(self._trigger_listeners)
        for cb in listeners:
            try:
                cb(t)
            except Exception:
                log.exception("serial trigger listener failed")

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 2.0) -> None:
        """Finish queued outputs, stop both threads (releasing any asserted line), close."""
        if self._closing:
            return
        self._closing = True  # new outputs are refused from now on
        self._jobs.put(None)
        self._writer.join(timeout)  # the writer drains its queue before the port goes
        self._stop.set()
        with self._lock:
            port = self._port if self._port_ok else None
        if port is not None:
            try:
                port.cancel_read()
            except Exception:  # the port may be half-gone; the reader stops on _stop anyway
                pass
        self._reader.join(timeout)
        self._set_state("disconnected", "closed")

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_bytes(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8")
