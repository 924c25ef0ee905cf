"""Trigger -> ResultValid over OPC UA, as a PLC sees it: the client side of the handshake.

:class:`OpcUaPlc` is a real asyncua client doing what a PLC program does: wait for Ready, call
``Trigger``, wait for ``ResultValid``, read the result, write ``ResultAck``. It follows the
state with a subscription (publishing interval ``PUBLISH_MS``: 1 ms, a fast PLC) rather than
polling, so what :func:`measure_opcua_latency` reports is the station's latency plus one loopback
round trip and at most one publishing interval. ``station bench`` runs
:func:`measure_opcua_latency` beside :func:`station.plant.latency.measure_modbus_latency`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asyncua import Client, ua

from station.config import Recipe
from station.plant.handshake import PlcHandshake
from station.plant.host import StationHost
from station.plant.latency import LatencyReport, plc_recipe, report
from station.plant.opcua_nodes import NAMESPACE, node_id

WATCHED = ("StateCode", "ResultValid", "Result.Sequence")
READY = 1
# The subscription's publishing interval, ms. (0 = "publish each change at
# once" has no keep-alive, so asyncua's client takes an idle subscription for stale and
# recreates it every second, losing changes meanwhile.)
PUBLISH_MS = 1.0


class _Watch:
    """asyncua's subscription handler: the latest value of each watched node."""

    def __init__(self, names: dict[ua.NodeId, str]) -> None:
        self.names = names
        self.values: dict[str, Any] = {}
        self.stamps: dict[str, float] = {}
        self.event = asyncio.Event()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        name = self.names.get(node.nodeid)
        if name is not None:
            self.values[name] = val
            self.stamps[name] = time.perf_counter()
            self.event.set()


class OpcUaPlc:
    """A PLC on the station's OPC UA server (``async with OpcUaPlc(url) as plc``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, client: Client | None = None
                 ) -> None:
        self.client = client or Client(url, timeout=timeout)
        self.timeout = timeout
        self.idx = 0
        self._watch: _Watch | None = None
        self._subscription: Any = None

    async def __aenter__(self) -> OpcUaPlc:
        await self.client.connect()
        try:
            self.idx = await self.client.get_namespace_index(NAMESPACE)
            names = {node_id(self.idx, name): name for name in WATCHED}
            self._watch = _Watch(names)
            self._subscription = await self.client.create_subscription(PUBLISH_MS, self._watch)
            await self._subscription.subscribe_data_change([self.node(n) for n in WATCHED])
        except BaseException:
            await self.client.disconnect()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    def node(self, path: str) -> Any:
        return self.client.get_node(node_id(self.idx, path))

    @property
    def station(self) -> Any:
        return self.client.get_node(node_id(self.idx, ""))

    async def read(self, path: str) -> Any:
        return await self.node(path).read_value()

    async def call(self, method: str, *args: Any) -> Any:
        return await self.station.call_method(node_id(self.idx, method), *args)

    async def wait(self, name: str, predicate: Any, timeout: float | None = None) -> Any:
        """Wait until the subscribed ``name`` satisfies ``predicate``; its value."""
        watch = self._watch
        assert watch is not None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            watch.event.clear()
            if name in watch.values and predicate(watch.values[name]):
                return watch.values[name]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"OPC UA {name} = {watch.values.get(name)!r} after "
                                   f"{self.timeout if timeout is None else timeout:.0f} s")
            try:
                await asyncio.wait_for(watch.event.wait(), remaining)
            except TimeoutError:
                continue

    def stamp(self, name: str) -> float:
        """perf_counter() when ``name``'s latest change arrived."""
        assert self._watch is not None
        return self._watch.stamps.get(name, 0.0)

    async def read_result(self) -> dict[str, Any]:
        """Every ``Result.*`` variable, by its short name."""
        names = ("Sequence", "PartId", "Verdict", "ResultCode", "AutoencoderScore",
                 "ClassifierScore", "Reason", "Time", "LatencyMs", "ModelVersions")
        values = await self.client.read_values([self.node(f"Result.{n}") for n in names])
        return dict(zip(names, values, strict=True))

    async def acknowledge(self) -> None:
        await self.node("ResultAck").write_value(ua.Variant(True, ua.VariantType.Boolean))

    async def cycle(self) -> tuple[dict[str, Any], float]:
        """One part: Ready -> Trigger -> ResultValid -> read -> ResultAck. Returns the result
        and the trigger -> ResultValid time in ms (call sent to notification received);
        :class:`TriggerRefused` when the station says no."""
        await self.wait("StateCode", lambda v: v == READY)
        await self.wait("ResultValid", lambda v: v is False)
        t0 = time.perf_counter()
        ok, part_id, reason = await self.call("Trigger")
        if not ok:
            raise TriggerRefused(reason)
        await self.wait("ResultValid", lambda v: v is True)
        latency_ms = (self.stamp("ResultValid") - t0) * 1000.0
        result = await self.read_result()
        if result["PartId"] != part_id:
            raise RuntimeError(f"Trigger gave part {part_id}, ResultValid shows {result['PartId']}")
        await self.acknowledge()
        return result, latency_ms


class TriggerRefused(RuntimeError):
    """The station refused a Trigger (its reason)."""


async def _cycles(url: str, parts: int, warmup: int, timeout_s: float
                  ) -> tuple[list[float], int]:
    latencies: list[float] = []
    refused = 0
    async with OpcUaPlc(url, timeout=timeout_s) as plc:
        for i in range(warmup + parts):
            try:
                _result, latency_ms = await plc.cycle()
            except TriggerRefused:
                refused += 1
                continue
            if i >= warmup:
                latencies.append(latency_ms)
        await plc.wait("ResultValid", lambda v: v is False)
    return latencies, refused


def measure_opcua_latency(recipe: Recipe, parts: int = 100, *, warmup: int = 3,
                          timeout_s: float = 30.0) -> LatencyReport:
    """Run ``recipe`` PLC-triggered with the OPC UA server on a free loopback port and an
    asyncua client as the PLC; ``parts`` Trigger/ResultValid/ResultAck cycles after
    ``warmup`` (as :func:`station.plant.latency.measure_modbus_latency` does over Modbus)."""
    from station.plant.opcua_server import OpcUaServer

    recipe = plc_recipe(recipe, opcua={"enabled": True, "security": "none", "username": "",
                                       "password_hash": "",
                                       "endpoint": "opc.tcp://127.0.0.1:0/station"})
    host = StationHost(recipe)
    plc = PlcHandshake(host)
    server = OpcUaServer(plc)
    try:
        server.start()
        host.start()
        latencies, refused = asyncio.run(_cycles(server.url, parts, warmup, timeout_s))
        return report("opcua", latencies, refused, host.engine)
    finally:
        server.stop()
        plc.close()
        host.close()
