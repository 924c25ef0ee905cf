"""The fleet: every station one MQTT broker knows, from the messages the stations publish.

Qt-free. :class:`FleetModel` turns the stations' ``status`` / ``result`` / ``alarm`` messages
(the JSON of ``notes/plant.md``: ``<root>/<plant>/<line>/<station>/<kind>``) into one
:class:`StationSnapshot` per station and emits it (``events.station``) whenever the station
changes; ``station.plant.fleet_client.FleetClient`` feeds it from a broker (paho-mqtt). A window follows the
events (``station.ui.fleet``), a test feeds the model directly or through a real broker.

The network is not trusted: a payload over 64 kB, broken JSON, a wrong type, an unknown
``"v"`` or a topic outside the layout is ignored, counted and logged in one line; nothing a
station (or anyone else) publishes can stop the fleet view.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from psygnal import Signal, SignalGroup

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024  # bytes; a bigger message is ignored unread
VERSION = 1  # the payload version this reader knows
KINDS = ("status", "result", "alarm")
VERDICTS = ("PASS", "REJECT", "ERROR")
SILENT_INTERVALS = 3.0  # no status for this many status intervals: the station is offline
DEFAULT_INTERVAL_S = 5.0  # the station's status interval until it is measured
INTERVAL_BOUNDS_S = (1.0, 60.0)
ROLLING = 20  # the reject-rate trend: rate over this many latest results
LOGGED_PER_REASON = 20  # ignored messages logged one by one, then every 1000th
MAX_STATIONS = 1000  # stations remembered; messages naming more are ignored
SEQS_KEPT = 1000  # a result repeating one of a station's latest this many is a duplicate


class Ignored(ValueError):
    """A message that is not read, with why (one line)."""


@dataclass(frozen=True)
class Score:
    raw: float | None
    normalized: float | None  # 1.0 = the model's reject threshold


@dataclass(frozen=True)
class AlarmInfo:
    """An alarm the station shows: ``active`` while its condition holds; a cleared one stays
    (not active) until someone acknowledges it at the station."""

    kind: str
    message: str
    since: str | None = None
    active: bool = True


@dataclass(frozen=True)
class ResultMessage:
    """One inspected part as the station published it, and when it arrived here (unix)."""

    part_id: str
    verdict: str
    seq: int | None = None
    time: str | None = None
    recipe: str = ""
    product: str = ""
    reason: str = ""
    scores: Mapping[str, Score] = field(default_factory=dict)
    model_versions: Mapping[str, str] = field(default_factory=dict)
    latency_ms: float | None = None
    reject_fired: bool | None = None
    images: Mapping[str, str | None] = field(default_factory=dict)
    received: float = 0.0


@dataclass(frozen=True)
class StatusMessage:
    online: bool
    state: str = ""
    recipe: str = ""
    product: str = ""
    time: str | None = None
    shift_start: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    yield_: float | None = None
    alarms: tuple[AlarmInfo, ...] = ()
    interval_s: float | None = None  # optional "status_interval_s": else it is measured


@dataclass(frozen=True)
class AlarmMessage:
    kind: str
    message: str
    raised: bool
    time: str | None = None


@dataclass(frozen=True)
class StationSnapshot:
    """What the fleet knows of one station, at one moment (immutable: safe across threads)."""

    key: str  # "plant/line/station"
    plant: str
    line: str
    name: str
    online: bool
    why_offline: str = ""  # "" when online: "connection lost or shut down", "no message since
    #                        01:02:03" (silent for 3 status intervals)
    state: str = ""
    recipe: str = ""
    product: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    yield_: float | None = None
    alarms: tuple[AlarmInfo, ...] = ()
    verdicts: tuple[str, ...] = ()  # the latest results' verdicts, oldest first
    rejects: tuple[ResultMessage, ...] = ()  # recent REJECT / ERROR results, newest first
    trend: tuple[tuple[float, float], ...] = ()  # (unix time, reject rate 0..1 over ROLLING)
    results: int = 0  # result messages received
    last_heard: float = 0.0  # unix time of its latest message


class FleetEvents(SignalGroup):
    """``station``: a station appeared or changed; ``broker``: the connection to the broker
    changed (:class:`BrokerState`); ``ignored``: a message was ignored (the one-line why).
    Emitted from the MQTT thread: a window re-posts them to its own thread."""

    station = Signal(StationSnapshot)
    broker = Signal(object)  # station.plant.fleet_client.BrokerState
    ignored = Signal(str)


# -- reading one payload ------------------------------------------------------------------

def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "number": _number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
}


def _get(obj: Mapping[str, Any], key: str, kind: str, default: Any = None,
         required: bool = False) -> Any:
    """``obj[key]`` checked to be a ``kind`` (or null); absent: ``default``, or refused."""
    if key not in obj:
        if required:
            raise Ignored(f"{key} missing")
        return default
    value = obj[key]
    if value is None and not required:
        return default
    if not _TYPES[kind](value):
        raise Ignored(f"{key} = {_short(value)}: expected {kind}")
    return value


def _scores(obj: Mapping[str, Any]) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for model, value in _get(obj, "scores", "object", {}).items():
        if not isinstance(value, dict):
            raise Ignored(f"scores.{model} = {_short(value)}: expected object")
        scores[str(model)] = Score(_get(value, "raw", "number"), _get(value, "normalized", "number"))
    return scores


def _strings(obj: Mapping[str, Any], key: str, nullable: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in _get(obj, key, "object", {}).items():
        if not (isinstance(value, str) or (nullable and value is None)):
            raise Ignored(f"{key}.{name} = {_short(value)}: expected string")
        out[str(name)] = value
    return out


def read_result(obj: Mapping[str, Any], received: float) -> ResultMessage:
    verdict = _get(obj, "verdict", "string", required=True)
    if verdict not in VERDICTS:
        raise Ignored(f"verdict = {_short(verdict)}: expected one of {', '.join(VERDICTS)}")
    part_id = obj.get("part_id")
    if not isinstance(part_id, (str, int)) or isinstance(part_id, bool):
        raise Ignored(f"part_id = {_short(part_id)}: expected string")
    return ResultMessage(
        part_id=str(part_id), verdict=verdict, seq=_get(obj, "seq", "integer"),
        time=_get(obj, "time", "string"), recipe=_get(obj, "recipe", "string", ""),
        product=_get(obj, "product", "string", ""), reason=_get(obj, "reason", "string", ""),
        scores=_scores(obj), model_versions=_strings(obj, "model_versions", nullable=False),
        latency_ms=_get(obj, "latency_ms", "number"),
        reject_fired=_get(obj, "reject_fired", "bool"),
        images=_strings(obj, "images", nullable=True), received=received)


def _alarm_infos(obj: Mapping[str, Any]) -> tuple[AlarmInfo, ...]:
    alarms = []
    for i, item in enumerate(_get(obj, "alarms", "list", [])):
        if not isinstance(item, dict):
            raise Ignored(f"alarms[{i}] = {_short(item)}: expected object")
        alarms.append(AlarmInfo(_get(item, "kind", "string", required=True),
                                _get(item, "message", "string", ""),
                                _get(item, "since", "string"),
                                _get(item, "active", "bool", True)))
    return tuple(alarms)


def read_status(obj: Mapping[str, Any]) -> StatusMessage:
    counts = _get(obj, "counts", "object", {})
    for name, value in counts.items():
        if not _TYPES["integer"](value) or value < 0:
            raise Ignored(f"counts.{name} = {_short(value)}: expected a count")
    yield_ = _get(obj, "yield", "number")
    if yield_ is not None and not 0.0 <= yield_ <= 1.0:
        raise Ignored(f"yield = {_short(yield_)}: expected 0..1")
    interval = _get(obj, "status_interval_s", "number")
    return StatusMessage(
        online=_get(obj, "online", "bool", required=True), state=_get(obj, "state", "string", ""),
        recipe=_get(obj, "recipe", "string", ""), product=_get(obj, "product", "string", ""),
        time=_get(obj, "time", "string"), shift_start=_get(obj, "shift_start", "string"),
        counts={str(k): int(v) for k, v in counts.items()}, yield_=yield_,
        alarms=_alarm_infos(obj), interval_s=interval if interval and interval > 0 else None)


def read_alarm(obj: Mapping[str, Any]) -> AlarmMessage:
    return AlarmMessage(kind=_get(obj, "kind", "string", required=True),
                        message=_get(obj, "message", "string", ""),
                        raised=_get(obj, "raised", "bool", required=True),
                        time=_get(obj, "time", "string"))


def decode(payload: bytes, station: str) -> dict[str, Any]:
    """The JSON object of a payload of version 1 from ``station``; else :class:`Ignored`."""
    if len(payload) > MAX_PAYLOAD:
        raise Ignored(f"payload of {len(payload)} bytes: over the {MAX_PAYLOAD} byte limit")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Ignored(f"not JSON: {' '.join(str(exc).split())[:80]}") from None
    if not isinstance(obj, dict):
        raise Ignored(f"payload {_short(obj)}: expected a JSON object")
    v = obj.get("v")
    if v != VERSION or isinstance(v, bool):
        raise Ignored(f"v = {_short(v)}: this fleet view reads version {VERSION}")
    named = obj.get("station")
    if named is not None and named != station:
        raise Ignored(f"station = {_short(named)}: the topic says {station!r}")
    return obj


# -- the fleet ------------------------------------------------------------------------------

@dataclass
class _Station:
    """One station's mutable state (under the model's lock)."""

    snap: StationSnapshot
    heard: float = 0.0  # monotonic, latest message
    last_status: float | None = None  # monotonic, latest live (not retained) status
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=6))
    interval_s: float | None = None  # told by the station
    open_alarms: dict[str, AlarmInfo] = field(default_factory=dict)
    verdicts: deque[str] = field(default_factory=deque)
    rejects: deque[ResultMessage] = field(default_factory=deque)
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=ROLLING))
    trend: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=300))
    seqs: set[int] = field(default_factory=set)  # the latest results' sequence numbers
    seq_order: deque[int] = field(default_factory=deque)

    def interval(self) -> float:
        """The station's status interval: told, else the longest of its latest gaps."""
        low, high = INTERVAL_BOUNDS_S
        if self.interval_s is not None:
            return min(high, max(low, self.interval_s))
        if not self.gaps:
            return DEFAULT_INTERVAL_S
        return min(high, max(low, max(self.gaps)))


class FleetModel:
    """Every station heard on ``root``; thread-safe (fed from the MQTT thread, read anywhere).

    ``clock`` (monotonic) and ``wall`` (unix time) are injectable so the silence rule can be
    tested without waiting."""

    def __init__(self, root: str = "station", *, verdicts: int = 20, rejects: int = 100,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.root = root.strip("/")
        self.events = FleetEvents()
        self.ignored: Counter[str] = Counter()  # "status" | "result" | "alarm" | "other" -> n
        self._n_verdicts, self._n_rejects = verdicts, rejects
        self._clock, self._wall = clock, wall
        self._lock = threading.RLock()
        self._stations: dict[str, _Station] = {}
        self.duplicates = 0

    # reading -----------------------------------------------------------------------------
    def stations(self) -> list[StationSnapshot]:
        with self._lock:
            return [s.snap for _, s in sorted(self._stations.items())]

    def station(self, key: str) -> StationSnapshot | None:
        with self._lock:
            found = self._stations.get(key)
            return None if found is None else found.snap

    @property
    def ignored_total(self) -> int:
        with self._lock:
            return sum(self.ignored.values())

    # feeding -----------------------------------------------------------------------------
    def topics(self) -> list[str]:
        """The subscriptions: every station's status, result and alarm."""
        return [f"{self.root}/+/+/+/{kind}" for kind in KINDS]

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> bool:
        """Take one message; False (counted, logged, ``events.ignored``) when it is ignored."""
        try:
            plant, line, name, kind = self._where(topic)
            obj = decode(bytes(payload), name)
            if kind == "status":
                message: Any = read_status(obj)
            elif kind == "result":
                message = read_result(obj, self._wall())
            else:
                message = read_alarm(obj)
        except Ignored as why:
            self._ignore(topic, str(why))
            return False
        with self._lock:
            station = self._station(plant, line, name)
            snap = None if station is None else self._apply(station, kind, message, retained)
        if station is None:
            self._ignore(topic, f"more than {MAX_STATIONS} stations: not shown")
            return False
        if snap is not None:
            self.events.station.emit(snap)
        return True

    def _apply(self, station: _Station, kind: str, message: Any,
               retained: bool) -> StationSnapshot | None:
        """Fold one message into ``station`` (under the lock); its new snapshot, or None
        when nothing changed (a duplicate result)."""
        if kind == "status":
            self._on_status(station, message, retained)
        elif kind == "result":
            if not self._on_result(station, message):
                return None
        else:
            self._on_alarm(station, message)
        return self._publish(station)

    def _where(self, topic: str) -> tuple[str, str, str, str]:
        prefix = self.root + "/"
        parts = topic[len(prefix):].split("/") if topic.startswith(prefix) else []
        if len(parts) != 4 or parts[3] not in KINDS or not all(parts):
            raise Ignored(f"topic outside {prefix}<plant>/<line>/<station>/<kind>")
        return parts[0], parts[1], parts[2], parts[3]

    def _ignore(self, topic: str, why: str) -> None:
        kind = topic.rsplit("/", 1)[-1]
        kind = kind if kind in KINDS else "other"
        with self._lock:
            self.ignored[kind] += 1
            n = self.ignored[kind]
        shown = topic if len(topic) <= 120 else topic[:117] + "..."
        line = f"{shown}: ignored: {why}"
        if n <= LOGGED_PER_REASON or n % 1000 == 0:
            log.warning("fleet: %s (%d %s messages ignored so far)", line, n, kind)
        self.events.ignored.emit(line)

    def _station(self, plant: str, line: str, name: str) -> _Station | None:
        """The station's state, made when it is first heard (None: too many stations)."""
        key = f"{plant}/{line}/{name}"
        found = self._stations.get(key)
        if found is None and len(self._stations) >= MAX_STATIONS:
            return None
        if found is None:
            found = _Station(StationSnapshot(key, plant, line, name, online=False,
                                             why_offline="no status yet"))
            self._stations[key] = found
        return found

    def _on_status(self, station: _Station, status: StatusMessage, retained: bool) -> None:
        now = self._clock()
        station.heard = now
        if not retained:  # a retained status is old news: no measure of the interval
            if station.last_status is not None and status.online:
                station.gaps.append(now - station.last_status)
            station.last_status = now if status.online else None
        if status.interval_s is not None:
            station.interval_s = status.interval_s
        snap = station.snap
        if not status.online:
            station.gaps.clear()
            station.snap = replace(snap, online=False, last_heard=self._wall(),
                                   why_offline="connection lost or shut down")
            return
        station.open_alarms = {a.kind: a for a in status.alarms}
        station.snap = replace(
            snap, online=True, why_offline="", state=status.state, recipe=status.recipe,
            product=status.product, counts=dict(status.counts), yield_=status.yield_,
            last_heard=self._wall())

    def _on_result(self, station: _Station, result: ResultMessage) -> bool:
        """Take a result; False for a duplicate (a sequence number already seen)."""
        if result.seq is not None:
            if result.seq in station.seqs:
                self.duplicates += 1
                return False
            station.seqs.add(result.seq)
            station.seq_order.append(result.seq)
            if len(station.seq_order) > SEQS_KEPT:
                station.seqs.discard(station.seq_order.popleft())
        station.heard = self._clock()
        station.verdicts.append(result.verdict)
        while len(station.verdicts) > self._n_verdicts:
            station.verdicts.popleft()
        if result.verdict != "PASS":
            station.rejects.appendleft(result)
            while len(station.rejects) > self._n_rejects:
                station.rejects.pop()
        station.recent.append(result.verdict == "REJECT")
        station.trend.append((result.received, sum(station.recent) / len(station.recent)))
        snap = station.snap
        station.snap = replace(snap, results=snap.results + 1, last_heard=self._wall(),
                               online=True, why_offline="")
        return True

    def _on_alarm(self, station: _Station, alarm: AlarmMessage) -> None:
        station.heard = self._clock()
        if alarm.raised:
            station.open_alarms[alarm.kind] = AlarmInfo(alarm.kind, alarm.message, alarm.time)
        elif alarm.kind in station.open_alarms:  # cleared: shown until acknowledged there
            station.open_alarms[alarm.kind] = replace(station.open_alarms[alarm.kind],
                                                      active=False)
        station.snap = replace(station.snap, online=True, why_offline="",
                               last_heard=self._wall())

    def _publish(self, station: _Station) -> StationSnapshot:
        """The station's snapshot with its collections frozen (under the lock)."""
        station.snap = replace(station.snap, alarms=tuple(station.open_alarms.values()),
                               verdicts=tuple(station.verdicts),
                               rejects=tuple(station.rejects), trend=tuple(station.trend))
        return station.snap

    def check_silence(self) -> list[StationSnapshot]:
        """Mark offline every online station not heard for SILENT_INTERVALS x its status
        interval (a station killed without its last will reaching the broker, a network cut);
        returns the stations that changed (also emitted)."""
        changed = []
        with self._lock:
            now = self._clock()
            for station in self._stations.values():
                quiet = now - station.heard
                if station.snap.online and quiet > SILENT_INTERVALS * station.interval():
                    since = time.strftime("%H:%M:%S", time.localtime(station.snap.last_heard))
                    station.snap = replace(station.snap, online=False,
                                           why_offline=f"no message since {since}")
                    changed.append(self._publish(station))
        for snap in changed:
            self.events.station.emit(snap)
        return changed

