"""The fleet view's MQTT subscriber: a :class:`FleetModel` fed from a broker by paho-mqtt.

paho runs its own network thread and reconnects by itself; this module turns what it
reports into :class:`BrokerState` events (connected, or "unreachable, retrying" with the
reason in words) and never lets a message or a listener end that thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from station.config import MqttSection, mqtt_endpoint
from station.plant.fleet import FleetModel
from station.plant.mqtt import MqttConfigError, read_password

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerState:
    connected: bool
    text: str  # "connected to mqtt://...", "broker mqtt://... unreachable, retrying (...)"


class FleetClient:
    """Subscribes ``model`` to the broker of ``options`` (a station's [mqtt] keys: url,
    username, password_file, ca_file, cert_file, key_file, keepalive_s) with paho-mqtt's
    own network thread; it reconnects by itself, and the stations' silence is checked twice
    a second. ``start()`` never blocks on the network; a broker that cannot be reached is a
    :class:`BrokerState` event. A password file or TLS file that cannot be used is a
    ``MqttConfigError`` (one line) from the constructor."""

    def __init__(self, model: FleetModel, options: MqttSection) -> None:
        self.model = model
        self.options = options
        self.tls, self.host, self.port = mqtt_endpoint(options.url)
        self.state = BrokerState(False, f"connecting to {options.url}")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"station-fleet-{threading.get_native_id()}-{id(self):x}",
                             clean_session=True)
        if options.username:
            password = read_password(options.password_file) if options.password_file else None
            client.username_pw_set(options.username, password)
        if self.tls:
            try:
                client.tls_set(ca_certs=options.ca_file or None,
                               certfile=options.cert_file or None,
                               keyfile=options.key_file or None)
            except (OSError, ValueError) as exc:
                raise MqttConfigError(f"TLS files {options.ca_file or options.cert_file!r}: "
                                      f"expected PEM certificates TLS can load ({exc})") from None
        client.reconnect_delay_set(1, 8)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.options.keepalive_s)
        self.client.loop_start()
        self._ticker = threading.Thread(target=self._tick, name="fleet-silence", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.model.check_silence()
            except Exception:  # a listener's fault: logged, the ticker keeps going
                log.exception("fleet: silence check failed")

    def _set(self, state: BrokerState) -> None:
        if state != self.state:
            self.state = state
            self.model.events.broker.emit(state)

    def _unreachable(self, why: str) -> None:
        self._set(BrokerState(False, f"broker {self.options.url} unreachable, retrying ({why})"))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if reason.is_failure:
            self._unreachable(f"refused: {reason}")
            return
        for topic in self.model.topics():
            client.subscribe(topic, qos=1)
        self._set(BrokerState(True, f"connected to {self.options.url}"))

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._unreachable(self._probe())

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        if not self._stop.is_set() and self.state.connected:  # else: a refusal, said already
            self._unreachable(f"connection lost: {reason}")

    def _probe(self) -> str:
        """Why a connection fails, in words (paho does not say): one short TCP attempt,
        and the TLS handshake with the same files on an mqtts:// broker."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                if self.tls:
                    o = self.options
                    context = ssl.create_default_context(cafile=o.ca_file or None)
                    if o.cert_file:
                        context.load_cert_chain(o.cert_file, o.key_file or None)
                    with context.wrap_socket(sock, server_hostname=self.host):
                        pass
                return "no MQTT answer"
        except ssl.SSLError as exc:
            return f"TLS: {getattr(exc, 'verify_message', None) or exc.reason or exc}"
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self.model.handle(message.topic, message.payload, bool(message.retain))
        except Exception:  # never let one message end paho's network thread
            log.exception("fleet: message on %r not handled", getattr(message, "_topic", b""))
