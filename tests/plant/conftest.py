"""A real Mosquitto broker for the plant tests, and a real paho subscriber.

Fixtures (any test under tests/plant can use them):

- ``mosquitto``: a started broker (``station.plant.mosquitto.Mosquitto``) on a free
  127.0.0.1 port, anonymous, no persistence, config and log in ``tmp_path``. Its ``url``
  is ``mqtt://127.0.0.1:<port>``; ``kill()`` (SIGKILL), ``start()`` / ``restart()`` on the
  same port. Stopped at the end of the test. Skipped, saying why, only when mosquitto is
  not installed (``.ci/run`` installs it).
- ``subscriber``: ``subscriber(url, topic="station/#", persistent=False, username=None,
  password=None)`` connects a
  :class:`Subscriber` that records every message (topic, JSON payload, retain flag) and
  reconnects by itself; closed at the end of the test.

    def test_x(mosquitto, subscriber):
        sub = subscriber(mosquitto.url)
        ...  # publish
        assert sub.wait_for(lambda msgs: len(msgs) >= 3, 20.0)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from station.config import mqtt_endpoint
from station.plant.mosquitto import Mosquitto, find_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real broker on a free loopback port (see the module docstring)."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: Any  # the decoded JSON (or the raw text if it is not JSON)
    retain: bool
    t: float  # monotonic time of arrival


class Subscriber:
    """A paho client subscribed to ``topic`` (QoS 1) that keeps every message it gets.

    ``persistent=True`` keeps its session on the broker (clean_session false): QoS 1
    messages published while it is away wait for it (needs a broker with persistence to
    survive a broker restart)."""

    def __init__(self, url: str, topic: str = "station/#", persistent: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        _, host, port = mqtt_endpoint(url)
        self.topic = topic
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect_async(host, port, keepalive=5)
        self.client.loop_start()
        if not self.connected.wait(20.0):
            raise RuntimeError(f"test subscriber could not connect to {url}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    props: Any) -> None:
        done = threading.Event()
        client.on_subscribe = lambda *a: done.set()
        client.subscribe(self.topic, qos=1)
        threading.Thread(target=lambda: done.wait(10.0) and self.connected.set(),
                         daemon=True).start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload.decode(errors="replace")
        with self._cond:
            self.messages.append(Message(msg.topic, payload, bool(msg.retain), time.monotonic()))
            self._cond.notify_all()

    def of(self, kind: str) -> list[Message]:
        """Messages on topics ending in ``/<kind>`` (result, status, alarm), in arrival order."""
        with self._cond:
            return [m for m in self.messages if m.topic.endswith("/" + kind)]

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float) -> bool:
        """Wait until ``predicate(all messages so far)`` holds (True) or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.messages)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber() -> Iterator[Callable[..., Subscriber]]:
    """``subscriber(url, topic, persistent, username, password)``: a connected Subscriber."""
    made: list[Subscriber] = []

    def make(url: str, topic: str = "station/#", persistent: bool = False,
             username: str | None = None, password: str | None = None) -> Subscriber:
        sub = Subscriber(url, topic, persistent, username, password)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()
