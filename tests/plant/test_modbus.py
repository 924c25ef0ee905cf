"""A real pymodbus client as the PLC against the station's Modbus server and a real engine:
the full handshake for every part, a changeover the PLC commands, and bad requests refused."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from station.config import load_recipe
from station.plant import PlcHandshake, StationHost
from station.plant.modbus_map import MIRROR, Coil, Input, Reg
from station.plant.modbus_server import ModbusServer, ModbusStartError
from tests.e2e.test_engine import part_frames, simulated_line, wait_for, write_recipe
from tests.plant.plc_recipes import folder_recipe

UNIT = 1


@contextlib.contextmanager
def plant(recipe: Path) -> Iterator[tuple[StationHost, PlcHandshake, ModbusServer,
                                                    ModbusTcpClient]]:
    """Host, handshake, Modbus server on a free loopback port, and a connected PLC client."""
    host = StationHost(load_recipe(recipe))
    plc = PlcHandshake(host)
    modbus = ModbusServer(plc, "127.0.0.1", 0, UNIT)
    client = None
    try:
        modbus.start()
        client = ModbusTcpClient("127.0.0.1", port=modbus.port, timeout=10, retries=1)
        assert client.connect()
        yield host, plc, modbus, client
    finally:
        if client is not None:
            client.close()
        modbus.stop()
        plc.close()
        host.close()


def inputs(client: ModbusTcpClient) -> list[bool]:
    rr = client.read_discrete_inputs(0, count=len(Input), device_id=UNIT)
    assert not rr.isError(), rr
    return rr.bits[:len(Input)]


def regs(client: ModbusTcpClient) -> list[int]:
    rr = client.read_input_registers(0, count=len(Reg), device_id=UNIT)
    assert not rr.isError(), rr
    return rr.registers


def u32(r: list[int], hi: Reg) -> int:
    return (r[hi] << 16) | r[hi + 1]


def read_result(client: ModbusTcpClient) -> dict:
    """ResultValid is 1: read the presented result, ResultAck 1, wait for ResultValid 0,
    ResultAck 0 (the four-phase handshake)."""
    r = regs(client)
    bits = inputs(client)
    result = {"seq": r[Reg.RESULT_SEQ], "part_id": str(u32(r, Reg.PART_ID_HI)),
              "code": r[Reg.RESULT_CODE], "cls": r[Reg.CLS_SCORE], "ae": r[Reg.AE_SCORE],
              "pass": bits[Input.PASS], "reject": bits[Input.REJECT]}
    assert not client.write_coil(Coil.RESULT_ACK, True, device_id=UNIT).isError()
    assert wait_for(lambda: not inputs(client)[Input.RESULT_VALID], 10.0)
    assert not client.write_coil(Coil.RESULT_ACK, False, device_id=UNIT).isError()
    return result


def test_plc_acknowledges_every_part_of_the_simulated_line(line_models: Path,
                                                           line_defects: tuple,
                                                           tmp_path: Path) -> None:
    """Free-run trigger on the simulated conveyor, the Reject bit as the reject output; the
    PLC (a pymodbus client in its own thread) takes every result through ResultValid /
    ResultAck. Every verdict matches the conveyor's truth, none is missed or read twice, and
    the Reject bit pulsed once per defective part, through the reject scheduler."""
    path = write_recipe(tmp_path, line_models, rule="classifier", camera=simulated_line(line_defects), trigger='mode = "free_run"\nline_frac = 0.5',
        reject='enabled = true\noutput = "plc"\ndelay_ms = 300\npulse_ms = 40',
        extra="[modbus]\nenabled = true\nport = 1502")
    got: list[dict] = []
    stop = threading.Event()
    with plant(path) as (host, plc, _modbus, client):
        def the_plc() -> None:
            while not stop.is_set() or inputs(client)[Input.RESULT_VALID]:
                if inputs(client)[Input.RESULT_VALID]:
                    got.append(read_result(client))
                else:
                    time.sleep(0.01)

        peer = threading.Thread(target=the_plc)
        host.start()
        assert wait_for(lambda: inputs(client)[Input.READY] or inputs(client)[Input.BUSY], 20)
        peer.start()
        time.sleep(8.0)
        engine = host.engine
        engine.stop()
        stop.set()
        peer.join(30.0)
        assert not peer.is_alive()
        time.sleep(0.6)  # the last parts reach the reject point
        results = engine.results()
        pulses = regs(client)[Reg.REJECT_PULSES]
        counts = regs(client)
        outcomes = [engine.scheduler.outcome(r.part_id) for r in results]
    assert len(results) >= 18
    assert [g["part_id"] for g in got] == [r.part_id for r in results]
    assert [g["seq"] for g in got] == list(range(1, len(results) + 1))
    for g, r in zip(got, results, strict=True):
        truth = r.truth
        assert truth is not None
        want = "REJECT" if truth.label else "PASS"
        assert r.verdict == want, f"part {r.part_id}: {r.cls_score:.2f}, truth {truth.defect}"
        assert g["code"] == {"PASS": 1, "REJECT": 2}[want]
        assert (g["pass"], g["reject"]) == (want == "PASS", want == "REJECT")
        # x1000, held at 65534 from 65.5 up (a sure classifier's odds ratio reaches millions)
        assert g["cls"] == min(round(r.cls_score * 1000), 0xFFFE) and g["ae"] == 0xFFFF
    defective = sum(1 for r in results if r.verdict == "REJECT")
    assert pulses == defective
    assert [o.action for o in outcomes if o is not None and o.action != "pass"] == \
        ["reject"] * defective
    assert u32(counts, Reg.INSPECTED_HI) == len(results)
    assert u32(counts, Reg.REJECTED_HI) == defective


def raw_request(port: int, pdu: bytes) -> bytes:
    """One Modbus TCP frame (transaction 7, unit 1) on its own connection; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(struct.pack(">HHHB", 7, 0, len(pdu) + 1, UNIT) + pdu)
        return raw.recv(300)


def trigger_part(client: ModbusTcpClient) -> dict:
    """The PLC waits for Ready, triggers, waits for ResultValid and takes the result."""
    assert wait_for(lambda: inputs(client)[Input.READY], 20.0), regs(client)
    assert not client.write_coil(Coil.TRIGGER, True, device_id=UNIT).isError()
    triggered = str(u32(regs(client), Reg.TRIGGER_PART_HI))
    assert wait_for(lambda: inputs(client)[Input.RESULT_VALID], 20.0)
    result = read_result(client)
    assert result["part_id"] == triggered
    return result


def test_plc_triggers_changes_recipe_mid_run_and_bad_requests_are_refused(
        tiny_models: Path, tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 6)
    first = folder_recipe(tmp_path, tiny_models, name="alpha", frames=frames)
    folder_recipe(tmp_path, tiny_models, name="bravo", number=12, frames=frames)
    broken = folder_recipe(tmp_path, tiny_models, name="charlie", number=13, frames=frames)
    broken.write_text(broken.read_text().replace('rule = "either"', 'rule = "both"\n'
                                                 'autoencoder_threshold = -1'))
    with plant(first) as (host, _plc, _modbus, client):
        host.start()
        before = [trigger_part(client) for _ in range(3)]
        assert regs(client)[Reg.RECIPE_NUMBER] == 1

        # bad requests: each refused with an exception the PLC reads, the station runs on
        rr = client.write_register(MIRROR + Reg.STATE, 1, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2, "read-only mirror"
        rr = client.write_register(5, 1, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2, "no such holding register"
        rr = client.read_input_registers(200, count=2, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2, "out-of-range address"
        rr = client.read_input_registers(len(Reg) - 1, count=5, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2, "range running off the map"
        rr = client.write_coil(7, True, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2, "no such coil"
        rr = client.write_coil(Coil.RESULT_ACK, True, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 3, "nothing to acknowledge"
        rr = client.write_register(0, 99, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 3, "unknown recipe number"
        r = regs(client)
        assert (r[Reg.RECIPE_STATUS], r[Reg.RECIPE_REQUESTED]) == (2, 99)
        rr = client.read_input_registers(0, count=1, device_id=UNIT + 1)
        assert rr.isError() and rr.exception_code == 11, "another unit id"
        # malformed and oversized frames, written by hand: an exception response each
        for pdu, code in ((struct.pack(">BHH", 4, 0, 2000), 1),  # 2000 registers at once
                          (struct.pack(">BHH", 4, 0, 0), 1),  # zero registers
                          (struct.pack(">BHHB", 16, 0, 100, 200) + bytes(200), 2),  # 100 writes
                          (b"\x63\xde\xad", 1)):  # no such function
            answer = raw_request(_modbus.port, pdu)
            assert answer[7] & 0x80 and answer[8] == code, (pdu[:1], answer)
        rr = client.write_register(0, 13, device_id=UNIT)  # charlie: refused once loaded
        assert not rr.isError()
        assert wait_for(lambda: regs(client)[Reg.RECIPE_STATUS] != 5, 60.0)
        r = regs(client)
        assert (r[Reg.RECIPE_STATUS], r[Reg.RECIPE_NUMBER]) == (4, 1)
        assert "charlie.toml" in _plc.select_reason and "decision.autoencoder_threshold" in \
            _plc.select_reason
        assert host.recipe.product.name == "alpha part" and host.engine.running
        after_bad = trigger_part(client)

        # the changeover the PLC commands, mid-run
        old = host.engine
        assert not client.write_register(0, 12, device_id=UNIT).isError()
        assert wait_for(lambda: regs(client)[Reg.RECIPE_STATUS] == 1, 60.0), regs(client)
        r = regs(client)
        assert (r[Reg.RECIPE_NUMBER], r[Reg.RECIPE_REQUESTED]) == (12, 12)
        assert client.read_holding_registers(0, count=1, device_id=UNIT).registers == [12]
        assert host.engine is not old and host.recipe.product.name == "bravo part"
        after = [trigger_part(client) for _ in range(3)]
        assert host.engine.running
    ids = [int(p["part_id"]) for p in before + [after_bad] + after]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "every part, ids continue"
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    rows = db.execute("SELECT part_id, recipe, verdict FROM parts ORDER BY rowid").fetchall()
    assert [int(r[0]) for r in rows] == ids
    assert [r[1] for r in rows] == ["alpha part"] * 4 + ["bravo part"] * 3
    codes = {"PASS": 1, "REJECT": 2, "ERROR": 3}
    assert [codes[r[2]] for r in rows] == [p["code"] for p in before + [after_bad] + after]


def test_trigger_refused_while_busy_or_self_triggered(tiny_models: Path, tmp_path: Path) -> None:
    recipe = folder_recipe(tmp_path, tiny_models, name="alpha", trigger="hardware")
    with plant(recipe) as (host, _plc, _modbus, client):
        rr = client.write_coil(Coil.TRIGGER, True, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 3
        assert regs(client)[Reg.TRIGGER_STATUS] == 3
    recipe = folder_recipe(tmp_path / "plc", tiny_models, name="alpha")
    with plant(recipe) as (host, _plc, _modbus, client):
        rr = client.write_coil(Coil.TRIGGER, True, device_id=UNIT)  # stopped: Idle
        assert rr.isError() and rr.exception_code == 6
        r = regs(client)
        assert (r[Reg.STATE], r[Reg.TRIGGER_STATUS]) == (0, 2)
        host.start()
        trigger_part(client)
        assert wait_for(lambda: inputs(client)[Input.READY], 20.0)
        assert not client.write_coil(Coil.TRIGGER, True, device_id=UNIT).isError()
        # the part is in flight or its result waits for the ack: either way not Ready
        rr = client.write_coil(Coil.TRIGGER, True, device_id=UNIT)
        if rr.isError():
            assert rr.exception_code == 6 and regs(client)[Reg.TRIGGER_STATUS] == 2
        assert wait_for(lambda: inputs(client)[Input.RESULT_VALID], 20.0)
        read_result(client)


def test_a_taken_port_is_one_clear_error(tiny_models: Path, tmp_path: Path) -> None:
    recipe = folder_recipe(tmp_path, tiny_models, name="alpha")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        host = StationHost(load_recipe(recipe))
        plc = PlcHandshake(host)
        try:
            server = ModbusServer(plc, "127.0.0.1", port)
            with pytest.raises(ModbusStartError, match=f"modbus.port = {port}: cannot listen on 127.0.0.1:{port}"):
                server.start()
            server.stop()
            assert not [t for t in threading.enumerate() if t.name == "modbus-server"]
        finally:
            plc.close()
            host.close()


def test_latency_bench_measures_every_part_and_leaves_nothing_running(
        tiny_models: Path, tmp_path: Path) -> None:
    from station.plant.latency import measure_modbus_latency

    recipe = load_recipe(folder_recipe(tmp_path, tiny_models, name="alpha", trigger="hardware",
                                       reject='enabled = true\nport = "loop://"'))
    before = {t.name for t in threading.enumerate()}
    rep = measure_modbus_latency(recipe, parts=12, warmup=2)
    assert (rep.protocol, rep.parts, rep.refused) == ("modbus", 12, 0)
    assert 0.0 < rep.p50_ms <= rep.p99_ms <= rep.max_ms < 10_000.0
    assert 0.0 < rep.verdict_p50_ms <= rep.verdict_p99_ms, "the engine's own latency"
    assert "modbus: trigger -> result-valid over 12 parts: p50" in rep.line()
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    triggers = [r[0] for r in db.execute("SELECT count(*) FROM parts")]
    assert triggers == [14], "one part per trigger, warm-up included"
    assert wait_for(lambda: {t.name for t in threading.enumerate()} <= before | {"MainThread"},
                    10.0), {t.name for t in threading.enumerate()} - before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station_with_plc(args: list[str], port: int, *, sigint: bool,
                     env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m station ARGS`` as a process; a PLC on ``port`` triggers a part, selects
    recipe 2 and triggers another. Ends it with SIGINT (or lets its --seconds run out);
    returns (exit code, stdout, stderr)."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "station", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=1)
    try:
        assert wait_for(lambda: proc.poll() is not None or client.connect(), 120.0)
        assert proc.poll() is None, proc.communicate()
        trigger_part(client)
        assert not client.write_register(0, 2, device_id=UNIT).isError()
        assert wait_for(lambda: regs(client)[Reg.RECIPE_STATUS] == 1, 60.0), regs(client)
        assert regs(client)[Reg.RECIPE_NUMBER] == 2
        trigger_part(client)
    finally:
        client.close()
        if sigint:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_station_run_headless_serves_modbus_from_the_flag(tiny_models: Path,
                                                           tmp_path: Path) -> None:
    """``station run --headless --modbus HOST:PORT``: the PLC triggers parts and changes the
    recipe over the flag's port (the recipe names another), and Ctrl-C ends it cleanly."""
    frames = part_frames(tmp_path / "frames", 6)
    first = folder_recipe(tmp_path, tiny_models, name="alpha", frames=frames, port=1)
    folder_recipe(tmp_path, tiny_models, name="bravo", frames=frames, port=1)
    port = free_port()
    code, out, err = station_with_plc(["run", "--recipe", str(first), "--headless", "--quiet",
                                       "--modbus", f"127.0.0.1:{port}"], port, sigint=True)
    assert code == 0, err
    assert f"modbus on 127.0.0.1:{port}" in out
    assert "recipe changed to bravo.toml (bravo part)" in out
    assert "inspected 1 parts" in out  # the summary is the engine running at the end


def test_station_run_refuses_a_bad_modbus_flag_and_a_taken_port(tiny_models: Path,
                                                                 tmp_path: Path) -> None:
    import subprocess
    import sys

    recipe = folder_recipe(tmp_path, tiny_models, name="alpha")
    base = [sys.executable, "-m", "station", "run", "--recipe", str(recipe), "--headless",
            "--seconds", "1"]
    proc = subprocess.run(base + ["--modbus", "127.0.0.1"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "--modbus: '127.0.0.1': expected HOST:PORT with a port 1..65535" in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(base + ["--modbus", f"127.0.0.1:{port}"], capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (f"station run: {recipe}: modbus.port = {port}: cannot listen on "
                         f"127.0.0.1:{port} (address in use or not an address of this machine)")
    assert "Traceback" not in proc.stderr


# -- the operator window serves the PLC too ---------------------------------------------------


def first_part_verdict(result: dict) -> str:
    return {1: "PASS", 2: "REJECT", 3: "ERROR"}[result["code"]]


def test_the_window_follows_the_recipe_the_plc_selects(qtbot, tiny_models: Path,
                                                       tmp_path: Path) -> None:
    """A window over a host with a Modbus server: the PLC triggers parts while the operator
    watches, selects another recipe, and the window shows it (engineer mode locks)."""
    from station.plant.services import PlantServices
    from station.ui.main_window import MainWindow

    frames = part_frames(tmp_path / "frames", 6)
    port = free_port()
    first = folder_recipe(tmp_path, tiny_models, name="alpha", frames=frames, port=port)
    folder_recipe(tmp_path, tiny_models, name="bravo", number=12, frames=frames, port=port)
    host = StationHost(load_recipe(first))
    services = PlantServices(host)
    services.start()
    window = MainWindow(host.engine, host=host)
    qtbot.addWidget(window)
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=1)
    try:
        assert client.connect()
        host.start()
        first_part = trigger_part(client)
        qtbot.waitUntil(lambda: window.verdict.verdict == first_part_verdict(first_part),
                        timeout=20000)  # the PLC's part on the operator's tile
        window.engineer_unlocked = True  # as if unlocked for the old recipe
        assert not client.write_register(0, 12, device_id=UNIT).isError()
        assert wait_for(lambda: regs(client)[Reg.RECIPE_STATUS] == 1, 60.0), regs(client)
        qtbot.waitUntil(lambda: window.engine is host.engine, timeout=20000)
        assert window.product.text() == "bravo part"
        assert "the PLC switched the line to bravo.toml" in window.message.full_text
        assert not window.engineer_unlocked
        second_part = trigger_part(client)
        assert int(second_part["part_id"]) == int(first_part["part_id"]) + 1
    finally:
        client.close()
        services.stop()
        window.shutdown()
        host.pulse.close()
    assert not host.engine.running


def test_the_window_skips_its_polls_of_an_engine_a_plc_changeover_closed(
        qtbot, tiny_models: Path, tmp_path: Path) -> None:
    """The host closes the old engine on the PLC's thread; until the window has followed,
    its timers still hold that engine: their reads are skipped, never a traceback, and the
    window then shows the new engine's counts."""
    from station.ui.main_window import MainWindow

    frames = part_frames(tmp_path / "frames", 6)
    first = folder_recipe(tmp_path, tiny_models, name="alpha", frames=frames, trigger="hardware")
    second = folder_recipe(tmp_path, tiny_models, name="bravo", number=12, frames=frames,
                           trigger="hardware")
    host = StationHost(load_recipe(first))
    window = MainWindow(host.engine, host=host)
    qtbot.addWidget(window)
    old = host.engine
    try:
        host.start()
        qtbot.waitUntil(lambda: old.counts()["inspected"] >= 2, timeout=20000)
        host.engine_changed.disconnect(window._relay_host)  # the GUI has not followed yet
        assert host.change_to(second).ok
        assert host.engine is not old and window.engine is old
        window.refresh_counts()  # each would read the closed records
        window.refresh_stats()
        window.refresh_alarms()
        window._on_host_changed(host.engine)  # ... and then it follows
        assert window.engine is host.engine and window.product.text() == "bravo part"
        qtbot.waitUntil(lambda: host.engine.counts()["inspected"] >= 1, timeout=20000)
        window.refresh_counts()
    finally:
        window.shutdown()
        host.pulse.close()


def test_the_status_bar_shows_the_plant_links(qtbot, tiny_models: Path, tmp_path: Path) -> None:
    """The operator's status bar says what the station serves the plant, and turns red for
    the links that need a look: a broker that is down, a PLC that stopped acknowledging
    results (the queue full); acknowledging them clears the PLC's fault."""
    from functools import partial

    from station.plant.mqtt import open_publisher
    from station.plant.services import PlantServices, link_summary
    from station.ui.main_window import MainWindow

    port, nobody = free_port(), free_port()
    mqtt = (f'[mqtt]\nenabled = true\nurl = "mqtt://127.0.0.1:{nobody}"\nplant = "p1"\n'
            f'buffer_dir = "{tmp_path / "outbox"}"\n')
    recipe = folder_recipe(tmp_path, tiny_models, name="alpha", port=port, trigger="hardware",
                           extra=mqtt)
    host = StationHost(load_recipe(recipe))
    services = PlantServices(host)
    services.start()
    publisher = open_publisher(host.recipe)
    assert publisher is not None
    window = MainWindow(host.engine, host=host, links=partial(link_summary, services, publisher))
    qtbot.addWidget(window)
    window.show()
    label = window.status.labels["plant"]
    plc = services.plc
    assert plc is not None
    try:
        qtbot.waitUntil(lambda: label.full_text == "PLC idle · MQTT down", timeout=5000)
        assert label.isVisible() and "#ff5252" in label.styleSheet()  # the broker is down
        assert f"modbus on 127.0.0.1:{port}" in label.toolTip()
        assert f"MQTT mqtt://127.0.0.1:{nobody}: " in label.toolTip()
        assert link_summary(services, None) == link_summary(services)  # the PLC alone
        assert not link_summary(services).fault, "stopped, nothing waiting: nothing to look at"
        host.start()  # the station triggers itself; nobody acknowledges
        qtbot.waitUntil(lambda: f"PLC {plc.queue_size} unacked" in label.full_text, timeout=30000)
        summary = link_summary(services)
        assert summary.fault and f"{plc.queue_size} of {plc.queue_size}" in summary.detail
        host.engine.stop()
        while (current := plc.current_result()) is not None:
            plc.acknowledge(seq=current.seq)
        assert link_summary(services).text == "PLC idle"
        assert link_summary(services).fault == (plc.overruns > 0)  # dropped results stay shown
    finally:
        services.stop()
        window.shutdown()
        publisher.close(flush_s=0)
        host.pulse.close()
    window.status.show_plant(None)  # a station that serves no plant: no field at all
    assert not label.isVisibleTo(window.status)


def test_station_run_window_serves_modbus_from_the_flag(tiny_models: Path,
                                                        tmp_path: Path) -> None:
    """``station run --modbus HOST:PORT`` without --headless: the operator window and the
    PLC handshake together; a taken port is one line and exit 2."""
    import os
    import subprocess
    import sys

    frames = part_frames(tmp_path / "frames", 6)
    first = folder_recipe(tmp_path, tiny_models, name="alpha", frames=frames, port=1)
    folder_recipe(tmp_path, tiny_models, name="bravo", frames=frames, port=1)
    port = free_port()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    code, out, err = station_with_plc(["run", "--recipe", str(first), "--seconds", "20",
                                       "--modbus", f"127.0.0.1:{port}"], port, sigint=False,
                                      env=env)
    assert code == 0, err
    assert f"station: modbus on 127.0.0.1:{port}" in out
    assert "Traceback" not in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc2 = subprocess.run([sys.executable, "-m", "station", "run", "--recipe", str(first),
                                "--seconds", "1", "--modbus", f"127.0.0.1:{busy}"],
                               capture_output=True, text=True, timeout=120, env=env)
    assert proc2.returncode == 2
    assert proc2.stderr.strip().splitlines()[-1] == (
        f"station run: {first}: modbus.port = {busy}: cannot listen on 127.0.0.1:{busy} "
        "(address in use or not an address of this machine)")
