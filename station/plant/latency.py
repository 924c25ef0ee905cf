"""Trigger -> ResultValid latency as the PLC sees it, for ``station bench``.

A real client on loopback plays the PLC: wait for Ready, set Trigger, poll ResultValid as fast
as the protocol answers, acknowledge. The time from sending the Trigger to reading
ResultValid = 1 covers the protocol both ways, the trigger, the inspection (crop, models,
decision) and the result latch; loopback adds little, a plant network adds its own round trip.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from station.config import Recipe
from station.pipeline import Engine
from station.pipeline.stats import percentile
from station.plant.handshake import PlcHandshake
from station.plant.host import StationHost
from station.plant.modbus_map import Coil, Input
from station.plant.modbus_server import ModbusServer


@dataclass(frozen=True)
class LatencyReport:
    """Trigger -> ResultValid over one protocol: ``parts`` measured, p50/p99/max in ms."""

    protocol: str
    parts: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    refused: int = 0  # triggers refused (not Ready when expected): should stay 0
    verdict_p50_ms: float = 0.0  # the engine's own trigger -> verdict, for the same run:
    verdict_p99_ms: float = 0.0  # the rest is the protocol and the result latch

    def line(self) -> str:
        return (f"{self.protocol}: trigger -> result-valid over {self.parts} parts: p50 "
                f"{self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms "
                f"(the engine's trigger -> verdict: p50 {self.verdict_p50_ms:.1f} ms, p99 "
                f"{self.verdict_p99_ms:.1f} ms)"
                + (f", {self.refused} triggers refused" if self.refused else ""))


def report(protocol: str, latencies_ms: list[float], refused: int = 0,
           engine: Engine | None = None) -> LatencyReport:
    """The report of one run; ``engine``: the engine it ran on, for its own latency."""
    values = sorted(latencies_ms)
    stats = engine.stats() if engine is not None else None
    return LatencyReport(protocol, len(values), percentile(values, 0.5),
                         percentile(values, 0.99), values[-1] if values else 0.0, refused,
                         stats.latency_p50_ms if stats else 0.0,
                         stats.latency_p99_ms if stats else 0.0)


def plc_recipe(recipe: Recipe, **section: object) -> Recipe:
    """The recipe triggered by the PLC (``trigger.mode = "plc"``, no debounce), reject output
    off, with ``section`` changes to the ``[modbus]``/``[opcua]`` it is measured over."""
    name, values = next(iter(section.items()))
    return dataclasses.replace(
        recipe, trigger=dataclasses.replace(recipe.trigger, mode="plc", debounce_ms=0.0),
        reject=dataclasses.replace(recipe.reject, enabled=False),
        **{name: dataclasses.replace(getattr(recipe, name), **values)})  # type: ignore[arg-type]


def measure_modbus_latency(recipe: Recipe, parts: int = 100, *, warmup: int = 3,
                           timeout_s: float = 30.0) -> LatencyReport:
    """Run ``recipe`` PLC-triggered with a Modbus server on a free loopback port and a
    pymodbus client as the PLC; ``parts`` trigger/result/ack cycles after ``warmup``."""
    from pymodbus.client import ModbusTcpClient

    recipe = plc_recipe(recipe, modbus={"enabled": True, "host": "127.0.0.1"})
    host = StationHost(recipe)
    plc = PlcHandshake(host)
    server = ModbusServer(plc, "127.0.0.1", 0, recipe.modbus.unit)
    client = None
    unit = recipe.modbus.unit
    latencies: list[float] = []
    refused = 0
    try:
        server.start()
        client = ModbusTcpClient("127.0.0.1", port=server.port, timeout=timeout_s)
        if not client.connect():
            raise OSError(f"bench: cannot connect to the Modbus server on {server.address}")
        host.start()

        def bits() -> list[bool]:
            rr = client.read_discrete_inputs(0, count=len(Input), device_id=unit)
            if rr.isError():
                raise OSError(f"bench: Modbus read refused: {rr}")
            return list(rr.bits)

        def until(index: Input, level: bool) -> None:
            end = time.monotonic() + timeout_s
            while bits()[index] != level:
                if time.monotonic() > end:
                    raise TimeoutError(f"bench: {index.name} not {int(level)} within "
                                       f"{timeout_s:.0f} s ({plc.state_and_why()[1]})")

        for i in range(warmup + parts):
            until(Input.READY, True)
            t0 = time.perf_counter()
            if client.write_coil(Coil.TRIGGER, True, device_id=unit).isError():
                refused += 1
                continue
            until(Input.RESULT_VALID, True)
            if i >= warmup:
                latencies.append((time.perf_counter() - t0) * 1000.0)
            client.write_coil(Coil.RESULT_ACK, True, device_id=unit)
            until(Input.RESULT_VALID, False)
            client.write_coil(Coil.RESULT_ACK, False, device_id=unit)
        result = report("modbus", latencies, refused, host.engine)
    finally:
        if client is not None:
            client.close()
        server.stop()
        plc.close()
        host.close()
    return result
