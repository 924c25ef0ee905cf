"""``station bench`` on the plant network: trigger -> result-valid over Modbus TCP and OPC UA
with a real client as the PLC, and results on MQTT (messages/s, verdict -> PUBACK) through
a local Mosquitto. Each figure runs the bench's own models on the demo line."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any


def with_models(recipe: Any, model_dir: Path, records_dir: Path) -> Any:
    """The recipe running the bench's model files (absolute paths), its records in
    ``records_dir`` (never the line's own database, which a running station holds)."""
    models = replace(recipe.models, autoencoder=str((model_dir / "autoencoder.onnx").resolve()),
                     classifier=str((model_dir / "classifier.onnx").resolve()))
    records = replace(recipe.records, database=str(records_dir / "bench.sqlite"),
                      images_dir=str(records_dir / "images"))
    return replace(recipe, models=models, records=records)


def bench_plant(recipe: Any, model_dir: Path, parts: int, line_seconds: float = 30.0
                ) -> dict[str, Any]:
    """PLC latencies over ``parts`` parts each, MQTT rate and the line's publish latency;
    a protocol that cannot run here (no broker binary) is reported with the reason."""
    with tempfile.TemporaryDirectory(prefix="station-plant-bench-") as tmp:
        return _bench(with_models(recipe, model_dir, Path(tmp)), parts, line_seconds)


def _bench(recipe: Any, parts: int, line_seconds: float) -> dict[str, Any]:
    from station.plant.latency import measure_modbus_latency
    from station.plant.mosquitto import find_mosquitto
    from station.plant.mqtt_bench import bench_line, bench_mqtt
    from station.plant.opcua_latency import measure_opcua_latency

    out: dict[str, Any] = {}
    for name, measure in (("modbus", measure_modbus_latency), ("opcua", measure_opcua_latency)):
        rep = measure(recipe, parts)
        out[f"{name}_trigger_to_result_valid"] = asdict(rep)
        print(rep.line(), flush=True)
    if find_mosquitto() is None:
        out["mqtt"] = {"skipped": "no mosquitto broker installed (apt-get install mosquitto)"}
        return out
    rate = bench_mqtt(messages=max(200, 20 * parts), latency_messages=max(50, 3 * parts))
    line = bench_line(recipe, line_seconds)
    out["mqtt"] = {"publisher": asdict(rate), "line": asdict(line)}
    print(f"mqtt: {rate.messages_per_s:.0f} messages/s; on the line, verdict -> published "
          f"(PUBACK) over {line.parts} parts: p50 {line.p50_ms:.1f} ms, p99 {line.p99_ms:.1f} ms",
          flush=True)
    return out
