"""``station bench``'s MQTT numbers, through a real broker and the real publisher.

Two measurements, both with the on-disk outbox and QoS 1 as on the line:

- throughput: result messages queued as fast as possible, counted until the broker has
  acknowledged the last one (messages/s);
- latency: result messages at a line's pace (``rate_hz``), each from its verdict to the
  broker's PUBACK (p50/p99 ms) — the issue's "published <= 20 ms p99 after its verdict".
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from station.config import DecisionSection, MqttSection
from station.decision import PASS, REJECT
from station.pipeline.inspector import PartResult
from station.pipeline.stats import percentile
from station.plant.mosquitto import Mosquitto
from station.plant.mqtt import MqttPublisher

MODEL_VERSIONS = {"autoencoder": "autoencoder.onnx@bench", "classifier": "classifier.onnx@bench"}


@dataclass(frozen=True)
class MqttBench:
    """What ``station bench`` prints for MQTT."""

    messages: int
    messages_per_s: float
    latency_messages: int
    rate_hz: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    url: str


def _part(i: int) -> PartResult:
    """A result as the inspector makes it (the models' cost is not what is measured)."""
    return PartResult(part_id=f"{i:06d}", verdict=REJECT if i % 7 == 0 else PASS,
                      ae_score=0.4 + (i % 10) / 10, ae_raw=0.01 * (i % 10),
                      cls_score=0.3, cls_raw=0.15, latency_ms=0.0, t_trigger=time.monotonic())


def _wait(publisher: MqttPublisher, acknowledged: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while publisher.acknowledged < acknowledged:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _queue(publisher: MqttPublisher, i: int) -> None:
    publisher.enqueue_result(_part(i), recipe="bench", product="bench part",
                             model_versions=MODEL_VERSIONS, decision=DecisionSection())


def bench_publisher(url: str, folder: str | Path, *, messages: int = 2000,
                    latency_messages: int = 300, rate_hz: float = 50.0,
                    timeout: float = 120.0) -> MqttBench:
    """Measure through the broker at ``url`` (outbox in ``folder``)."""
    section = MqttSection(enabled=True, url=url, station="bench", plant="bench", line="bench",
                          buffer_dir=str(folder), buffer_max_messages=max(10, 2 * messages))
    publisher = MqttPublisher(section).start()
    try:
        deadline = time.monotonic() + 20.0
        while not publisher.connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench: no MQTT broker answers at {url}")
            time.sleep(0.01)
        for i in range(20):  # warm-up: the first messages pay for page faults and imports
            _queue(publisher, i)
        _wait(publisher, 20, timeout)
        t0 = time.monotonic()
        for i in range(messages):
            _queue(publisher, i)
        if not _wait(publisher, 20 + messages, timeout):
            raise RuntimeError(f"bench: the broker acknowledged {publisher.acknowledged - 20} "
                               f"of {messages} messages in {timeout:.0f} s")
        rate = messages / max(time.monotonic() - t0, 1e-9)
        publisher.latencies_ms.clear()
        period = 1.0 / rate_hz
        start = time.monotonic()
        for i in range(latency_messages):
            wake = start + i * period
            time.sleep(max(0.0, wake - time.monotonic()))
            _queue(publisher, i)
        _wait(publisher, 20 + messages + latency_messages, timeout)
        lat = sorted(publisher.latencies_ms)
    finally:
        publisher.close(flush_s=1.0)
    return MqttBench(messages, rate, len(lat), rate_hz, percentile(lat, 0.5),
                     percentile(lat, 0.99), lat[-1] if lat else 0.0, url)


def bench_mqtt(url: str | None = None, *, messages: int = 2000, latency_messages: int = 300,
               rate_hz: float = 50.0) -> MqttBench:
    """The MQTT bench: through ``url``, or through a local Mosquitto started for it (the
    broker binary must be installed then)."""
    with tempfile.TemporaryDirectory(prefix="station-mqtt-bench-") as tmp:
        if url is not None:
            return bench_publisher(url, Path(tmp) / "outbox", messages=messages,
                                   latency_messages=latency_messages, rate_hz=rate_hz)
        with Mosquitto(Path(tmp) / "broker") as broker:
            return bench_publisher(broker.url, Path(tmp) / "outbox", messages=messages,
                                   latency_messages=latency_messages, rate_hz=rate_hz)
