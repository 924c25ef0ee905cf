"""One paho client driven from the publisher's own thread: no paho network thread.

Why: with ``loop_start()`` every publish is handed to paho's thread, which must be woken
(scheduled) to write it; on a busy 2-core station each such hand-over adds to the time from
verdict to PUBACK. Here the publisher's thread writes a message itself as it publishes it
(paho writes at once when no loop thread runs) and waits in one ``select`` on the broker's
socket and a wake-up socket that :meth:`MqttLink.wake` pokes when a message is queued.
Reconnection, with a back-off of 1 s doubling up to ``max_delay``, is this module's too.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class MqttLink:
    """``poll(timeout)`` does the network work (callbacks fire in the caller's thread);
    ``wake()`` (any thread) ends a ``poll`` early; ``close()`` disconnects."""

    def __init__(self, client: Any, host: str, port: int, keepalive: int, max_delay: float,
                 on_fail: Callable[[str], object]) -> None:
        self.client = client
        self._where = f"{host}:{port}"
        self._max_delay = max_delay
        self._on_fail = on_fail
        self._delay = 1.0
        self._next_attempt = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        client.connect_async(host, port, keepalive=keepalive)  # stores them; poll connects

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def connected_ok(self) -> None:
        """The broker accepted the connection (CONNACK): the back-off starts again at 1 s."""
        self._delay = 1.0

    def poll(self, timeout: float) -> None:
        """Connect if due, then wait up to ``timeout`` for the broker or a wake-up."""
        sock = self.client.socket()
        if sock is None:
            self._maybe_connect()
            sock = self.client.socket()
            if sock is None:
                timeout = min(timeout, max(0.0, self._next_attempt - time.monotonic()))
        readers = [self._wake_r] + ([sock] if sock is not None else [])
        writers = [sock] if sock is not None and self.client.want_write() else []
        try:
            readable, writable, _ = select.select(readers, writers, [], timeout)
        except (OSError, ValueError):  # the socket closed under us: the next poll reconnects
            return
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        if sock is None or self.client.socket() is not sock:
            return
        if sock in readable:
            self.client.loop_read()
        if sock in writable and self.client.socket() is sock:
            self.client.loop_write()
        if self.client.socket() is sock:
            self.client.loop_misc()  # keepalive pings, a broker gone silent

    def _maybe_connect(self) -> None:
        now = time.monotonic()
        if now < self._next_attempt:
            return
        self._next_attempt = now + self._delay  # also when CONNACK then refuses us
        self._delay = min(self._delay * 2.0, self._max_delay)
        try:
            self.client.reconnect()
        except Exception as exc:  # refused, unreachable, TLS handshake, name not found
            self._on_fail(f"cannot connect to {self._where}: {exc}")

    def close(self) -> None:
        """Disconnect cleanly (a DISCONNECT: the broker drops the last will)."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        for s in (self._wake_r, self._wake_w):
            s.close()
