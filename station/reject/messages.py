"""What travels over the serial link: output jobs and their results, acknowledgements, triggers.

Plain data and bookkeeping, no threads and no port: ``SerialLink`` holds its own lock around
every ``AckBook`` call, and feeds ``TriggerLineParser`` the bytes its reader thread reads.
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from dataclasses import dataclass

from station.reject.modem import SerialLinkError

_LINE_END = re.compile(rb"\r\n|\r|\n")


def as_bytes(value: bytes | str | None) -> bytes:
    """A setting given as text or bytes, as the bytes written to the port (UTF-8)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8")


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
class OutputJob:
    """One output for the writer thread; ``wake`` only makes it re-plan its timers."""

    kind: str  # "pulse" | "send" | "heartbeat" | "wake"
    future: Future
    line: str = ""
    width_s: float = 0.0
    data: bytes = b""
    ack: bytes | None = None
    ack_timeout_s: float = 0.0


@dataclass
class PendingAck:
    expect: bytes
    deadline: float
    sent_at: float
    future: Future


def finish(future: Future, result: SendResult) -> None:
    """Answer a waiter once; a later answer (a late ack after a time-out) is dropped."""
    if not future.done():
        future.set_result(result)


class AckBook:
    """The acknowledgements waited for and the received bytes they are looked for in.

    Not thread-safe by itself: the link calls it under its lock.
    """

    def __init__(self) -> None:
        self.pending: list[PendingAck] = []
        self._rx = bytearray()

    def clear_received(self) -> None:
        """A new stream (the port was reopened): old bytes can no longer complete an ack."""
        self._rx.clear()

    def deadlines(self) -> list[float]:
        return [p.deadline for p in self.pending]

    def register(self, expect: bytes, sent_at: float, future: Future) -> PendingAck:
        """Wait for ``expect`` (registered before the write: a fast peer may answer at once)."""
        pending = PendingAck(expect, float("inf"), sent_at, future)
        self.pending.append(pending)
        return pending

    def forget(self, future: Future) -> None:
        """The write failed: nothing is coming for it."""
        self.pending = [p for p in self.pending if p.future is not future]

    def take_all(self) -> list[PendingAck]:
        """Every wait, removed (the port closed or the link is closing)."""
        pending, self.pending = self.pending, []
        return pending

    def expired(self, now: float) -> list[PendingAck]:
        """The waits whose deadline has passed, removed."""
        expired = [p for p in self.pending if p.deadline <= now]
        if expired:
            self.pending = [p for p in self.pending if p.deadline > now]
        return expired

    def received(self, data: bytes) -> list[PendingAck]:
        """Take new bytes; the waits they answered, removed (each ack's bytes used once)."""
        self._rx += data
        acked: list[PendingAck] = []
        for p in list(self.pending):
            i = self._rx.find(p.expect)
            if i >= 0:
                del self._rx[i : i + len(p.expect)]
                self.pending.remove(p)
                acked.append(p)
        keep = max([len(p.expect) for p in self.pending] + [64])
        if len(self._rx) > 4 * keep:  # unmatched noise: keep only a possible partial match
            del self._rx[: len(self._rx) - keep]
        return acked


class TriggerLineParser:
    """Counts trigger messages in a byte stream: whole lines equal to the token, nothing else.

    The token is the configured trigger message without its CR/LF (``"TRIG\\n"`` ->
    ``TRIG``); a line ends at CR, LF or CR LF. ``RETRIG``, ``TRIGGER`` or ``TRIG`` inside
    noise are not triggers: a substring match would fire on them. Bytes arrive in any
    chunking; the result does not depend on it. Memory stays bounded: a line longer than
    the token cannot match, so it is skipped up to its end.
    """

    def __init__(self, message: bytes | str) -> None:
        token = as_bytes(message).strip(b"\r\n")
        if not token or b"\r" in token or b"\n" in token:
            raise SerialLinkError(
                f"trigger message {as_bytes(message)!r}: expected one line of text such as "
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


