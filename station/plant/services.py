"""The PLC servers a recipe enables, around one :class:`StationHost`: started and stopped
together (``station run --headless``, ``station demo --headless``, the latency bench).

The servers are the station's address on the plant network, so they follow the recipe the
station started with (or the command line's ``--modbus`` / ``--opcua``); a changeover keeps
them as they are. The OPC UA server (:mod:`station.plant.opcua_server`) is started here too.
"""

from __future__ import annotations

import logging
from typing import Protocol

from station.plant.handshake import PlcHandshake
from station.plant.host import StationHost
from station.plant.modbus_server import ModbusServer
from station.plant.opcua_server import OpcUaServer

log = logging.getLogger(__name__)


class PlantServer(Protocol):
    """What a PLC server offers its owner: ``start`` (raises OSError with one line) and
    ``stop``, and where it listens."""

    @property
    def address(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class PlantServices:
    """``start()`` the enabled servers (none when the recipe enables none); ``stop()`` them."""

    def __init__(self, host: StationHost) -> None:
        self.host = host
        # The handshake latches results for a PLC to acknowledge: only where a PLC is served
        # (without one, nobody would ever acknowledge and its queue would only overflow).
        recipe = host.recipe
        self.plc: PlcHandshake | None = (PlcHandshake(host) if recipe.modbus.enabled
                                         or recipe.opcua.enabled else None)
        self.servers: list[PlantServer] = []

    def start(self) -> None:
        """Start each enabled server; on a failure those already started are stopped."""
        recipe = self.host.recipe
        if self.plc is None:
            return
        try:
            if recipe.modbus.enabled:
                modbus = ModbusServer.from_recipe(self.plc, recipe)
                modbus.start()
                self.servers.append(modbus)
            if recipe.opcua.enabled:
                opcua = OpcUaServer.from_recipe(self.plc, recipe)
                opcua.start()
                self.servers.append(opcua)
        except OSError:
            self.stop()
            raise

    def describe(self) -> list[str]:
        """One line per server, for the terminal."""
        return [f"{type(s).__name__.removesuffix('Server').lower()} on {s.address}"
                for s in self.servers]

    def stop(self) -> None:
        """Stop every server (clients are disconnected), then the handshake."""
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:
                log.exception("stopping %s failed", type(server).__name__)
        self.servers.clear()
        if self.plc is not None:
            self.plc.close()
