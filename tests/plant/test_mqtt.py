"""Results on MQTT: the real engine on the simulated line, a real Mosquitto, a real subscriber.

What a plant relies on: one result message per inspected part with the engine's verdict and
scores, in order, numbered; a retained status; "online": false when the station dies or
stops; the broker going away costs no result (they wait on disk, an alarm says so) and none
arrives twice once a subscriber drops re-deliveries by ``seq``; bad settings are refused
before the line runs.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from station.config import DecisionSection, MqttSection, RecipeError, load_recipe
from station.pipeline import ALARM_MQTT, Engine
from station.pipeline.inspector import PartResult
from station.plant.mosquitto import Mosquitto, free_port
from station.plant.mqtt import WINDOW, MqttConfigError, MqttPublisher, open_publisher
from station.plant.mqtt_bench import bench_line, bench_mqtt
from tests.e2e.test_engine import part_frames, simulated_line, wait_for, write_recipe
from tests.plant.conftest import Message

RESULT_KEYS = {"v", "station", "plant", "line", "seq", "part_id", "time", "recipe", "product",
               "verdict", "reason", "scores", "model_versions", "latency_ms", "reject_fired",
               "images"}
STATUS_KEYS = {"v", "station", "plant", "line", "online", "state", "recipe", "product", "time",
               "shift_start", "counts", "yield", "alarms"}

SIMULATED_LINE = simulated_line([])  # the line tests' conveyor, every defect kind


def line_recipe(folder: Path, models: Path, url: str, mqtt: str = "") -> Path:
    """The simulated conveyor (about 3 parts/s) publishing to ``url`` as p1/l1/st1."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_recipe(folder, models, camera=SIMULATED_LINE,
                        trigger='mode = "free_run"\nline_frac = 0.5',
                        extra=f'[mqtt]\nenabled = true\nurl = "{url}"\nplant = "p1"\n'
                              f'line = "l1"\nstation = "st1"\nstatus_interval_s = 1\n'
                              f'keepalive_s = 2\nbuffer_dir = "{folder / "outbox"}"\n{mqtt}')


def connected(publisher: MqttPublisher) -> bool:
    return wait_for(lambda: publisher.connected, 20.0)


def first_arrivals(messages: list[Message]) -> list[dict]:
    """Result payloads in arrival order, a re-delivery (same seq, same payload) dropped."""
    seen: dict[int, dict] = {}
    out = []
    for m in messages:
        seq = m.payload["seq"]
        if seq in seen:
            assert seen[seq] == m.payload, f"seq {seq} arrived twice with different content"
            continue
        seen[seq] = m.payload
        out.append(m.payload)
    return out


def test_every_part_is_published_once_with_the_engines_verdict(tiny_models: Path,
                                                               tmp_path: Path, mosquitto,
                                                               subscriber) -> None:
    sub = subscriber(mosquitto.url)
    recipe = load_recipe(line_recipe(tmp_path, tiny_models, mosquitto.url))
    engine = Engine(recipe)
    publisher = open_publisher(recipe)
    assert publisher is not None
    try:
        publisher.attach(engine)
        gaps: list[float] = []  # verdict -> the part event (the engine's own share)
        engine.events.part.connect(lambda r: gaps.append(
            (time.monotonic() - r.t_trigger) * 1000.0 - r.latency_ms))
        assert connected(publisher)
        engine.start()
        assert wait_for(lambda: len(engine.results()) >= 8, 60.0)
        assert sub.wait_for(lambda _m: any(s.payload.get("state") == "running"
                                           for s in sub.of("status")), 20.0)
        engine.stop()
        results = engine.results()
        assert sub.wait_for(lambda _m: len(sub.of("result")) >= len(results), 30.0)
        # the periodic status catches up with the records' counts
        assert sub.wait_for(lambda _m: any(
            s.payload.get("state") == "stopped"
            and s.payload["counts"]["parts"] == len(results)
            for s in sub.of("status")), 30.0), str([s.payload for s in sub.of("status")][-2:])
        latencies = sorted(publisher.latencies_ms)
    finally:
        publisher.close()
        engine.close()

    got = [m for m in sub.of("result")]
    assert all(m.topic == "station/p1/l1/st1/result" and not m.retain for m in got)
    payloads = first_arrivals(got)
    assert len(payloads) == len(got) == len(results), "one message per part, none twice"
    assert [p["seq"] for p in payloads] == list(range(1, len(results) + 1))
    versions = engine.inspector.model_versions
    for p, r in zip(payloads, results, strict=True):
        assert set(p) == RESULT_KEYS
        assert (p["part_id"], p["verdict"]) == (r.part_id, r.verdict)
        assert p["scores"]["autoencoder"] == {"raw": r.ae_raw, "normalized": r.ae_score}
        assert p["scores"]["classifier"] == {"raw": r.cls_raw, "normalized": r.cls_score}
        assert p["model_versions"] == versions
        assert (p["station"], p["plant"], p["line"], p["v"]) == ("st1", "p1", "l1", 1)
        assert (p["recipe"], p["product"]) == ("recipe", "test-part")
        assert p["latency_ms"] == pytest.approx(r.latency_ms, abs=0.001)
        assert p["reject_fired"] is None and p["images"] == {"frame": None, "crop": None}
        assert datetime.fromisoformat(p["time"].replace("Z", "+00:00")).year >= 2024
        if r.error:
            assert p["reason"] == r.error
        elif r.verdict == "REJECT":  # which score reached its threshold, as the records say
            assert " >= " in p["reason"] and p["reason"].split()[0] in p["scores"]
        else:
            assert p["reason"] == ""
    assert {p["verdict"] for p in payloads} <= {"PASS", "REJECT", "ERROR"}
    status = [s.payload for s in sub.of("status")]
    last_online = [s for s in status if s["online"]][-1]
    assert set(last_online) == STATUS_KEYS
    counts = last_online["counts"]
    assert counts["passed"] + counts["rejected"] + counts["errors"] == counts["parts"]
    assert last_online["yield"] == pytest.approx(counts["passed"] / counts["parts"], abs=1e-4)
    assert status[-1] == {"v": 1, "station": "st1", "plant": "p1", "line": "l1",
                          "online": False, "time": None}, "a clean stop says offline"
    late = subscriber(mosquitto.url)  # a subscriber that comes later gets the retained status
    assert late.wait_for(lambda _m: bool(late.of("status")), 10.0)
    assert late.of("status")[0].retain and late.of("status")[0].payload["online"] is False
    print(f"verdict -> PUBACK on the line: {len(latencies)} parts, p50 "
          f"{latencies[len(latencies) // 2]:.1f} ms, max {latencies[-1]:.1f} ms; verdict -> "
          f"part event max {max(gaps):.1f} ms")


def test_broker_killed_and_restarted_loses_no_result(tiny_models: Path, tmp_path: Path,
                                                     subscriber) -> None:
    """The broker dies mid-run (-9) and comes back on the same port: the station inspects
    on, raises the mqtt alarm, buffers on disk, clears the alarm, and every result arrives,
    in order; a re-delivery of a message in flight at the crash carries its seq."""
    broker = Mosquitto(tmp_path / "broker", persistent=True).start()
    try:
        sub = subscriber(broker.url, persistent=True)
        db = broker.folder / "mosquitto.db"
        t_subscribed = time.time()  # the subscriber's session must be saved before the crash
        assert wait_for(lambda: db.exists() and db.stat().st_mtime >= t_subscribed, 15.0)
        recipe = load_recipe(line_recipe(tmp_path, tiny_models, broker.url))
        engine = Engine(recipe)
        publisher = open_publisher(recipe)
        assert publisher is not None
        try:
            publisher.attach(engine)
            assert connected(publisher)
            engine.start()
            assert sub.wait_for(lambda _m: len(sub.of("result")) >= 3, 60.0)
            broker.kill()
            assert wait_for(lambda: any(a.kind == ALARM_MQTT and a.active
                                        for a in engine.alarms()), 20.0)
            n_down = len(engine.results())
            assert wait_for(lambda: len(engine.results()) >= n_down + 4, 30.0), \
                "the station keeps inspecting while the broker is away"
            assert len(publisher.outbox) >= 4, "results wait on disk"
            assert engine.line_state().inspecting, "the mqtt alarm never stops inspection"
            broker.start()
            assert wait_for(lambda: not any(a.kind == ALARM_MQTT and a.active
                                            for a in engine.alarms()), 30.0)
            engine.stop()
            results = engine.results()
            assert sub.wait_for(
                lambda _m: len({m.payload["seq"] for m in sub.of("result")}) >= len(results),
                60.0), f"{len(sub.of('result'))} of {len(results)} results arrived"
            assert wait_for(lambda: len(publisher.outbox) == 0, 20.0)
        finally:
            publisher.close()
            engine.close()
    finally:
        broker.stop()
    got = sub.of("result")
    payloads = first_arrivals(got)
    assert [p["part_id"] for p in payloads] == [r.part_id for r in results], "in order, all"
    assert [p["seq"] for p in payloads] == list(range(1, len(results) + 1))
    assert len(got) - len(payloads) <= WINDOW, "only messages in flight at the crash repeat"
    alarms = [(m.payload["kind"], m.payload["raised"]) for m in sub.of("alarm")]
    assert (ALARM_MQTT, True) in alarms and (ALARM_MQTT, False) in alarms
    assert alarms.index((ALARM_MQTT, True)) < alarms.index((ALARM_MQTT, False))


def test_last_will_says_offline_when_the_station_is_killed(tiny_models: Path, tmp_path: Path,
                                                           mosquitto, subscriber) -> None:
    """``station run --headless --mqtt URL`` (the recipe's [mqtt] is off) killed with -9: the
    broker publishes its retained last will within a few keepalives. (``station demo`` takes
    the same flag through the same code.)"""
    frames = part_frames(tmp_path / "frames", 6)
    path = write_recipe(tmp_path, tiny_models,
                        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 10\nloop = true',
                        extra='[mqtt]\nplant = "p1"\nline = "l1"\nstation = "killed"\n'
                              'keepalive_s = 1')
    sub = subscriber(mosquitto.url, topic="station/p1/l1/killed/#")
    proc = subprocess.Popen([sys.executable, "-m", "station", "run", "--recipe", str(path),
                             "--headless", "--quiet", "--mqtt", mosquitto.url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert sub.wait_for(lambda _m: len(sub.of("result")) >= 2 and any(
            s.payload["online"] for s in sub.of("status")), 90.0), \
            proc.stderr.read1().decode() if proc.poll() is not None else "no results"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert sub.wait_for(lambda _m: sub.of("status")[-1].payload["online"] is False, 15.0), \
        "no last will"
    assert sub.of("status")[-1].payload == {"v": 1, "station": "killed", "plant": "p1",
                                            "line": "l1", "online": False, "time": None}
    outbox = tmp_path / "records" / "mqtt-outbox" / "outbox.sqlite"
    assert outbox.exists(), "the outbox lives beside the records by default"


def test_a_changeover_keeps_one_numbering(tiny_models: Path, tmp_path: Path, mosquitto,
                                          subscriber) -> None:
    """attach(next engine) after a recipe switch: the new recipe's name, seq goes on."""
    sub = subscriber(mosquitto.url)
    frames = part_frames(tmp_path / "frames", 4)
    paths = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        written = write_recipe(
            folder, tiny_models, camera=f'source = "folder"\ndevice = "{frames}"\nloop = false',
            extra=f'[mqtt]\nenabled = true\nurl = "{mosquitto.url}"\nstation = "st1"\n'
                  f'buffer_dir = "{tmp_path / "outbox"}"')
        paths.append(written.rename(folder / f"{name}.toml"))
    recipes = [load_recipe(p) for p in paths]
    publisher = open_publisher(recipes[0])
    assert publisher is not None
    engines = []
    try:
        for recipe in recipes:
            engine = Engine(recipe)
            engines.append(engine)
            try:
                publisher.attach(engine)
                engine.start()
                assert engine.wait_finished(60.0)
            finally:
                engine.close()
        assert sub.wait_for(lambda _m: len(sub.of("result")) >= 8, 30.0)
    finally:
        publisher.close()
    payloads = first_arrivals(sub.of("result"))
    assert [p["seq"] for p in payloads] == list(range(1, 9))
    assert [p["part_id"] for p in payloads] == [r.part_id for e in engines for r in e.results()]
    assert [p["recipe"] for p in payloads] == ["first"] * 4 + ["second"] * 4
    assert {p["model_versions"]["autoencoder"] for p in payloads} == {
        engines[0].inspector.model_versions["autoencoder"]}


BAD_MQTT = [
    ('url = "http://broker:1883"', "mqtt.url", "mqtt://host[:port]"),
    ('url = "mqtt://broker:99999"', "mqtt.url", "port between 1 and 65535"),
    ('url = "mqtt://user@broker"', "mqtt.url", "mqtt://host[:port]"),
    ('plant = "hall/2"', "mqtt.plant", "without / + #"),
    ('topic_root = "#"', "mqtt.topic_root", "without / + #"),
    ('line = ""', "mqtt.line", "non-empty"),
    (f'station = "{"x" * 65}"', "mqtt.station", "at most 64 characters"),
    ("buffer_max_messages = 100000000", "mqtt.buffer_max_messages", "between 10 and 1000000"),
    ("qos = 0", "mqtt.qos", "between 1 and 2"),
    ("status_interval_s = 0", "mqtt.status_interval_s", "greater than 0"),
    ("keepalive_s = 0", "mqtt.keepalive_s", "between 1 and 3600"),
    ('ca_file = "RECIPE"', "mqtt.ca_file", "mqtts://"),
    ('url = "mqtts://b"\nkey_file = "RECIPE"', "mqtt.key_file", "mqtt.cert_file too"),
    ('password_file = "RECIPE"', "mqtt.password_file", "mqtt.username too"),
    ('password = "secret"', "mqtt.password", "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD_MQTT)
def test_bad_mqtt_settings_are_refused_naming_file_line_and_key(
        tiny_models: Path, tmp_path: Path, text: str, key: str, expected: str) -> None:
    frames = part_frames(tmp_path / "frames", 1)
    path = write_recipe(tmp_path, tiny_models, camera=f'source = "folder"\ndevice = "{frames}"',
                        extra="[mqtt]\n" + text.replace("RECIPE", str(tmp_path / "recipe.toml")))
    lines = path.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith(key.split(".")[1] + " ="))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}"), message
    assert expected in message and "\n" not in message


def test_bad_mqtt_flag_and_password_file_are_one_line_exit_2(tiny_models: Path,
                                                            tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 1)
    empty = tmp_path / "password"
    empty.write_text("\n")
    path = write_recipe(tmp_path, tiny_models, camera=f'source = "folder"\ndevice = "{frames}"',
                        extra=f'[mqtt]\nusername = "station"\npassword_file = "{empty}"')
    for flag, expected in (("ftp://x", "--mqtt ftp://x: expected mqtt://host[:port]"),
                           ("mqtt://127.0.0.1:1", "mqtt.password_file = ")):
        proc = subprocess.run([sys.executable, "-m", "station", "run", "--recipe", str(path),
                               "--headless", "--seconds", "1", "--mqtt", flag],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr


def test_bench_measures_rate_and_verdict_to_puback_latency(tiny_models: Path, tmp_path: Path,
                                                          mosquitto) -> None:
    recipe = load_recipe(folder_recipe(tmp_path / "line", tiny_models,
                                       part_frames(tmp_path / "frames", 3), "bench"))
    line = bench_line(recipe, 3.0, url=mosquitto.url)
    assert line.parts >= 5, "every part of the run is measured"
    assert 0.0 < line.own_p50_ms <= line.p50_ms <= line.p99_ms <= line.max_ms
    result = bench_mqtt(mosquitto.url, messages=300, latency_messages=60, rate_hz=50.0)
    assert result.messages == 300 and result.latency_messages == 60
    assert result.messages_per_s > 50.0, "slower than any line"
    assert 0.0 < result.latency_p50_ms <= result.latency_p99_ms <= result.latency_max_ms
    print(f"MQTT bench (small): {result.messages_per_s:.0f} messages/s, verdict -> PUBACK "
          f"p50 {result.latency_p50_ms:.1f} ms p99 {result.latency_p99_ms:.1f} ms; on the "
          f"engine ({line.parts} parts) p50 {line.p50_ms:.1f} ms p99 {line.p99_ms:.1f} ms")


# -- credentials and TLS, against a broker configured for them ------------------------------


def publish_one(section: MqttSection, timeout: float = 15.0) -> MqttPublisher:
    """A started publisher with one result queued (no engine needed for the transport)."""
    publisher = MqttPublisher(section).start()
    publisher.enqueue_result(PartResult(part_id="000001", verdict="PASS", ae_score=0.5,
                                        ae_raw=0.1, latency_ms=3.0, t_trigger=time.monotonic()),
                             recipe="r", product="p", model_versions={"autoencoder": "ae@1"},
                             decision=DecisionSection())
    wait_for(lambda: publisher.connected, timeout)
    return publisher


def test_username_and_password_file_log_in_and_a_wrong_password_is_kept_out(
        tmp_path: Path, subscriber) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "station", "s3cret"],
                   check=True, timeout=30)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("guess\n")
    with Mosquitto(tmp_path / "broker", anonymous=False,
                   extra=f"password_file {passwd}") as broker:
        sub = subscriber(broker.url, username="station", password="s3cret")
        base = MqttSection(enabled=True, url=broker.url, station="auth", username="station")
        publisher = publish_one(replace(base, password_file=str(good),
                                        buffer_dir=str(tmp_path / "ok")))
        try:
            assert publisher.connected
            assert sub.wait_for(lambda _m: len(sub.of("result")) == 1, 15.0)
        finally:
            publisher.close()
        refused = publish_one(replace(base, password_file=str(bad),
                                      buffer_dir=str(tmp_path / "refused")), timeout=3.0)
        try:
            assert not refused.connected
            assert len(refused.outbox) == 1, "the result waits on disk"
        finally:
            refused.close(flush_s=0.5)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl), and a second, unrelated CA."""
    folder.mkdir()
    out = {name: folder / f"{name}.pem" for name in ("ca", "ca_key", "server", "server_key",
                                                     "client", "client_key", "other_ca",
                                                     "other_key")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    for ca, key in (("ca", "ca_key"), ("other_ca", "other_key")):
        openssl("req", "-x509", *ec, "-keyout", str(out[key]), "-out", str(out[ca]),
                "-days", "2", "-subj", f"/CN=test {ca}")
    ext = folder / "san.txt"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=station")):
        csr = folder / f"{name}.csr"
        openssl("req", *ec, "-keyout", str(out[f"{name}_key"]), "-out", str(csr),
                "-subj", subject)
        openssl("x509", "-req", "-in", str(csr), "-CA", str(out["ca"]), "-CAkey",
                str(out["ca_key"]), "-CAcreateserial", "-out", str(out[name]), "-days", "2",
                "-extfile", str(ext))
    return out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_the_recipes_ca_and_client_certificate(tmp_path: Path, subscriber) -> None:
    """mqtts:// with ca_file connects; a broker signed by another CA is not trusted; a
    broker that requires client certificates takes cert_file/key_file and refuses none."""
    certs = make_certificates(tmp_path / "certs")
    tls_port, mutual_port = free_port(), free_port()
    server = f"cafile {certs['ca']}\ncertfile {certs['server']}\nkeyfile {certs['server_key']}"
    extra = (f"listener {tls_port} 127.0.0.1\n{server}\n"
             f"listener {mutual_port} 127.0.0.1\n{server}\nrequire_certificate true")
    with Mosquitto(tmp_path / "broker", extra=extra) as broker:
        assert wait_for(lambda: port_open(tls_port) and port_open(mutual_port), 10.0)
        sub = subscriber(broker.url)
        base = MqttSection(enabled=True, url=f"mqtts://127.0.0.1:{tls_port}", station="tls")
        publisher = publish_one(replace(base, ca_file=str(certs["ca"]),
                                        buffer_dir=str(tmp_path / "ok")))
        try:
            assert publisher.connected
            assert sub.wait_for(lambda _m: len(sub.of("result")) == 1, 15.0)
        finally:
            publisher.close()
        stranger = publish_one(replace(base, ca_file=str(certs["other_ca"]),
                                       buffer_dir=str(tmp_path / "refused")), timeout=3.0)
        try:
            assert not stranger.connected, "a broker the CA did not sign is not trusted"
        finally:
            stranger.close(flush_s=0.5)
        mutual = replace(base, url=f"mqtts://127.0.0.1:{mutual_port}", ca_file=str(certs["ca"]))
        with_cert = publish_one(replace(mutual, cert_file=str(certs["client"]),
                                        key_file=str(certs["client_key"]),
                                        buffer_dir=str(tmp_path / "mutual")))
        try:
            assert with_cert.connected, "the client certificate is presented"
            assert sub.wait_for(lambda _m: len(sub.of("result")) == 2, 15.0)
        finally:
            with_cert.close()
        without = publish_one(replace(mutual, buffer_dir=str(tmp_path / "no-cert")), timeout=3.0)
        try:
            assert not without.connected, "the broker asks for a client certificate"
        finally:
            without.close(flush_s=0.5)
    with pytest.raises(MqttConfigError, match=r"^mqtt\.ca_file = .*: expected a PEM"):
        MqttPublisher(replace(base, ca_file=str(certs["ca"].with_name("san.txt"))))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- the window ------------------------------------------------------------------------------


def folder_recipe(folder: Path, models: Path, frames: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_recipe(folder, models,
                        camera=f'source = "folder"\ndevice = "{frames}"\nfps = 10\nloop = true',
                        extra=f'[mqtt]\nstation = "gui"\nbuffer_dir = "{folder / "outbox"}"')
    return path.rename(folder / f"{name}.toml")


def test_the_window_publishes_with_the_mqtt_flag(qtbot, tiny_models: Path, tmp_path: Path,
                                                 mosquitto, subscriber) -> None:
    from station.ui.app import run_app

    sub = subscriber(mosquitto.url)
    path = folder_recipe(tmp_path / "gui", tiny_models, part_frames(tmp_path / "frames", 4),
                         "window")
    assert run_app(path, seconds=4.0, mqtt=mosquitto.url) == 0
    assert sub.wait_for(lambda _m: bool(sub.of("result")) and bool(sub.of("status")) and sub.of(
        "status")[-1].payload["online"] is False, 20.0), "results, then offline at the end"
    payloads = first_arrivals(sub.of("result"))
    assert [p["seq"] for p in payloads] == list(range(1, len(payloads) + 1))
    assert {p["recipe"] for p in payloads} == {"window"}
    assert any(s.payload.get("state") == "running" for s in sub.of("status"))


def test_the_publisher_follows_the_windows_recipe_switch(qtbot, tiny_models: Path,
                                                         tmp_path: Path, mosquitto,
                                                         subscriber) -> None:
    from station.ui.main_window import MainWindow, make_engine

    sub = subscriber(mosquitto.url)
    frames = part_frames(tmp_path / "frames", 4)
    first = folder_recipe(tmp_path / "line", tiny_models, frames, "first")
    second = folder_recipe(tmp_path / "other", tiny_models, frames, "second")
    publisher = open_publisher(load_recipe(first), mosquitto.url)
    assert publisher is not None
    window = MainWindow(make_engine(load_recipe(first)))
    qtbot.addWidget(window)
    try:
        publisher.attach(window.engine)
        window.engine_changed.connect(publisher.attach)
        window.engine.start()
        assert sub.wait_for(lambda _m: len(sub.of("result")) >= 2, 30.0)
        assert window.switch_recipe(second)
        assert sub.wait_for(lambda _m: any(m.payload["recipe"] == "second"
                                           for m in sub.of("result")), 30.0)
    finally:
        window.shutdown()
        publisher.close()
    payloads = first_arrivals(sub.of("result"))
    recipes = [p["recipe"] for p in payloads]
    assert recipes == sorted(recipes), "first's results, then second's"
    assert [p["seq"] for p in payloads] == list(range(1, len(payloads) + 1))
    assert any(s.payload.get("recipe") == "second" for s in sub.of("status"))


def test_results_wait_on_disk_across_a_restart_and_a_full_buffer_is_alarmed(
        tiny_models: Path, tmp_path: Path, mosquitto, subscriber) -> None:
    """No broker at all: results go to disk, past buffer_max_messages the oldest results are
    dropped and the mqtt alarm says how many; the next start sends what is left, in order."""
    recipe = load_recipe(folder_recipe(tmp_path / "r", tiny_models,
                                       part_frames(tmp_path / "frames", 1), "bounded"))
    section = replace(recipe.mqtt, enabled=True, url=f"mqtt://127.0.0.1:{free_port()}",
                      buffer_max_messages=10)
    engine = Engine(recipe)
    down = MqttPublisher(section).start()
    try:
        down.attach(engine)
        for i in range(1, 26):
            down.on_part(PartResult(part_id=f"{i:06d}", verdict="PASS", ae_score=0.5,
                                    ae_raw=0.1, cls_score=0.2, cls_raw=0.1,
                                    t_trigger=time.monotonic()))
        assert wait_for(lambda: any(a.kind == ALARM_MQTT and "dropped" in a.message
                                    for a in engine.alarms()), 20.0)
        alarm = next(a for a in engine.alarms() if a.kind == ALARM_MQTT)
        assert "unreachable" in alarm.message and "buffer_max_messages = 10" in alarm.message
        assert wait_for(lambda: len(down.outbox) == 10, 10.0)
    finally:
        down.close(flush_s=0.0)
        engine.close()
    sub = subscriber(mosquitto.url)
    up = MqttPublisher(replace(section, url=mosquitto.url)).start()
    try:
        assert sub.wait_for(lambda m: len(m) >= 10, 20.0)
        assert wait_for(lambda: len(up.outbox) == 0, 10.0)
    finally:
        up.close()
    results = first_arrivals(sub.of("result"))
    assert [p["seq"] for p in results] == list(range(26 - len(results), 26)), "the newest"
    assert all(p["seq"] == int(p["part_id"]) for p in results), "a dropped one is a gap"
    assert len(results) + len(sub.of("alarm")) == 10, "alarms are kept, oldest results go"
