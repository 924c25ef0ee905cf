"""Results, status and alarms on MQTT (paho-mqtt 2), never holding up the line.

The engine's event handlers only build a dict and append it to an in-memory queue (the
inspection thread never waits for a disk or a network); results are numbered (``seq``) there,
so one lost on the way leaves a gap. The publisher's own thread stores the messages in the
on-disk :class:`~station.plant.outbox.Outbox`, publishes them in order with QoS 1 (at most
:data:`WINDOW` unacknowledged; :class:`~station.plant.mqtt_link.MqttLink` drives paho from
this thread) and deletes each from the outbox once the broker acknowledged it (PUBACK).
While the broker is away the messages wait on disk (bounded: the oldest results go first,
counted), an ``mqtt`` alarm is raised, and when the broker is back the unacknowledged ones
are sent again first, then the backlog follows in order. QoS 1 is "at least once": a message
sent just before a broker died can arrive twice, with the same ``seq``, which is how a
subscriber drops it.

The status is retained and sent on every change and every ``status_interval_s``; the last
will (retained, same topic) says ``"online": false`` when the station dies, and a clean
:meth:`MqttPublisher.close` says it too. ``attach(engine)`` / ``detach()`` follow a recipe
changeover: one connection, one outbox, one ``seq`` for the station's whole run.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from station.config import MqttSection, mqtt_endpoint, mqtt_url_problem
from station.pipeline.alarms import ALARM_MQTT, Alarm
from station.pipeline.inspector import PartResult
from station.plant.mqtt_link import MqttLink
from station.plant.outbox import Outbox
from station.plant.payloads import (
    Identity,
    alarm_payload,
    encode,
    offline_payload,
    result_payload,
    status_payload,
)

log = logging.getLogger(__name__)

WINDOW = 16  # messages handed to paho and not yet acknowledged, at most
DOWN_GRACE_S = 2.0  # the broker unreachable this long raises the alarm (a blip does not)
GOODBYE_S = 2.0  # how long a closing publisher waits for the broker to take "online": false
MAX_PASSWORD_BYTES = 4096
Times = tuple[float, float] | None  # a result's verdict and queueing moments (monotonic)


class MqttConfigError(ValueError):
    """A [mqtt] setting that cannot be used at start-up, as ``mqtt.<key> = value: ...``."""


def mqtt_section(recipe: Any, url: str | None = None) -> MqttSection | None:
    """The recipe's [mqtt], with ``url`` (the ``--mqtt`` flag) overriding and enabling it;
    None when MQTT is off. A bad ``url`` is refused with the recipe's 'expected' text."""
    section: MqttSection = recipe.mqtt
    if url is not None:
        problem = mqtt_url_problem(url)
        if problem:
            raise MqttConfigError(f"--mqtt {url!r}: expected {problem}")
        section = replace(section, enabled=True, url=url)
    if not section.buffer_dir:  # beside the records, not in the recipe's (or the repo's) folder
        section = replace(section, buffer_dir=str(Path(recipe.records.database).parent
                                                  / "mqtt-outbox"))
    return section if section.enabled else None


def read_password(path: str) -> str:
    """The first line of ``mqtt.password_file`` (refused: missing, huge, empty)."""
    shown = f"mqtt.password_file = {path!r}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise MqttConfigError(f"{shown}: expected a readable file ({exc.strerror})") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise MqttConfigError(f"{shown}: expected a file holding only the password "
                              f"(at most {MAX_PASSWORD_BYTES} bytes)")
    try:
        text = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise MqttConfigError(f"{shown}: expected UTF-8 text") from None
    if not text or not text[0].strip():
        raise MqttConfigError(f"{shown}: expected the password on the file's first line "
                              "(it is empty)")
    return text[0].strip()


def identity(section: MqttSection) -> Identity:
    """The topic levels; ``station = ""`` is this computer's host name (made topic-safe)."""
    station = section.station or "".join(
        ch if ch.isalnum() or ch in "-_." else "_" for ch in socket.gethostname()) or "station"
    return Identity(section.topic_root, section.plant, section.line, station)


def make_client(section: MqttSection, ident: Identity) -> paho.Client:
    """A paho client with the last will, TLS and credentials of ``section`` (not connected).

    The client id is the station's topic path, so a restarted station takes over the
    session of the one that died (its will then fires at once, before the new "online")."""
    tls, _, _ = mqtt_endpoint(section.url)
    client_id = f"{ident.topic_root}/{ident.plant}/{ident.line}/{ident.station}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv311, clean_session=True)
    client.will_set(ident.topic("status"), encode(offline_payload(ident)), qos=1, retain=True)
    client.max_inflight_messages_set(WINDOW)
    if tls:
        try:
            client.tls_set(ca_certs=section.ca_file or None, certfile=section.cert_file or None,
                           keyfile=section.key_file or None)
        except (OSError, ValueError) as exc:
            key = next((k for k in ("key_file", "cert_file", "ca_file") if getattr(section, k)),
                       "url")
            raise MqttConfigError(f"mqtt.{key} = {getattr(section, key)!r}: expected a PEM "
                                  f"certificate/key TLS can load ({exc})") from None
    if section.username:
        password = read_password(section.password_file) if section.password_file else None
        client.username_pw_set(section.username, password)
    return client


class MqttPublisher:
    """Publishes one engine's parts, alarms and status; ``attach`` the next engine after a
    changeover. ``start()`` connects (in the background: a broker that is down at start-up
    is an alarm, not a refusal); ``close()`` sends what it can and says offline."""

    def __init__(self, section: MqttSection, *, buffer_dir: str | Path | None = None) -> None:
        self.section = section
        self.ident = identity(section)
        _, self._host, self._port = mqtt_endpoint(section.url)
        self._client = make_client(section, self.ident)
        self.outbox = Outbox(buffer_dir or section.buffer_dir or "mqtt-outbox",
                             section.buffer_max_messages)
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, dict[str, Any], Times]] = deque()
        self._acked: list[tuple[int, float]] = []  # (mid, monotonic time of the PUBACK)
        self._inflight: dict[int, tuple[int, Times]] = {}  # mid -> row
        self._sent_up_to = 0  # outbox row ids up to here are with paho
        self._stored_up_to = self.outbox.last_id()  # the newest row in the outbox
        self._seq = self.outbox.last_seq  # results' numbering goes on across restarts
        # outbox row id -> (verdict, queued), monotonic: what the latencies run from
        self._queued_at: dict[int, Times] = {}
        self._connected = False
        self._down_since: float | None = time.monotonic()
        self._down_reason = "not connected yet"
        self._alarmed = False
        self._dropped_seen = self.outbox.dropped
        self._status_due = True
        self._next_status = 0.0
        self._stop = False
        self._engine: Any = None
        self._engine_info: dict[str, Any] = {}
        self.latencies_ms: deque[float] = deque(maxlen=100_000)  # verdict -> PUBACK
        self.own_ms: deque[float] = deque(maxlen=100_000)  # part event -> PUBACK (ours)
        self.acknowledged = 0  # messages the broker acknowledged (results and alarms)
        self.memory_dropped = 0  # results dropped before they reached the outbox
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        c = self._client
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_publish = self._on_publish
        self._link = MqttLink(c, self._host, self._port, section.keepalive_s,
                              max_delay=min(5, section.keepalive_s + 1), on_fail=self._on_fail)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> MqttPublisher:
        """Connect and publish from the publisher's thread (a broker that is down at start-up
        is an alarm later, not a refusal)."""
        self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def down_reason(self) -> str:
        """Why the broker link is down ("" while connected): refused, lost, unreachable."""
        with self._cond:
            return "" if self._connected else self._down_reason

    @property
    def backlog(self) -> int:
        """Messages kept for the broker that it has not acknowledged yet (outbox and memory)."""
        with self._cond:
            return len(self._queue) + max(0, self._stored_up_to - self._sent_up_to) + len(
                self._inflight)

    def close(self, flush_s: float = 3.0) -> None:
        """Detach, send what the broker takes within ``flush_s`` (the rest stays on disk for
        the next start), publish ``"online": false`` and disconnect. Safe to call twice."""
        self.detach()
        deadline = time.monotonic() + flush_s
        with self._cond:
            while (self._connected and (self._queue or self._inflight
                                        or self._stored_up_to > self._sent_up_to)
                   and time.monotonic() < deadline):
                self._cond.wait(0.05)
            self._stop = True
            self._cond.notify_all()
        self._link.wake()
        if self._thread.is_alive():
            self._thread.join(max(1.0, deadline - time.monotonic()) + GOODBYE_S + 1.0)
        else:
            self._link.close()
        self.outbox.close()

    def _goodbye(self) -> None:
        """Publisher thread, stopping: ``"online": false`` (retained), then DISCONNECT."""
        if self._connected:
            info = self._client.publish(self.ident.topic("status"),
                                        encode(offline_payload(self.ident)), qos=1, retain=True)
            deadline = time.monotonic() + GOODBYE_S
            while self._connected and not info.is_published() and time.monotonic() < deadline:
                self._link.poll(0.05)
        self._link.close()

    # -- following an engine -----------------------------------------------------------------
    def attach(self, engine: Any) -> None:
        """Follow ``engine`` (the next one after a changeover): its parts, alarms and state."""
        self.detach()
        ev = engine.events
        ev.part.connect(self.on_part)
        ev.alarm.connect(self.on_alarm)
        ev.alarm_cleared.connect(self.on_alarm_cleared)
        ev.state.connect(self._on_state)
        ev.line.connect(self._on_change)
        recipe = engine.recipe
        info = {"recipe": Path(recipe.path).stem, "product": recipe.product.name,
                "model_versions": dict(engine.inspector.model_versions),
                "state": "running" if engine.running else "stopped"}
        with self._cond:
            self._engine, self._engine_info = engine, info
            self._status_due = True
            self._cond.notify_all()

    def detach(self) -> None:
        """Stop following the current engine (it may be closing)."""
        with self._cond:
            engine, self._engine = self._engine, None
        if engine is None:
            return
        ev = engine.events
        for signal, slot in ((ev.part, self.on_part), (ev.alarm, self.on_alarm),
                             (ev.alarm_cleared, self.on_alarm_cleared),
                             (ev.state, self._on_state), (ev.line, self._on_change)):
            with contextlib.suppress(Exception):
                signal.disconnect(slot)
        if self._alarmed:  # the alarm belongs to that engine's book; the next one gets its own
            self._alarmed = False

    # -- engine threads: enqueue only ------------------------------------------------------
    def on_part(self, result: PartResult) -> None:
        """A verdict (inspection thread): the result message joins the queue, nothing more."""
        engine, info = self._engine, self._engine_info
        if engine is not None:
            self.enqueue_result(result, recipe=info["recipe"], product=info["product"],
                                model_versions=info["model_versions"],
                                decision=engine.inspector.decision)

    def enqueue_result(self, result: PartResult, *, recipe: str, product: str,
                       model_versions: dict[str, str], decision: Any) -> None:
        """Queue one part's result message. Its latency (verdict -> PUBACK) runs from the
        verdict's own moment (``t_trigger + latency_ms``) when the part carries it."""
        now_wall, now = time.time(), time.monotonic()
        t_verdict = (result.t_trigger + result.latency_ms / 1000.0
                     if 0 < result.t_trigger <= now else now)
        payload = result_payload(self.ident, result, recipe=recipe, product=product,
                                 model_versions=model_versions, decision=decision,
                                 verdict_time=now_wall - (now - t_verdict))
        self._enqueue("result", payload, t_queued=t_verdict)

    def on_alarm(self, alarm: Alarm) -> None:
        self._enqueue("alarm", alarm_payload(self.ident, alarm, True), status=True)

    def on_alarm_cleared(self, alarm: Alarm) -> None:
        self._enqueue("alarm", alarm_payload(self.ident, alarm, False), status=True)

    def _on_state(self, state: object) -> None:
        """running / stopped / ended: the engine's last word, for the status."""
        self._engine_info = {**self._engine_info, "state": str(state)}
        self._on_change()

    def _on_change(self, _payload: object = None) -> None:
        with self._cond:
            self._status_due = True
            self._cond.notify_all()

    def _enqueue(self, kind: str, payload: dict[str, Any], status: bool = False,
                 t_queued: float | None = None) -> None:
        with self._cond:
            if kind == "result":  # numbered here: a result dropped later leaves a gap
                self._seq += 1
                payload["seq"] = self._seq
            self._queue.append((kind, payload, None if t_queued is None
                                else (t_queued, time.monotonic())))
            if len(self._queue) > self.section.buffer_max_messages:
                self._drop_oldest_queued()
            self._status_due = self._status_due or status
            self._cond.notify_all()
        self._link.wake()

    def _drop_oldest_queued(self) -> None:
        """The publisher thread is stuck (a disk that hangs): the oldest result goes."""
        for i, (kind, _, _) in enumerate(self._queue):
            if kind == "result":
                del self._queue[i]
                break
        else:
            self._queue.popleft()
        self.memory_dropped += 1

    # -- paho's callbacks (in the publisher's thread, from MqttLink.poll) -------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    props: Any) -> None:
        with self._cond:
            if reason.is_failure:
                self._down_reason = f"refused: {reason}"
                return
            self._connected = True
            self._link.connected_ok()
            self._down_since = None
            self._status_due = True
            self._cond.notify_all()
        log.info("MQTT: connected to %s", self.section.url)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        with self._cond:
            if self._connected:
                self._down_since = time.monotonic()
            self._connected = False
            self._down_reason = f"connection lost ({reason})"
            self._cond.notify_all()

    def _on_fail(self, reason: str) -> None:
        with self._cond:
            self._down_reason = reason

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    props: Any) -> None:
        with self._cond:
            self._acked.append((mid, time.monotonic()))
            self._cond.notify_all()

    # -- the publisher thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                sendable = (self._connected and self._stored_up_to > self._sent_up_to
                            and len(self._inflight) < WINDOW)
                busy = bool(self._queue or self._acked or self._stop or sendable)
            self._link.poll(0.0 if busy else 0.25)  # the network; paho's callbacks fire here
            with self._cond:
                queued, self._queue = list(self._queue), deque()
                acked, self._acked = self._acked, []
                stop, connected = self._stop, self._connected
            try:
                self._store(queued)
                self._settle(acked)
                if connected:
                    self._send()
                    self._maybe_status()
                self._watch_alarm(connected)
            except Exception:  # a disk error must not end publishing for good
                log.exception("MQTT publisher")
                time.sleep(0.5)
            if stop:
                self._goodbye()
                return

    def _store(self, queued: list[tuple[str, dict[str, Any], Times]]) -> None:
        if not queued:
            return
        ids = self.outbox.add([(kind, self.ident.topic(kind), payload)
                               for kind, payload, _ in queued])
        self._queued_at.update(zip(ids, (t for _, _, t in queued), strict=True))
        self._stored_up_to = max(self._stored_up_to, *ids)
        if len(self._queued_at) > 2 * self.section.buffer_max_messages:  # dropped ones
            for row_id in list(self._queued_at)[:self.section.buffer_max_messages]:
                del self._queued_at[row_id]

    def _settle(self, acked: list[tuple[int, float]]) -> None:
        """PUBACKs: those messages leave the outbox; their latency is noted."""
        done = []
        for mid, t_ack in acked:
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # a status message (retained, not buffered)
            row_id, times = entry
            done.append(row_id)
            if times is not None:
                self.latencies_ms.append((t_ack - times[0]) * 1000.0)
                self.own_ms.append((t_ack - times[1]) * 1000.0)
        self.outbox.remove(done)
        self.acknowledged += len(done)

    def _send(self) -> None:
        room = WINDOW - len(self._inflight)
        if room <= 0:
            return
        for msg in self.outbox.next_batch(self._sent_up_to, room):
            info = self._client.publish(msg.topic, msg.payload, qos=self.section.qos)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                log.warning("MQTT: publish refused (%s): trying again", info.rc)
                return  # (NO_CONN: paho holds it and sends it on reconnecting)
            self._inflight[info.mid] = (msg.id, self._queued_at.pop(msg.id, None))
            self._sent_up_to = msg.id

    def _maybe_status(self) -> None:
        now = time.monotonic()
        with self._cond:
            engine = self._engine
            due = self._status_due or now >= self._next_status
            self._status_due = False
        if not due or engine is None:
            return
        self._next_status = now + self.section.status_interval_s
        payload = engine_status(self.ident, engine, self._engine_info)
        self._client.publish(self.ident.topic("status"), encode(payload), qos=1, retain=True)

    def _watch_alarm(self, connected: bool) -> None:
        """Raise the ``mqtt`` alarm when the broker stays away (or results were dropped),
        clear it once it is back and the buffer has room again."""
        engine = self._engine
        dropped = self.outbox.dropped + self.memory_dropped
        new_drops = dropped > self._dropped_seen
        down = self._down_since
        if engine is None:
            return
        if (not connected and down is not None and time.monotonic() - down >= DOWN_GRACE_S) \
                or new_drops:
            self._dropped_seen = dropped
            lost = (f"; {dropped} oldest result message(s) dropped (mqtt.buffer_max_messages "
                    f"= {self.section.buffer_max_messages})" if dropped else "")
            state = "reachable, but slower than the line" if connected else \
                f"unreachable ({self._down_reason})"
            message = (f"MQTT broker {self.section.url} {state}: inspecting as before, "
                       f"{len(self.outbox)} message(s) wait on disk{lost}")
            if not self._alarmed or new_drops:
                engine.raise_alarm(ALARM_MQTT, message)
                self._alarmed = True
        elif connected and self._alarmed and len(self.outbox) < self.section.buffer_max_messages:
            self._alarmed = False
            engine.clear_condition(ALARM_MQTT, f"MQTT broker {self.section.url} reachable "
                                               f"again: sending {len(self.outbox)} buffered "
                                               "message(s) in order")


def open_publisher(recipe: Any, url: str | None = None) -> MqttPublisher | None:
    """The started publisher of ``recipe``'s [mqtt] (``url``: the ``--mqtt`` flag), or None
    when MQTT is off. A setting that cannot work raises MqttConfigError / OutboxError (one
    line each, in the recipe's terms); a broker that is down is only an alarm later."""
    section = mqtt_section(recipe, url)
    return None if section is None else MqttPublisher(section).start()


def station_state(engine: Any, last: str) -> str:
    """running | stopped | ended | not_inspecting | reject_output_down: the status's state
    (``last``: the engine's last state event)."""
    if last == "ended" or not engine.running:
        return "ended" if last == "ended" else "stopped"
    state = str(engine.line_state().state)
    return "running" if state == "inspecting" else state


def engine_status(ident: Identity, engine: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The status message of ``engine`` now (publisher thread: may read the records)."""
    try:
        raw = engine.counts(wait=False)
        shift = engine.shift_start()
    except Exception:  # records closing under a changeover: counts of this run instead
        raw, shift = {}, None
    counts = {"parts": raw.get("inspected", 0), "passed": raw.get("passed", 0),
              "rejected": raw.get("rejected", 0), "errors": raw.get("errors", 0)}
    return status_payload(ident, state=station_state(engine, info.get("state", "")), recipe=info.get("recipe", ""),
                          product=info.get("product", ""), counts=counts, shift_start=shift,
                          alarms=engine.alarms())
