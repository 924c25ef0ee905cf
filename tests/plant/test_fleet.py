"""The fleet view's model (Qt-free) fed through a real Mosquitto broker on a free loopback
port, by paho publishers that speak the stations' message format (notes/plant.md).

What a shift lead relies on: every station the broker knows appears with its state, recipe,
counts, verdicts, rejects and alarms; a station that dies is shown offline within seconds;
garbage on the stations' topics is ignored (counted, one line logged) and never stops the
view; a broker that is down is retried until it is back.

The broker is tests/plant/conftest.py's ``mosquitto``; the publisher below is also used by
the window's test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from station.config import MqttSection
from station.plant.fleet import MAX_PAYLOAD, FleetModel, StationSnapshot
from station.plant.fleet_client import FleetClient
from station.plant.mosquitto import Mosquitto, free_port


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy (a loaded 2-core machine: generous timeouts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(0.05)


class Station:
    """A publisher for one station, with the last will a real station sets."""

    def __init__(self, broker: Mosquitto, name: str, plant: str = "p1", line: str = "l1",
                 root: str = "station", login: tuple[str, str] | None = None) -> None:
        self.name, self.plant, self.line = name, plant, line
        self.base = f"{root}/{plant}/{line}/{name}"
        self.seq = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{name}")
        self.client.will_set(f"{self.base}/status", json.dumps(self._who(online=False, time=None)),
                             qos=1, retain=True)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.connect("127.0.0.1", broker.port, keepalive=5)
        self.client.loop_start()

    def _who(self, **fields: Any) -> dict[str, Any]:
        return {"v": 1, "station": self.name, "plant": self.plant, "line": self.line, **fields}

    def raw(self, kind: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(f"{self.base}/{kind}", payload, qos=1, retain=retain).wait_for_publish(10)

    def status(self, online: bool = True, **fields: Any) -> None:
        body = self._who(online=online, state="running", recipe="demo", product="demo part",
                         time="2026-12-02T01:02:03.000Z", shift_start="2026-12-02T00:00:00.000Z",
                         counts={"parts": 0, "passed": 0, "rejected": 0, "errors": 0},
                         yield_=None, alarms=[])
        body["yield"] = body.pop("yield_")
        body.update(fields)
        self.raw("status", json.dumps(body), retain=True)

    def result(self, part_id: str, verdict: str, reason: str = "", ae: float = 0.4,
               **fields: Any) -> None:
        self.seq += 1
        body = self._who(seq=self.seq, part_id=part_id, time="2026-12-02T01:02:03.123Z",
                         recipe="demo", product="demo part", verdict=verdict, reason=reason,
                         scores={"autoencoder": {"raw": ae * 0.02, "normalized": ae},
                                 "classifier": {"raw": 0.1, "normalized": 0.2}},
                         model_versions={"autoencoder": "ae-1", "classifier": "cl-1"},
                         latency_ms=12.5, reject_fired=verdict == "REJECT",
                         images={"frame": f"images/{part_id}-frame.png",
                                 "crop": f"images/{part_id}-crop.png"})
        body.update(fields)
        self.raw("result", json.dumps(body))

    def alarm(self, kind: str, message: str, raised: bool = True) -> None:
        self.raw("alarm", json.dumps(self._who(kind=kind, message=message, raised=raised,
                                               time="2026-12-02T01:02:04.000Z")))

    def close(self) -> None:
        """A clean shutdown: "online": false first, as a station does."""
        self.raw("status", json.dumps(self._who(online=False, time=None)), retain=True)
        self.client.disconnect()
        self.client.loop_stop()


# -- the tests ------------------------------------------------------------------------------
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    return mosquitto


@pytest.fixture
def stations(broker: Mosquitto) -> Iterator[Callable[..., Station]]:
    made: list[Station] = []

    def make(name: str, **kw: Any) -> Station:
        made.append(Station(broker, name, **kw))
        return made[-1]

    yield make
    for s in made:
        s.client.disconnect()
        s.client.loop_stop()


@contextmanager
def following(url: str, root: str = "station",
              **login: str) -> Iterator[tuple[FleetModel, FleetClient]]:
    """A started fleet client (``login``: the [mqtt] keys username, password_file, ...)."""
    model = FleetModel(root)
    client = FleetClient(model, MqttSection(url=url, topic_root=root, **login))
    client.start()
    try:
        yield model, client
    finally:
        client.stop()


@pytest.fixture
def fleet(broker: Mosquitto) -> Iterator[FleetModel]:
    with following(broker.url) as (model, client):
        wait_for(lambda: client.state.connected, what="the fleet to connect")
        yield model


def seen(model: FleetModel, key: str, check: Callable[[StationSnapshot], bool]) -> StationSnapshot:
    return wait_for(lambda: (s := model.station(key)) is not None and check(s) and s,
                    what=f"station {key}")


def test_every_station_appears_with_its_status_results_and_rejects(fleet, stations):
    events: list[StationSnapshot] = []
    fleet.events.station.connect(events.append)
    a, b = stations("st1"), stations("st2", line="l2")
    a.status(state="running", counts={"parts": 40, "passed": 38, "rejected": 2, "errors": 0},
             **{"yield": 0.95})
    b.status(state="stopped", recipe="bracket", counts={"parts": 7, "passed": 7,
                                                        "rejected": 0, "errors": 0})
    for i, verdict in enumerate(["PASS", "PASS", "REJECT", "PASS", "ERROR"]):
        a.result(f"{i + 1:06d}", verdict, reason="scratch (anomaly 1.73)" if verdict == "REJECT"
                 else ("camera timeout" if verdict == "ERROR" else ""), ae=1.73 if verdict ==
                 "REJECT" else 0.4)
    one = seen(fleet, "p1/l1/st1", lambda s: s.results == 5)
    two = seen(fleet, "p1/l2/st2", lambda s: s.state == "stopped")
    assert [s.key for s in fleet.stations()] == ["p1/l1/st1", "p1/l2/st2"]
    assert one.online and one.state == "running" and one.recipe == "demo"
    assert one.counts == {"parts": 40, "passed": 38, "rejected": 2, "errors": 0}
    assert one.yield_ == pytest.approx(0.95)
    assert one.verdicts == ("PASS", "PASS", "REJECT", "PASS", "ERROR")
    assert [r.part_id for r in one.rejects] == ["000005", "000003"]  # newest first
    reject = one.rejects[1]
    assert reject.verdict == "REJECT" and reject.reason == "scratch (anomaly 1.73)"
    assert reject.scores["autoencoder"].normalized == pytest.approx(1.73)
    assert reject.images["crop"] == "images/000003-crop.png" and reject.reject_fired is True
    assert [round(rate, 3) for _, rate in one.trend] == [0.0, 0.0, 0.333, 0.25, 0.2]
    assert two.online and two.recipe == "bracket" and two.counts["parts"] == 7
    assert {e.key for e in events} == {"p1/l1/st1", "p1/l2/st2"}  # typed events followed


def test_a_retained_status_shows_a_station_that_published_before_the_view_started(
        broker, stations):
    stations("early").status(state="running", recipe="washer")
    with following(broker.url) as (model, _):
        snap = seen(model, "p1/l1/early", lambda s: s.online)
        assert snap.recipe == "washer"


def test_alarms_open_and_close_from_alarm_and_status_messages(fleet, stations):
    st = stations("st1")
    st.status(alarms=[{"kind": "camera", "message": "no frames for 2 s", "since": "t"}])
    seen(fleet, "p1/l1/st1", lambda s: [a.kind for a in s.alarms] == ["camera"])
    st.alarm("serial", "reject output down")
    snap = seen(fleet, "p1/l1/st1", lambda s: len(s.alarms) == 2)
    assert {a.message for a in snap.alarms} == {"no frames for 2 s", "reject output down"}
    st.alarm("camera", "frames again", raised=False)  # cleared, not yet acknowledged
    snap = seen(fleet, "p1/l1/st1", lambda s: [a.active for a in s.alarms] == [False, True])
    assert [a.kind for a in snap.alarms] == ["camera", "serial"]
    st.status(alarms=[{"kind": "serial", "message": "reject output down", "since": "t",
                       "active": True}])  # acknowledged there: the station's list is the truth
    seen(fleet, "p1/l1/st1", lambda s: [(a.kind, a.active) for a in s.alarms] == [("serial", True)])
    st.status(alarms=[])
    seen(fleet, "p1/l1/st1", lambda s: s.alarms == ())


def test_a_duplicated_result_is_counted_once(fleet, stations):
    st = stations("st1")
    st.result("000001", "REJECT", reason="dent")
    st.seq -= 1  # the station sends seq 1 again (a resend after a reconnect)
    st.result("000001", "REJECT", reason="dent")
    st.result("000002", "PASS")
    snap = seen(fleet, "p1/l1/st1", lambda s: s.results == 2 and s.verdicts[-1] == "PASS")
    assert [r.part_id for r in snap.rejects] == ["000001"] and fleet.duplicates == 1


KILLED_STATION = """
import json, sys, time
import paho.mqtt.client as mqtt
port, name = int(sys.argv[1]), sys.argv[2]
topic = f"station/p1/l1/{name}/status"
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
c.will_set(topic, json.dumps({"v": 1, "station": name, "plant": "p1", "line": "l1",
                              "online": False, "time": None}), qos=1, retain=True)
c.connect("127.0.0.1", port, keepalive=5)
c.loop_start()
c.publish(topic, json.dumps({"v": 1, "station": name, "plant": "p1", "line": "l1",
          "online": True, "state": "running", "recipe": "demo"}), qos=1, retain=True).wait_for_publish(10)
print("up", flush=True)
time.sleep(300)
"""


def test_a_station_killed_with_sigkill_is_offline_within_seconds(fleet, broker):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STATION, str(broker.port), "doomed"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        seen(fleet, "p1/l1/doomed", lambda s: s.online)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        snap = seen(fleet, "p1/l1/doomed", lambda s: not s.online)
        assert time.monotonic() - t0 < 10.0
        assert snap.why_offline == "connection lost or shut down" and snap.recipe == "demo"  # last known kept
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_clean_shutdown_shows_the_station_offline(fleet, stations):
    st = stations("st1")
    st.status()
    seen(fleet, "p1/l1/st1", lambda s: s.online)
    st.close()
    assert not seen(fleet, "p1/l1/st1", lambda s: not s.online).online


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _status(online: bool = True, **extra: Any) -> bytes:
    return json.dumps({"v": 1, "station": "st1", "online": online, "state": "running",
                       **extra}).encode()


def test_a_station_whose_status_stops_is_offline_after_three_status_intervals():
    clock = Clock()
    model = FleetModel(clock=clock)
    topic = "station/p1/l1/st1/status"
    for _ in range(4):  # a status every 2 s: the interval is measured
        assert model.handle(topic, _status())
        clock.now += 2.0
    clock.now += 6.0 - 2.0 - 0.1  # 5.9 s after the last: not yet
    assert model.check_silence() == [] and model.station("p1/l1/st1").online
    clock.now += 0.3
    [snap] = model.check_silence()
    assert not snap.online and snap.why_offline.startswith("no message since ")
    assert model.check_silence() == []  # said once
    model.handle(topic, _status())
    assert model.station("p1/l1/st1").online  # back


def test_a_station_that_says_its_status_interval_is_held_to_it():
    clock = Clock()
    model = FleetModel(clock=clock)
    model.handle("station/p1/l1/st1/status", _status(status_interval_s=10))
    clock.now += 29.0
    assert model.check_silence() == []
    clock.now += 2.0
    assert not model.check_silence()[0].online


GARBAGE: list[tuple[str, bytes, str]] = [
    ("status", b"{not json", "not JSON"),
    ("result", b"\xff\xfe\x00", "not JSON"),
    ("alarm", b"[1, 2]", "expected a JSON object"),
    ("status", json.dumps({"v": 2, "online": True}).encode(), "v = 2"),
    ("status", json.dumps({"v": "1", "online": True}).encode(), "v = '1'"),
    ("status", json.dumps({"online": True}).encode(), "v = null"),
    ("status", json.dumps({"v": 1, "online": "yes"}).encode(), "online = 'yes': expected bool"),
    ("status", json.dumps({"v": 1, "online": True, "counts": {"parts": -1}}).encode(),
     "counts.parts = -1"),
    ("status", json.dumps({"v": 1, "online": True, "yield": 1.5}).encode(), "yield = 1.5"),
    ("status", json.dumps({"v": 1, "online": True, "alarms": "many"}).encode(), "alarms"),
    ("result", json.dumps({"v": 1, "part_id": "1", "verdict": "MAYBE"}).encode(), "verdict"),
    ("result", json.dumps({"v": 1, "part_id": None, "verdict": "PASS"}).encode(), "part_id"),
    ("result", b'{"v": 1, "part_id": "1", "verdict": "PASS", "latency_ms": NaN}',
     "latency_ms = NaN"),
    ("result", json.dumps({"v": 1, "part_id": "1", "verdict": "PASS", "scores":
                           {"autoencoder": {"normalized": "high"}}}).encode(), "normalized"),
    ("result", json.dumps({"v": 1, "part_id": "1", "verdict": "PASS",
                           "reason": "x" * (MAX_PAYLOAD + 10)}).encode(), "byte limit"),
    ("alarm", json.dumps({"v": 1, "kind": "camera", "message": "m"}).encode(), "raised missing"),
    ("alarm", json.dumps({"v": 1, "station": "intruder", "kind": "k", "raised": True}).encode(),
     "the topic says 'st1'"),
]


def test_garbage_on_the_stations_topics_is_ignored_counted_and_logged_in_one_line(
        fleet, stations, caplog):
    caplog.set_level(logging.WARNING, logger="station.plant.fleet")
    st = stations("st1")
    for kind, payload, _ in GARBAGE:
        st.raw(kind, payload)
    st.status(state="running", recipe="after-the-garbage")  # the view still reads
    st.result("000001", "REJECT", reason="dent")
    seen(fleet, "p1/l1/st1", lambda s: s.recipe == "after-the-garbage" and s.results == 1)
    wait_for(lambda: fleet.ignored_total == len(GARBAGE), what="every garbage message counted")
    assert fleet.ignored == {"status": 8, "result": 6, "alarm": 3}
    lines = [r.getMessage() for r in caplog.records if r.name == "station.plant.fleet"]
    assert len(lines) == len(GARBAGE)
    for line, (kind, _, why) in zip(lines, GARBAGE, strict=True):
        assert "\n" not in line and f"station/p1/l1/st1/{kind}: ignored:" in line, line
        assert why in line, (why, line)
        assert len(line) < 300


def test_the_number_of_stations_is_bounded(monkeypatch):
    import station.plant.fleet as fleet_module

    monkeypatch.setattr(fleet_module, "MAX_STATIONS", 3)
    model = FleetModel()
    for i in range(5):
        body = json.dumps({"v": 1, "station": f"s{i}", "online": True}).encode()
        assert model.handle(f"station/p/l/s{i}/status", body) == (i < 3)
    assert len(model.stations()) == 3 and model.ignored["status"] == 2
    assert model.handle("station/p/l/s0/status", _status(online=False).replace(b"st1", b"s0"))


def test_messages_outside_the_topic_layout_are_ignored():
    model = FleetModel("plant/a")
    assert model.topics() == [f"plant/a/+/+/+/{k}" for k in ("status", "result", "alarm")]
    for topic in ("station/p/l/s/status", "plant/a/p/l/status", "plant/a/p/l/s/x/status",
                  "plant/a/p//s/status", "plant/a/p/l/s/telemetry"):
        assert not model.handle(topic, _status()), topic
    assert model.stations() == [] and model.ignored_total == 5
    assert model.handle("plant/a/p/l/st1/status", _status())


def test_the_view_waits_for_a_broker_that_is_down_and_reads_it_once_it_is_up(tmp_path):
    down = Mosquitto(tmp_path / "later", port=free_port())
    states: list[Any] = []
    with following(down.url) as (model, client):
        model.events.broker.connect(states.append)
        text = wait_for(lambda: not client.state.connected and "unreachable" in client.state.text
                        and client.state.text, what="the broker reported unreachable")
        assert text.startswith(f"broker {down.url} unreachable, retrying (")
        assert "refused" in text.lower()
        try:
            down.start()
            wait_for(lambda: client.state.connected, timeout=30, what="a reconnection")
            st = Station(down, "late")
            st.status(recipe="late-recipe")
            assert seen(model, "p1/l1/late", lambda s: s.online).recipe == "late-recipe"
            st.client.disconnect()
            down.stop()  # and down again: said so
            wait_for(lambda: not client.state.connected, what="the loss reported")
        finally:
            down.stop()
    assert states[-1].text.startswith(f"broker {down.url} unreachable, retrying")


def test_the_command_refuses_bad_options_in_one_line(capsys, tmp_path):
    from station.cli import main

    for argv, said in (
            (["--broker", "http://x:1"], "--broker http://x:1: expected mqtt://host[:port]"),
            (["--broker", "mqtt://h:99999"], "a port between 1 and 65535"),
            (["--topic-root", "a/+"], "--topic-root a/+: expected topic levels"),
            (["--username", "u", "--password-file", str(tmp_path / "none")],
             "--password-file " + str(tmp_path / "none") + ": no such file"),
            (["--ca-file", __file__], "need an mqtts:// broker"),
            (["--seconds", "0"], "--seconds: '0': expected a finite number, above 0")):
        assert main(["fleet", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("station fleet: ") and said in err and "\n" not in err, err


def test_a_flood_of_garbage_is_counted_without_flooding_the_log(caplog):
    caplog.set_level(logging.WARNING, logger="station.plant.fleet")
    model = FleetModel()
    for _ in range(3000):
        assert not model.handle("station/p1/l1/st1/result", b"\x00garbage")
    assert model.ignored["result"] == 3000
    logged = [r.getMessage() for r in caplog.records if r.name == "station.plant.fleet"]
    assert len(logged) == 20 + 3  # the first 20, then every 1000th, with the count
    assert logged[-1].endswith("(3000 result messages ignored so far)")
    assert model.handle("station/p1/l1/st1/status", _status())  # and it still reads


def test_a_broker_with_users_lets_the_view_in_with_the_password_file(tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "viewer", "s3cret"],
                   check=True, timeout=30)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "st1", "st1-pw"], check=True,
                   timeout=30)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("guess\n")
    with Mosquitto(tmp_path / "broker", anonymous=False,
                   extra=f"password_file {passwd}") as broker:
        with following(broker.url, username="viewer", password_file=str(bad)) as (model, client):
            wait_for(lambda: "refused" in client.state.text, what="the refusal")
            assert not client.state.connected and model.stations() == []
        with following(broker.url, username="viewer", password_file=str(good)) as (model, client):
            wait_for(lambda: client.state.connected, what="the login")
            st = Station(broker, "st1", login=("st1", "st1-pw"))
            try:
                st.status(recipe="logged-in")
                assert seen(model, "p1/l1/st1", lambda s: s.online).recipe == "logged-in"
            finally:
                st.client.disconnect()
                st.client.loop_stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_the_ca_file_and_a_wrong_ca_said_in_words(tmp_path):
    from tests.plant.test_mqtt import make_certificates

    certs = make_certificates(tmp_path / "certs")
    tls_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {certs['ca']}\n"
             f"certfile {certs['server']}\nkeyfile {certs['server_key']}")
    url = f"mqtts://127.0.0.1:{tls_port}"
    with Mosquitto(tmp_path / "broker", extra=extra) as broker:
        with following(url, ca_file=str(certs["other_ca"])) as (model, client):
            wait_for(lambda: "TLS" in client.state.text, what="the TLS refusal")
            assert "certificate" in client.state.text and not client.state.connected
        with following(url, ca_file=str(certs["ca"])) as (model, client):
            wait_for(lambda: client.state.connected, what="the TLS connection")
            st = Station(broker, "st1")  # the station on the plain listener, the view on TLS
            try:
                st.status(recipe="over-tls")
                assert seen(model, "p1/l1/st1", lambda s: s.online).recipe == "over-tls"
            finally:
                st.client.disconnect()
                st.client.loop_stop()
