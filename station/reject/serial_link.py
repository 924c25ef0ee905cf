"""The serial port to the line's PLC: reject outputs, trigger input, heartbeat, reconnect.

One ``SerialLink`` owns one pyserial port (opened with ``serial.serial_for_url`` so
``loop://`` works in tests and the demo). Two threads share it:

* the **reader** (here) reads bytes (trigger messages, acknowledgements), polls a modem status
  line for trigger edges, and owns the port's life: it notices a vanished port (a pty whose
  peer closed, an unplugged USB adapter), closes it and reopens it with back-off;
* the **writer** (``station.reject.outputs``) performs outputs in order (line pulses, byte
  messages, heartbeats) so a caller never blocks on the port.

Outputs while the link is down fail at once, are counted, and say why; the station keeps
running and shows "serial link lost" from the state listeners. ``modem`` holds the modem-line
rules and ``messages`` the results, counters, acknowledgement book and trigger parser.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from station.config import Recipe
from station.reject.messages import (
    AckBook,
    LinkStats,
    SendResult,
    TriggerLineParser,
    as_bytes,
    finish,
)
from station.reject.modem import (
    INPUT_LINES,
    NO_MODEM_LINES,
    OUTPUT_LINES,
    SerialLinkError,
    check_output_lines,
    check_trigger_line,
    lacks_modem_lines,
    read_input_lines,
)
from station.reject.outputs import LinkOutputs

__all__ = [  # what callers import from here (tests, the scheduler, start-up)
    "INPUT_LINES",
    "OUTPUT_LINES",
    "STATES",
    "LinkStats",
    "SendResult",
    "SerialLink",
    "SerialLinkError",
    "TriggerLineParser",
]

log = logging.getLogger(__name__)

STATES = ("connected", "disconnected", "error")


class SerialLink(LinkOutputs):
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
        check_trigger_line(trigger_line)
        self.port = port
        self.baudrate = baudrate
        self.trigger_message = as_bytes(trigger_message)
        self._trigger_parser = (TriggerLineParser(self.trigger_message)
                                if self.trigger_message else None)
        self.trigger_line = trigger_line
        self.heartbeat_s = float(heartbeat_s)
        self.heartbeat_message = as_bytes(heartbeat_message)
        if self.heartbeat_s > 0 and not self.heartbeat_message:
            raise SerialLinkError("heartbeat_s > 0 needs a heartbeat_message to send")
        self._line_poll_s = max(line_poll_ms, 0.2) / 1000.0
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._write_timeout_s = write_timeout_s

        self.stats = LinkStats()
        self._lock = threading.RLock()  # guards state, stats, pending acks, listeners
        self._port: serial.SerialBase | None = None
        self._port_ok = False
        self._state = "disconnected"
        self._state_message = "not opened yet"
        self._state_known = False  # no open attempted yet: nothing to tell a listener
        self._notify = threading.RLock()  # serializes state notifications
        self._modem_lines_ok: bool | None = None
        self._line_watch_disabled = False
        self._last_level: bool | None = None
        self._acks = AckBook()
        self._trigger_listeners: list[Callable[[float], None]] = []
        self._state_listeners: list[Callable[[str, str], None]] = []
        self._stop = threading.Event()  # stops the reader, after the writer has finished
        self._closing = False
        self._connected = threading.Event()
        self._init_outputs()

        if connect:
            self._try_open()
        self._reader = threading.Thread(target=self._reader_loop, name="serial-reader", daemon=True)
        self._writer = threading.Thread(target=self._writer_loop, name="serial-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    @classmethod
    def from_recipe(cls, recipe: Recipe, serial_trigger: bool | None = None,
                    **kwargs: Any) -> SerialLink:
        """Build the link from a recipe (its ``reject`` and ``trigger`` sections).

        Trigger input is set up only when the trigger is the serial link (``serial_trigger``,
        default: the recipe's ``trigger.mode == "serial"``): a line watched for nothing would
        cost polling, and on a pty an error state.
        """
        reject, trigger = recipe.reject, recipe.trigger
        if serial_trigger is None:
            serial_trigger = trigger.mode == "serial"
        line = trigger.serial_line
        return cls(
            reject.port,
            reject.baudrate,
            trigger_message=trigger.serial_message if serial_trigger and not line else b"",
            trigger_line=line if serial_trigger else "",
            heartbeat_s=reject.heartbeat_s,
            heartbeat_message=reject.heartbeat_message,
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

    # ------------------------------------------------------------------ wiring check

    def check_modem_lines(self) -> None:
        """Raise ``SerialLinkError`` now if the open port cannot drive DTR/RTS.

        Used at start-up in line mode, so a pty or a bare adapter is refused before the
        first reject instead of failing at it. A port that is not open is not judged.
        """
        with self._lock:
            port = self._port if self._port_ok else None
        if port is not None:
            check_output_lines(port, self.port)

    def input_lines(self) -> dict[str, bool]:
        """The input modem lines now (for the engineer's wiring check); {} if unreadable."""
        with self._lock:
            port = self._port if self._port_ok else None
        return {} if port is None else read_input_lines(port)

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
            # the level at open, so an edge before the reader's first poll still counts; a
            # port with no modem lines raises OSError, which the reader reports
            with contextlib.suppress(OSError):
                self._last_level = bool(getattr(port, self.trigger_line.lower()))
        with self._lock:
            self._port, self._port_ok = port, True
            self._acks.clear_received()
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
            if port is not None:
                port.cancel_read()
        except Exception:  # the port may already be half-gone; the reader notices anyway
            pass

    def _close_port(self) -> None:
        with self._lock:
            port, self._port, self._port_ok = self._port, None, False
            pending = self._acks.take_all()
            self.stats.acks_missed += len(pending)
            self.stats.outputs_failed += len(pending)
        for p in pending:
            finish(p.future, SendResult(False, p.sent_at, False, None, "link lost before ack"))
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
                if lacks_modem_lines(exc) and watch:
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
            triggers = self._trigger_parser.feed(data) if self._trigger_parser else 0
            acked = self._acks.received(data)
            self.stats.acks_received += len(acked)
        for p in acked:
            finish(p.future, SendResult(True, p.sent_at, True, (now - p.sent_at) * 1000))
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
            # the port may be half-gone; the reader stops on _stop anyway
            with contextlib.suppress(Exception):
                port.cancel_read()
        self._reader.join(timeout)
        self._set_state("disconnected", "closed")

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

