"""The PLC servers a recipe enables, around one :class:`StationHost`: started and stopped
together (``station run --headless``, ``station demo --headless``, the latency bench).

The servers are the station's address on the plant network, so they follow the recipe the
station started with (or the command line's ``--modbus`` / ``--opcua``); a changeover keeps
them as they are. The OPC UA server (:mod:`station.plant.opcua_server`) is started here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from station.config import Recipe
from station.plant.handshake import PlcHandshake
from station.plant.host import StationHost
from station.plant.modbus_server import ModbusServer
from station.plant.opcua_server import OpcUaServer

log = logging.getLogger(__name__)


class ServerStartError(Exception):
    """A PLC server could not start (a port in use, a bad endpoint); the message is one line
    in the recipe's terms. Not an OSError, so it is never taken for another start-up fault."""


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


def open_station(recipe: Recipe, adjust: Callable[[Recipe], Recipe] | None = None,
                 mqtt: str | None = None) -> tuple[StationHost, PlantServices, Any]:
    """The station as the window and ``--headless`` both run it: the host (its engine
    built), the PLC servers the recipe enables (started) and the MQTT publisher (the recipe's
    [mqtt], ``mqtt`` overriding it; None when off) following the host's engine across
    changeovers. Raises a start-up fault (``station.pipeline.startup.startup_errors``) or
    :class:`ServerStartError`, with nothing left running."""
    from station.plant.mqtt import open_publisher

    host = StationHost(recipe, adjust=adjust)
    try:
        publisher = open_publisher(recipe, mqtt)
    except Exception:
        host.close()
        raise
    services = PlantServices(host)
    try:
        services.start()
    except OSError as exc:
        host.close()
        if publisher is not None:
            publisher.close()
        raise ServerStartError(str(exc)) from exc
    if publisher is not None:
        publisher.attach(host.engine)
        host.engine_changed.connect(publisher.attach)  # a changeover, the window's or a PLC's
    return host, services, publisher


@dataclass(frozen=True)
class LinkSummary:
    """The plant links as the window's status bar shows them: a short ``text``, the
    ``detail`` on hover, and ``fault`` when someone should look (a PLC that has stopped
    acknowledging results, a broker that is down)."""

    text: str
    detail: str
    fault: bool


def link_summary(services: PlantServices | None, publisher: Any = None) -> LinkSummary | None:
    """What the station serves the plant and how each link is doing; None when it serves
    nothing (no PLC server, no MQTT).

    >>> link_summary(None, None) is None
    True
    """
    texts: list[str] = []
    details: list[str] = []
    fault = False
    plc = services.plc if services is not None and services.servers else None
    if plc is not None and services is not None:
        state, why = plc.state_and_why()
        waiting = plc.results_waiting
        # one or none waiting is a PLC keeping up; more is the figure to watch
        texts.append(f"PLC {waiting} unacked" if waiting > 1 else f"PLC {state.name.lower()}")
        details += [f"serving the PLC: {line}" for line in services.describe()]
        details.append(f"PLC state {state.name.title()}" + (f" ({why})" if why else ""))
        details.append(f"results waiting for the PLC's acknowledgement: {waiting} of "
                       f"{plc.queue_size}; acknowledged {plc.acknowledged}; dropped "
                       f"unacknowledged {plc.overruns}")
        if plc.triggers_refused:
            details.append(f"PLC triggers refused: {plc.triggers_refused} (last: "
                           f"{plc.last_refusal})")
        fault = waiting >= plc.queue_size or plc.overruns > 0
    if publisher is not None:
        down = publisher.down_reason
        backlog = publisher.backlog
        texts.append("MQTT down" if down else "MQTT up")
        details.append(f"MQTT {publisher.section.url}: " + (down or "connected")
                       + f"; {backlog} message(s) not yet acknowledged by the broker")
        fault = fault or bool(down)
    if not texts:
        return None
    return LinkSummary(" · ".join(texts), "\n".join(details), fault)
