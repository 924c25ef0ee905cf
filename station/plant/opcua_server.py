"""The station's OPC UA server (asyncua): the PLC handshake for PLCs and MES that speak OPC UA.

The node layout is :mod:`station.plant.opcua_nodes` (``docs/opcua.md``); what the nodes show
and what the methods do is :mod:`station.plant.opcua_methods`; who may connect is
:mod:`station.plant.opcua_auth`.

asyncua is asyncio; the station is threads. The server runs its own event loop in its own
thread (``opcua``), which :meth:`OpcUaServer.start` starts and :meth:`OpcUaServer.stop` ends
and joins, closing the port. The handshake's ``changed`` signal (from engine threads) wakes
the loop, which copies the handshake's state into the nodes; a one-second tick moves the
Heartbeat and catches anything a signal did not announce. A result's fields are written before
``ResultValid`` rises, so a client that sees ResultValid true reads the result it announces.
Method calls run in asyncua's worker threads, so a recipe changeover (seconds: models load)
never stalls the server; ``host.engine_changed`` re-reads the recipe catalogue and adds or
removes the ``Reject`` variable with the new recipe's reject output.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from datetime import UTC
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.server.address_space import NodeData

from station.plant.handshake import PlcHandshake
from station.plant.host import RecipeEntry
from station.plant.opcua_auth import (
    OpcUaStartError,
    StationUsers,
    check_settings,
    configure_security,
)
from station.plant.opcua_methods import StationMethods, result_values, station_values
from station.plant.opcua_nodes import (
    REJECT_PATH,
    SPECS,
    add_node,
    build_station,
    node_id,
    variant,
)

log = logging.getLogger(__name__)

__all__ = ["OpcUaStartError", "OpcUaServer"]

TICK_S = 1.0  # heartbeat and safety-net refresh
CATALOGUE_S = 10.0  # re-read the recipe folder this often (a recipe added meanwhile)
MAX_MESSAGE_BYTES = 1 << 20  # a request larger than this is refused (BadRequestTooLarge)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(type(a) is type(b) and a == b)


def wants_reject(recipe: Any) -> bool:
    """The recipe's reject output is the PLC's Reject variable."""
    return bool(recipe.reject.enabled and recipe.reject.output == "plc")


class OpcUaServer:
    """Serves ``handshake`` over OPC UA with the recipe's ``[opcua]`` settings (or
    ``settings``); ``endpoint`` overrides the URL (port 0 = any free port: see ``url``)."""

    def __init__(self, handshake: PlcHandshake, settings: Any = None, *,
                 endpoint: str | None = None) -> None:
        self.handshake = handshake
        self.host = handshake.host
        settings = settings if settings is not None else self.host.recipe.opcua
        if endpoint is not None:
            settings = dataclasses.replace(settings, endpoint=endpoint)
        self.settings = settings
        self.listen = check_settings(settings)  # OpcUaStartError before any thread
        self.users = StationUsers(self.settings.username, self.settings.password_hash)
        self.methods = StationMethods(handshake)
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._ending = threading.Event()  # stop() was called (maybe before the loop ran)
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._server: Server | None = None
        self._idx = 0
        self._shown: dict[str, Any] = {}
        self._shown_seq: int | None = None
        self._catalogue: list[RecipeEntry] = []
        self._catalogue_at = -math.inf
        self._has_reject = False
        self._rises = 0  # Reject pulses begun (pulse thread), and those shown (the loop)
        self._rises_shown = 0
        self._reject_hold = 0.0  # monotonic time a late-shown pulse ends
        self._own_ack: ua.DataValue | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_recipe(cls, handshake: PlcHandshake, recipe: Any) -> OpcUaServer:
        """The server of ``recipe.opcua`` (after ``--opcua`` was applied to it)."""
        return cls(handshake, recipe.opcua)

    # -- lifecycle (any thread) -------------------------------------------------------------
    @property
    def url(self) -> str:
        """The endpoint URL clients use (with the port really bound)."""
        return self.listen.url(self.port)

    @property
    def address(self) -> str:
        """Where clients connect (``PlantServices`` prints it)."""
        return self.url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set() \
            and self._error is None

    def start(self, timeout: float = 120.0) -> None:
        """Listen; returns once clients can connect. A port in use, an unreadable key or
        certificate: :class:`OpcUaStartError` with the key at fault (no thread is left)."""
        if self._thread is not None:
            return
        self._ready.clear()
        self._ending.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise OpcUaStartError(f"opcua.endpoint = {self.settings.endpoint!r}: the server did "
                                  f"not start within {timeout:.0f} s")
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join(10.0)
            self._thread = None
            if isinstance(error, OpcUaStartError):
                raise error
            raise OpcUaStartError(f"opcua.endpoint = {self.settings.endpoint!r}: cannot serve "
                                  f"it: {error}") from error
        log.info("OPC UA server listening on %s", self.url)

    def stop(self, timeout: float = 30.0) -> None:
        """Close every session and the port, end the loop and join its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._ending.set()  # first: a loop not running yet sees it once it is (see _main)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            log.error("OPC UA server thread did not end within %.0f s", timeout)
        self.port = None

    close = stop

    def __enter__(self) -> OpcUaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the server's thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); after start: logged
            if self._ready.is_set():
                log.exception("OPC UA server stopped on an error")
            else:
                self._error = exc
                self._ready.set()

    async def _main(self) -> None:
        self._shown, self._shown_seq, self._catalogue_at = {}, None, -math.inf  # a new space
        self._rises_shown = self._rises
        server = await self._make_server()
        try:
            await server.start()
        except OSError as exc:
            raise OpcUaStartError(f"opcua.endpoint = {self.settings.endpoint!r}: cannot listen "
                                  f"on {self.listen.host}:{self.listen.port}: "
                                  f"{exc.strerror or exc}") from exc
        self._server = server
        self.port = server.bserver.port if server.bserver is not None else self.listen.port
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._ending.is_set():  # stop() came while the server was starting
            self._stop.set()
        await self._refresh()
        self.handshake.changed.connect(self._poke)
        self.host.pulse.changed.connect(self._on_pulse)
        self.host.engine_changed.connect(self._on_engine_changed)
        refresher = asyncio.create_task(self._refresher())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self.handshake.changed.disconnect(self._poke)
            self.host.pulse.changed.disconnect(self._on_pulse)
            self.host.engine_changed.disconnect(self._on_engine_changed)
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await server.stop()
            self._server = self._loop = None
            log.info("OPC UA server on %s stopped", self.url)

    async def _make_server(self) -> Server:
        server = Server(user_manager=self.users)
        await server.init()
        server.set_endpoint(self.listen.url())
        server.set_server_name("station")
        server.limits.max_message_size = MAX_MESSAGE_BYTES
        server.limits.max_chunk_count = MAX_MESSAGE_BYTES // server.limits.max_recv_buffer + 1
        await configure_security(server, self.settings)
        server.allow_remote_admin(False)
        self._has_reject = wants_reject(self.host.recipe)
        self._idx = await build_station(server, self.methods.handlers(),
                                        with_reject=self._has_reject)
        server.set_attribute_value_setter(node_id(self._idx, "ResultAck"), self._ack_setter)
        return server

    # -- following the handshake ------------------------------------------------------------
    def _poke(self, *_args: object) -> None:
        """Any thread: the handshake changed; the loop refreshes the nodes."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    def _on_pulse(self, active: bool) -> None:
        """A Reject pulse began: latched, so it is shown even if the loop is late for it."""
        if active:
            self._rises += 1
        self._poke()

    def _on_engine_changed(self, _engine: object) -> None:
        self._catalogue_at = -math.inf  # a changeover: re-read the folder, the Reject node
        self._poke()

    async def _refresher(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                await self._refresh()
            except Exception:  # never let a display problem end the server
                log.exception("OPC UA node refresh failed")

    async def _refresh(self) -> None:
        if time.monotonic() - self._catalogue_at > CATALOGUE_S:
            self._catalogue_at = time.monotonic()
            loop = asyncio.get_running_loop()
            self._catalogue = await loop.run_in_executor(None, self.host.catalogue)
            await self._sync_reject_node()
        await self._push()

    async def _sync_reject_node(self) -> None:
        """Add or remove ``Reject`` as the running recipe's reject output asks."""
        server = self._server
        want = wants_reject(self.host.recipe)
        if server is None or want == self._has_reject:
            return
        if want:
            await add_node(server, self._idx, SPECS[REJECT_PATH], {})
        else:
            await server.delete_nodes([server.get_node(node_id(self._idx, REJECT_PATH))])
        self._shown.pop(REJECT_PATH, None)
        self._has_reject = want

    async def _push(self) -> None:
        """Copy the handshake into the nodes: the result first, ResultValid last."""
        values = station_values(self.handshake, self._catalogue)
        if not self._has_reject:
            values.pop(REJECT_PATH)
        else:
            values[REJECT_PATH] = self._show_reject(values[REJECT_PATH])
        result = self.handshake.current_result()
        if result is not None and result.seq != self._shown_seq:
            if self._shown.get("ResultValid"):
                await self._write("ResultValid", False)  # an edge for each result
            for path, value in result_values(result).items():
                await self._write(path, value)
            self._shown_seq = result.seq
        for path, value in values.items():
            await self._write(path, value)
        await self._write("ResultValid", result is not None)

    def _show_reject(self, active: bool) -> bool:
        """Reject as shown: a pulse that began and ended between two refreshes (a loop late
        on a loaded machine) is shown late, held a pulse width, rather than not at all."""
        now = time.monotonic()
        if self._rises != self._rises_shown:
            self._rises_shown = self._rises
            if not active and self._loop is not None and self._wake is not None:
                width_s = self.host.recipe.reject.pulse_ms / 1000.0
                self._reject_hold = now + width_s
                self._loop.call_later(width_s, self._wake.set)
        return active or now < self._reject_hold

    async def _write(self, path: str, value: Any) -> None:
        if path in self._shown and _same(self._shown[path], value):
            return
        server = self._server
        if server is None:
            return
        now = ua.DateTime.now(UTC)
        await server.write_attribute_value(node_id(self._idx, path), ua.DataValue(
            variant(SPECS[path], value), SourceTimestamp=now, ServerTimestamp=now))
        self._shown[path] = value

    # -- ResultAck ------------------------------------------------------------------------
    def _ack_setter(self, node: NodeData, attr: ua.AttributeIds, value: ua.DataValue) -> None:
        """The loop's thread, on every write of ResultAck: true acknowledges the presented
        result (none presented: BadInvalidState); the station then writes false back."""
        attval = node.attributes[attr]
        if value is self._own_ack:
            attval.value = value
            return
        written = value.Value.Value if value.Value is not None else None
        if written is not True:
            return  # false (or a null): nothing to acknowledge; ResultAck stays false
        ok, why = self.handshake.acknowledge()
        if not ok:
            log.info("OPC UA ResultAck refused: %s", why)
            raise ServiceError(ua.StatusCodes.BadInvalidState)
        attval.value = value
        task = asyncio.get_running_loop().create_task(self._release_ack())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_ack(self) -> None:
        server = self._server
        if server is None:
            return
        now = ua.DateTime.now(UTC)
        self._own_ack = ua.DataValue(ua.Variant(False, ua.VariantType.Boolean),
                                     SourceTimestamp=now, ServerTimestamp=now)
        await server.write_attribute_value(node_id(self._idx, "ResultAck"), self._own_ack)
