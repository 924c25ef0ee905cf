"""Modbus TCP server of the PLC handshake (``[modbus]``, ``--modbus HOST:PORT``).

Bound to ``modbus.host`` (127.0.0.1 unless the recipe names an interface), unit id
``modbus.unit``; it runs its own asyncio loop in one thread the host's owner starts and stops
(:class:`ModbusServer`). Every read is computed from :class:`~station.plant.PlcHandshake` at
that moment; the semantics (Ready, Busy, the result queue, changeover) are the handshake's.

Register map (addresses are 0-based, as on the wire; "x1000": 1000 = the model's threshold;
32-bit values are two registers, high word first; 65535 = no value):

=====================  =======  ===  ==========================================================
table                  address  r/w  meaning
=====================  =======  ===  ==========================================================
coil                   0        rw   Trigger: write 1 = inspect the latest frame now (rising
                                     edge; reads 1 until that part's result is latched, then 0).
                                     Refused when not Ready / debounced: exception 6 (busy);
                                     when trigger.mode is not "plc": exception 3
coil                   1        rw   ResultAck: write 1 = acknowledge the presented result
                                     (ResultValid then stays 0); write 0 = present the next one.
                                     1 with no result presented: exception 3
discrete input         0        r    Ready (a Trigger would be accepted now)
discrete input         1        r    Busy (part in flight, or result queue full)
discrete input         2        r    Error (running, but not inspecting / reject output down)
discrete input         3        r    Idle (stopped, or changeover running)
discrete input         4        r    ResultValid
discrete input         5/6/7    r    Pass / Reject / Error verdict of the presented result
discrete input         8        r    Reject pulse (reject.output = "plc"; held reject.pulse_ms)
discrete input         9        r    an alarm is active
discrete input         10       r    recipe changeover running
input register         0        r    state: 0 Idle, 1 Ready, 2 Busy, 3 Error
input register         1        r    heartbeat (seconds, wraps at 65536)
input register         2        r    result sequence number (low 16 bits; 0 = none presented)
input register         3-4      r    part id (uint32) of the presented result
input register         5        r    result code: 0 none, 1 pass, 2 reject, 3 error
input register         6        r    autoencoder score x1000 (normalized; 65535 = none)
input register         7        r    classifier score x1000 (normalized; 65535 = none)
input register         8        r    latency trigger -> verdict (ms)
input register         9        r    results waiting for ResultAck
input register         10       r    recipe number running
input register         11       r    recipe number last requested
input register         12       r    recipe request status: 0 none, 1 ok (running it), 2 unknown
                                     number, 3 busy, 4 refused (recipe/model invalid; the old
                                     recipe runs on), 5 changeover in progress
input register         13       r    last Trigger: 0 none, 1 accepted, 2 not ready, 3 trigger.mode
                                     is not "plc", 4 debounced
input register         14-15    r    part id (uint32) of the last accepted Trigger
input register         16-23    r    counts this shift (uint32 each): inspected, passed,
                                     rejected, errors
input register         24       r    active alarms
input register         25       r    results dropped unacknowledged (queue overrun)
input register         26       r    reject pulses sent (wraps at 65536)
holding register       0        rw   recipe select: write a recipe number to change over
                                     (unknown number: exception 3; part in flight: exception 6;
                                     answer in input register 12)
holding register       100-126  r    input registers 0-26 again (PLCs that read only holding
                                     registers); a write: exception 2
=====================  =======  ===  ==========================================================

Any other address (read or write) gets exception 2 (illegal address); a request for another unit
id gets exception 11 (gateway target failed to respond); a frame pymodbus cannot decode gets
exception 1. None of these touch the station: it keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from station.plant.handshake import PlcHandshake
from station.plant.modbus_map import MIRROR, N_COILS, N_INPUTS, N_REGS, RECIPE_SELECT, RegisterMap

log = logging.getLogger(__name__)


class ModbusStartError(OSError):
    """The server could not listen (address in use, not this machine's); one line."""


def _pack(bits: list[bool]) -> int:
    return sum(1 << i for i, bit in enumerate(bits) if bit)


class ModbusServer:
    """``start()`` listens (or raises :class:`ModbusStartError`); ``stop()`` closes every
    connection and ends the thread. ``port`` is the port listened on (0 asks for a free one)."""

    def __init__(self, plc: PlcHandshake, host: str = "127.0.0.1", port: int = 5020,
                 unit: int = 1) -> None:
        self.plc = plc
        self.map = RegisterMap(plc)
        self.host, self.port, self.unit = host, port, unit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped: asyncio.Event | None = None

    @classmethod
    def from_recipe(cls, plc: PlcHandshake, recipe: Any) -> ModbusServer:
        m = recipe.modbus
        return cls(plc, m.host, m.port, m.unit)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the devices ----------------------------------------------------------------------
    def _devices(self) -> list[SimDevice]:
        def bits(n: int) -> list[SimData]:
            return [SimData(0, count=n, values=False, datatype=DataType.BITS)]

        holding = [SimData(RECIPE_SELECT, values=0, datatype=DataType.REGISTERS),
                   SimData(MIRROR, count=N_REGS, values=0, datatype=DataType.REGISTERS,
                           readonly=True)]
        layout = (bits(N_COILS), bits(N_INPUTS), holding,
                  [SimData(0, count=N_REGS, values=0, datatype=DataType.REGISTERS)])
        return [SimDevice(self.unit, simdata=layout, action=self._action),
                # id 0 = any other unit id: refused, never answered as if it were us
                SimDevice(0, simdata=layout, action=self._other_unit)]

    async def _other_unit(self, *_args: Any) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def _action(self, fc: int, start: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None
                      ) -> ExcCodes | None:
        """Every request: writes go to the map (which may refuse), reads are filled in."""
        try:
            if values is not None:
                return self._write(fc, address, list(values))
            self._fill(fc, start, address, count, registers)
            return None
        except Exception:  # never let a request take the server down
            log.exception("Modbus request fc %d at %d failed", fc, address)
            return ExcCodes.DEVICE_FAILURE

    def _write(self, fc: int, address: int, values: list) -> ExcCodes | None:
        if fc in (5, 15):
            refusal = self.map.write_coils(address, [bool(v) for v in values])
        else:
            refusal = self.map.write_registers(address, [int(v) for v in values])
        return None if refusal is None else ExcCodes(int(refusal))

    def _fill(self, fc: int, start: int, address: int, count: int,
              registers: list[int]) -> None:
        if fc in (1, 2):  # bits: the whole (one-register) block, packed bit 0 first
            registers[0] = _pack(self.map.coils() if fc == 1 else self.map.inputs())
            return
        table = dict(enumerate(self.map.registers())) if fc == 4 else self.map.holding()
        for i in range(count):
            registers[address - start + i] = table.get(address + i, 0)

    # -- the thread -----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="modbus-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ModbusStartError(f"modbus.port = {self.port}: the server on {self.address} "
                                   f"did not start in {timeout:.0f} s")
        if self._error is not None:
            self._thread.join(5.0)
            self._thread = None
            raise ModbusStartError(f"modbus.port = {self.port}: cannot listen on {self.address}"
                                   f" ({self._error})")
        log.info("Modbus TCP server on %s, unit %d", self.address, self.unit)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            server = ModbusTcpServer(self._devices(), address=(self.host, self.port))
            await server.serve_forever(background=True)
        except Exception as exc:  # address in use, no such interface
            self._error = exc if not isinstance(exc, RuntimeError) else OSError(
                "address in use or not an address of this machine")
            self._ready.set()
            return
        self._server = server
        transport: Any = server.transport
        with contextlib.suppress(Exception):
            self.port = int(transport.sockets[0].getsockname()[1])
        self._ready.set()
        await self._stopped.wait()
        await server.shutdown()
        await asyncio.sleep(0)  # let the closed connections' callbacks run

    def stop(self) -> None:
        """Close the port and every connection; the thread ends (safe to call twice)."""
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None:
            return
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        thread.join(10.0)
        if thread.is_alive():
            log.error("Modbus server thread did not stop")
        self._thread = None
