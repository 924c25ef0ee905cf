"""The station's OPC UA server with a real asyncua client acting as the PLC, on real engines.

What a PLC program relies on: Trigger gives a part id and ResultValid rises for that part's
result; every result is read and acknowledged exactly once, in order, and matches what the
station judged (and, on the simulated line, the conveyor's truth); SelectRecipe changes the
product mid-run; bad calls and writes get an OPC UA refusal and the station keeps serving; a
server configured with a user and Basic256Sha256 lets in only that user over an encrypted
channel; the server's thread and port go away when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from station.config import load_recipe
from station.config.pin import PIN_MIN_ITERATIONS, hash_pin
from station.plant import PlcHandshake, StationHost
from station.plant.opcua_auth import OpcUaStartError
from station.plant.opcua_latency import PUBLISH_MS, OpcUaPlc, measure_opcua_latency
from station.plant.opcua_nodes import layout_markdown
from station.plant.opcua_server import OpcUaServer
from tests.e2e.test_engine import part_frames, simulated_line, wait_for, write_recipe
from tests.plant.plc_recipes import folder_recipe

REPO = Path(__file__).resolve().parents[2]
CODES = {"PASS": 1, "REJECT": 2, "ERROR": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opcua_section(port: int) -> str:
    return f'[opcua]\nenabled = true\nendpoint = "opc.tcp://127.0.0.1:{port}/station"\n'


def ua_recipe(folder: Path, models: Path, *, name: str, number: int, port: int,
              frames: Path, reject: str = "enabled = false", trigger: str = "plc") -> Path:
    """A PLC-triggered folder line with an [opcua] section (``tests.plant.conftest``)."""
    return folder_recipe(folder, models, name=name, number=number, frames=frames,
                         reject=reject, trigger=trigger, extra=opcua_section(port),
                         port=free_port())


@contextlib.contextmanager
def serving(recipe: Path | Any, settings: Any = None) -> Iterator[tuple[StationHost,
                                                                       PlcHandshake,
                                                                       OpcUaServer]]:
    """A station (host, handshake) and its OPC UA server; everything closed afterwards."""
    host = StationHost(load_recipe(recipe) if isinstance(recipe, Path) else recipe)
    plc = PlcHandshake(host)
    server = OpcUaServer(plc, settings)
    try:
        server.start()
        yield host, plc, server
    finally:
        server.stop()
        plc.close()
        host.close()


async def eventually(read: Any, expected: Any, timeout: float = 20.0) -> Any:
    """Read until the value is ``expected`` (the server copies state in its own loop)."""
    deadline = time.monotonic() + timeout
    value = await read()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        value = await read()
    return value


async def child_names(plc: OpcUaPlc) -> set[str]:
    return {d.BrowseName.Name for d in await plc.station.get_children_descriptions()}


def check_result(result: dict[str, Any], part_id: str) -> None:
    """What every presented result holds, whatever its verdict."""
    assert result["PartId"] == part_id
    assert result["ResultCode"] == CODES[result["Verdict"]]
    assert result["Reason"]
    assert abs(result["Time"].replace(tzinfo=dt.UTC).timestamp() - time.time()) < 120
    assert result["LatencyMs"] > 0
    models = sorted(v.split("=")[0] for v in result["ModelVersions"])
    assert models in (["autoencoder", "classifier"], ["classifier"]), result["ModelVersions"]
    if result["Verdict"] != "ERROR":  # a score for each model the recipe runs, NaN for none
        assert math.isfinite(result["AutoencoderScore"]) == ("autoencoder" in models)
        assert math.isfinite(result["ClassifierScore"])
        assert result["Reason"].startswith(result["Verdict"])


# -- the handshake, part by part, and a changeover the PLC commands -------------------------


def test_plc_triggers_acknowledges_and_changes_recipe_over_opcua(tiny_models: Path,
                                                                 tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 6)
    port = free_port()
    alpha = ua_recipe(tmp_path, tiny_models, name="alpha", number=1, port=port, frames=frames,
                      reject='enabled = true\noutput = "plc"\ndelay_ms = 40\npulse_ms = 20')
    ua_recipe(tmp_path, tiny_models, name="beta", number=7, port=port, frames=frames)
    seen: list[tuple[str, dict[str, Any]]] = []

    async def the_plc(server: OpcUaServer, host: StationHost) -> None:
        async with OpcUaPlc(server.url) as plc:
            assert await plc.call("Trigger") == [False, "", "not ready: idle (station stopped)"]
            assert await plc.read("State") == "Idle"
            await asyncio.get_running_loop().run_in_executor(None, host.start)
            assert await plc.read("RecipeInUse.Name") == "alpha"
            assert await plc.read("RecipeInUse.Number") == 1
            assert await plc.read("Recipes.Names") == ["alpha", "beta"]
            assert await plc.read("Recipes.Numbers") == [1, 7]
            assert "Reject" in await child_names(plc)
            for _ in range(4):
                result, _ms = await plc.cycle()
                seen.append(("alpha", result))
                assert await eventually(lambda: plc.read("ResultAck"), False) is False
            # the PLC selects product 7 mid-run: the line runs on beta, part ids continue
            assert await plc.call("SelectRecipe", ua.Variant(7, ua.VariantType.UInt16)) == \
                [True, "switched to beta.toml"]
            assert await eventually(lambda: plc.read("RecipeInUse.Number"), 7) == 7
            assert await plc.read("RecipeInUse.Name") == "beta"
            async def has_reject() -> bool:
                return "Reject" in await child_names(plc)

            assert await eventually(has_reject, False) is False, "beta: no PLC reject output"
            for _ in range(3):
                result, _ms = await plc.cycle()
                seen.append(("beta", result))
            assert await plc.call("SelectRecipe", "alpha") == [True, "switched to alpha.toml"]
            assert await eventually(lambda: plc.read("RecipeInUse.Number"), 1) == 1
            assert await eventually(has_reject, True) is True, "alpha's Reject is back"
            result, _ms = await plc.cycle()
            seen.append(("alpha", result))
            counts = [await plc.read(f"Counts.{k}") for k in ("Inspected", "Passed",
                                                             "Rejected", "Errors")]
            assert counts[0] >= len(seen) and counts[0] == sum(counts[1:])

    with serving(alpha) as (host, _handshake, server):
        asyncio.run(the_plc(server, host))
        engine = host.engine

    ids = [int(r["PartId"]) for _, r in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "each part once, in order"
    assert [r["Sequence"] for _, r in seen] == list(range(1, len(seen) + 1))
    for _, result in seen:
        check_result(result, result["PartId"])
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    rows = dict(db.execute("SELECT part_id, verdict FROM parts").fetchall())
    products = dict(db.execute("SELECT part_id, recipe FROM parts").fetchall())
    for recipe, result in seen:
        assert rows[result["PartId"]] == result["Verdict"], "the PLC read what was recorded"
        assert products[result["PartId"]] == f"{recipe} part", "judged on the selected recipe"
    assert engine.recipe.path.name == "alpha.toml"


# -- the simulated line: every verdict against the conveyor's truth -------------------------


async def _read_every_result(plc: OpcUaPlc, done: threading.Event, got: list[dict]) -> None:
    """A PLC that only reads: each new Sequence with ResultValid is read and acknowledged."""
    last = 0
    while True:
        valid, seq = await plc.client.read_values([plc.node("ResultValid"),
                                                   plc.node("Result.Sequence")])
        if valid and seq != last:
            got.append(await plc.read_result())
            last = seq
            await plc.acknowledge()
        elif done.is_set() and not valid:
            return
        else:
            await asyncio.sleep(0.005)


class _Edges:
    """Subscription handler: (time, value) of each Reject change."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, bool]] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.changes.append((time.monotonic(), bool(val)))


def test_simulated_line_over_opcua_matches_the_conveyor(line_models: Path, line_defects: tuple,
                                                        tmp_path: Path) -> None:
    """Free-run trigger on the simulated conveyor, reject output = the PLC's Reject variable:
    the OPC UA PLC reads and acknowledges every result, each matches the conveyor's truth,
    and Reject pulses once per defective part."""
    port = free_port()
    path = write_recipe(tmp_path, line_models, rule="classifier", camera=simulated_line(line_defects), trigger='mode = "free_run"\nline_frac = 0.5',
        reject='enabled = true\noutput = "plc"\ndelay_ms = 150\npulse_ms = 60',
        extra=opcua_section(port))
    got: list[dict] = []
    edges = _Edges()
    done = threading.Event()

    async def the_plc(server: OpcUaServer, host: StationHost) -> None:
        async with OpcUaPlc(server.url) as plc:
            sub = await plc.client.create_subscription(PUBLISH_MS, edges)
            await sub.subscribe_data_change(plc.node("Reject"))
            reader = asyncio.create_task(_read_every_result(plc, done, got))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, host.start)
            await asyncio.sleep(8.0)  # the line runs (as the serial line test does)
            await loop.run_in_executor(None, host.engine.stop)
            await asyncio.sleep(0.5)  # the last reject pulses end
            done.set()
            await asyncio.wait_for(reader, 30.0)

    with serving(path) as (host, _plc, server):
        asyncio.run(the_plc(server, host))
        results = host.engine.results()
        pulses = host.pulse.pulses

    assert len(results) >= 18, "the line ran at about 3 parts per second"
    assert [r["PartId"] for r in got] == [r.part_id for r in results], "every part, in order"
    labels = []
    for seen, r in zip(got, results, strict=True):
        truth = r.truth
        assert truth is not None
        labels.append(truth.label)
        assert seen["Verdict"] == r.verdict
        assert seen["Verdict"] == ("REJECT" if truth.label else "PASS"), \
            f"part {r.part_id}: {seen['Reason']}, truth {truth.defect}"
        check_result(seen, r.part_id)
    assert 0 < sum(labels) < len(labels), "the run should hold both good and defective parts"
    rises = [t for t, value in edges.changes if value]
    assert len(rises) == sum(labels) == pulses, "one Reject pulse per defective part"


def test_results_waiting_behind_the_ack_are_presented_one_by_one(tiny_models: Path,
                                                                 tmp_path: Path) -> None:
    """A station that triggers itself (every frame a part) while the PLC is slow: results
    queue, none is overwritten; each ResultAck presents the next with the next Sequence."""
    frames = part_frames(tmp_path / "frames", 4)
    recipe = ua_recipe(tmp_path, tiny_models, name="alpha", number=1, port=free_port(),
                       frames=frames, trigger="hardware")

    async def the_plc(url: str, handshake: PlcHandshake, host: StationHost) -> list[dict]:
        async with OpcUaPlc(url) as plc:
            await asyncio.get_running_loop().run_in_executor(None, host.start)
            assert await eventually(lambda: plc.read("ResultValid"), True) is True
            assert wait_for(lambda: handshake.results_waiting >= 4, 30.0)
            await asyncio.get_running_loop().run_in_executor(None, host.engine.stop)
            waiting = handshake.results_waiting
            got = []
            for _ in range(waiting):
                seq = await plc.read("Result.Sequence")
                assert await plc.read("ResultValid") is True
                got.append(await plc.read_result())
                await plc.acknowledge()
                await eventually(lambda: plc.read("Result.Sequence"), seq + 1, timeout=5.0)
            assert await eventually(lambda: plc.read("ResultValid"), False) is False
            with pytest.raises(ua.uaerrors.BadInvalidState):
                await plc.acknowledge()
            return got

    with serving(recipe) as (host, handshake, server):
        got = asyncio.run(the_plc(server.url, handshake, host))
        results = host.engine.results()
        assert handshake.acknowledged == len(got)
        assert handshake.overruns + len(got) == len(results), "a full queue drops the oldest"
    first = got[0]["Sequence"]
    assert [r["Sequence"] for r in got] == list(range(first, first + len(got)))
    kept = results[len(results) - len(got):]
    assert [r["PartId"] for r in got] == [r.part_id for r in kept]
    assert [r["Verdict"] for r in got] == [r.verdict for r in kept]


# -- bad input from the network ----------------------------------------------------------------


def test_bad_input_gets_a_refusal_and_the_station_keeps_running(tiny_models: Path,
                                                                tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 4)
    port = free_port()
    alpha = ua_recipe(tmp_path, tiny_models, name="alpha", number=1, port=port, frames=frames)
    errors = ua.uaerrors

    async def the_plc(url: str) -> None:
        async with OpcUaPlc(url) as plc:
            with pytest.raises(errors.BadInvalidArgument):
                await plc.call("SelectRecipe", ua.Variant(1.5, ua.VariantType.Double))
            with pytest.raises(errors.BadInvalidArgument):
                await plc.call("SelectRecipe", ua.Variant(True, ua.VariantType.Boolean))
            with pytest.raises(errors.BadArgumentsMissing):
                await plc.call("SelectRecipe")
            with pytest.raises(errors.BadTooManyArguments):
                await plc.call("Trigger", ua.Variant(1, ua.VariantType.Int32))
            ok, why = await plc.call("SelectRecipe", ua.Variant(999, ua.VariantType.Int32))
            assert not ok and why == "recipe number 999 is unknown; known: 1 alpha"
            ok, why = await plc.call("SelectRecipe", "no-such-product")
            assert not ok and why.startswith("recipe 'no-such-product' is unknown")
            ok, why = await plc.call("SelectRecipe", "x" * 5000)
            assert not ok and why.startswith("Recipe: 5000 characters: expected a recipe name")
            for path in ("State", "ResultValid", "Result.PartId", "Counts.Inspected",
                         "RecipeInUse.Number"):
                with pytest.raises(errors.BadUserAccessDenied):
                    await plc.node(path).write_value("Ready")
            with pytest.raises(errors.BadTypeMismatch):
                await plc.node("ResultAck").write_value("yes")
            with pytest.raises(errors.BadInvalidState):
                await plc.acknowledge()  # no result presented
            assert await plc.read("ResultAck") is False
        async with OpcUaPlc(url) as plc:  # a request past the size limit: refused
            with pytest.raises(errors.BadRequestTooLarge):
                await plc.call("SelectRecipe", "x" * (2 << 20))
        async with OpcUaPlc(url) as plc:  # the station still runs, on the same recipe
            assert await plc.read("RecipeInUse.Name") == "alpha"
            for _ in range(2):
                result, _ms = await plc.cycle()
                check_result(result, result["PartId"])

    with serving(alpha) as (host, _plc, server):
        host.start()
        asyncio.run(the_plc(server.url))
        assert host.engine.running


# -- security ---------------------------------------------------------------------------------


def _certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed certificate (DER) and its key (PEM) for ``uri`` on 127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
                x509.DNSName(socket.gethostname())]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_user_and_basic256sha256_let_in_only_that_user(tiny_models: Path,
                                                       tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 2)
    port = free_port()
    recipe = load_recipe(ua_recipe(tmp_path, tiny_models, name="alpha", number=1, port=port,
                                   frames=frames))
    server_cert, server_key = _certificate(tmp_path, "station", "urn:station:test")
    client_cert, client_key = _certificate(tmp_path, "plc", "urn:station:test-plc")
    settings = dataclasses.replace(
        recipe.opcua, security="Basic256Sha256", certificate=str(server_cert),
        private_key=str(server_key), username="plc",
        password_hash=hash_pin("line-4-secret", iterations=PIN_MIN_ITERATIONS))

    async def connect(url: str, *, password: str | None, secure: bool = True) -> str:
        client = Client(url, timeout=20)
        client.application_uri = "urn:station:test-plc"
        if secure:
            await client.set_security(SecurityPolicyBasic256Sha256, str(client_cert),
                                      str(client_key), server_certificate=str(server_cert),
                                      mode=ua.MessageSecurityMode.SignAndEncrypt)
        if password is not None:
            client.set_user("plc")
            client.set_password(password)
        async with OpcUaPlc(url, client=client) as plc:  # it connects the client
            return str(await plc.read("RecipeInUse.Name"))

    async def the_clients(url: str) -> None:
        assert await connect(url, password="line-4-secret") == "alpha"
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await connect(url, password="line-4-secreT")
        with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
            await connect(url, password=None)  # anonymous
        with pytest.raises((ua.UaError, ConnectionError, TimeoutError, OSError)):
            await connect(url, password="line-4-secret", secure=False)  # no encryption

    with serving(recipe, settings) as (_host, _plc, server):
        asyncio.run(the_clients(server.url))
        assert server.users.refused == 1


# -- lifecycle and configuration ----------------------------------------------------------------


def test_server_stops_cleanly_and_refuses_what_it_cannot_serve(tiny_models: Path,
                                                               tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 2)
    port = free_port()
    recipe = load_recipe(ua_recipe(tmp_path, tiny_models, name="alpha", number=1, port=port,
                                   frames=frames))
    before = {t.ident for t in threading.enumerate()}
    host = StationHost(recipe)
    plc = PlcHandshake(host)
    try:
        with pytest.raises(OpcUaStartError, match="only served on loopback"):
            OpcUaServer(plc, endpoint="opc.tcp://0.0.0.0:4840/station")
        with pytest.raises(OpcUaStartError, match="opcua.endpoint = 'http://x': expected"):
            OpcUaServer(plc, endpoint="http://x")
        server = OpcUaServer(plc)
        server.start()
        assert server.url == f"opc.tcp://127.0.0.1:{port}/station"
        second = OpcUaServer(plc)  # the port is taken: refused with the key and the reason
        with pytest.raises(OpcUaStartError, match=rf"opcua.endpoint = .*:{port}.*cannot listen"):
            second.start()

        async def read_state() -> str:
            async with OpcUaPlc(server.url) as client:
                return str(await client.read("State"))

        assert asyncio.run(read_state()) == "Idle"
        server.stop()
        with socket.socket() as s:  # nothing listens there any more (as a server binds it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
        with pytest.raises((ConnectionError, OSError, TimeoutError)):
            asyncio.run(read_state())
        server.start()  # and it starts again
        assert asyncio.run(read_state()) == "Idle"
        server.stop()
    finally:
        plc.close()
        host.close()
    assert wait_for(lambda: {t.ident for t in threading.enumerate()} <= before, 10.0), \
        [t.name for t in threading.enumerate() if t.ident not in before]


def test_station_run_headless_serves_opcua_from_the_flag(tiny_models: Path,
                                                          tmp_path: Path) -> None:
    """``station run --headless --opcua ENDPOINT``: a PLC triggers and acknowledges parts
    over the flag's endpoint; Ctrl-C ends it cleanly. A taken port: one line, exit 2."""
    frames = part_frames(tmp_path / "frames", 6)
    recipe = ua_recipe(tmp_path, tiny_models, name="alpha", number=1, port=1, frames=frames)
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/line4"
    base = [sys.executable, "-m", "station", "run", "--recipe", str(recipe), "--headless",
            "--quiet"]
    proc = subprocess.Popen(base + ["--opcua", url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    async def the_plc() -> list[str]:
        deadline = time.monotonic() + 180.0
        while True:  # the station loads its models and starts its server first
            if proc.poll() is not None:
                return []
            try:
                async with OpcUaPlc(url, timeout=20.0) as plc:
                    return [(await plc.cycle())[0]["PartId"] for _ in range(3)]
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    try:
        parts = asyncio.run(the_plc())
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert len(parts) == 3, err
    assert proc.returncode == 0, err
    assert f"opcua on {url}" in out
    assert "inspected 3 parts" in out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = subprocess.run(base + ["--seconds", "1", "--opcua",
                                      f"opc.tcp://127.0.0.1:{busy}/station"],
                              capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"station run: {recipe}: opcua.endpoint = 'opc.tcp://127.0.0.1:{busy}/station': "
        f"cannot listen on 127.0.0.1:{busy}")
    assert "Traceback" not in done.stderr


# -- the latency `station bench` reports ---------------------------------------------------------


def test_bench_measures_trigger_to_result_valid(tiny_models: Path, tmp_path: Path) -> None:
    """``station bench``'s OPC UA figure: a real client, one Trigger per part, every part
    acknowledged; the engine's own latency beside it; nothing left running."""
    frames = part_frames(tmp_path / "frames", 4)
    recipe = load_recipe(ua_recipe(tmp_path, tiny_models, name="alpha", number=1,
                                   port=free_port(), frames=frames, trigger="hardware"))
    before = {t.ident for t in threading.enumerate()}
    rep = measure_opcua_latency(recipe, parts=12, warmup=2)
    assert (rep.protocol, rep.parts, rep.refused) == ("opcua", 12, 0)
    assert 0.0 < rep.p50_ms <= rep.p99_ms <= rep.max_ms < 10_000.0
    assert 0.0 < rep.verdict_p50_ms <= rep.verdict_p99_ms, "the engine's own latency"
    assert "opcua: trigger -> result-valid over 12 parts: p50" in rep.line()
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    assert db.execute("SELECT count(*) FROM parts").fetchone()[0] == 14, \
        "one part per trigger, warm-up included"
    assert wait_for(lambda: {t.ident for t in threading.enumerate()} <= before, 10.0), \
        [t.name for t in threading.enumerate() if t.ident not in before]


def test_docs_show_the_node_layout_the_server_builds() -> None:
    doc = (REPO / "docs" / "opcua.md").read_text()
    assert layout_markdown() in doc, "docs/opcua.md: paste station.plant.opcua_nodes." \
                                     "layout_markdown() over the node table"
