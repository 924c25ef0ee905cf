"""Three headless stations publish to one real Mosquitto broker; the fleet window (offscreen)
shows all three inspecting, and shows one OFFLINE within seconds after it is killed with -9.

Each station is a real ``station run --headless RECIPE --mqtt URL`` process on the simulated
line with real models; its own recipe names it (``[mqtt] station``), as every station on a
plant has its own recipe. The broker notices the killed station's dropped connection and
publishes its last will; the window shows it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from station.config import MqttSection
from station.plant.fleet import FleetModel
from station.plant.fleet_client import FleetClient
from station.plant.mosquitto import Mosquitto, find_mosquitto
from station.ui.fleet import FleetWindow
from tests.e2e.test_engine import write_recipe

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[2]
NAMES = ("press-1", "press-2", "washer-3")

CAMERA = """source = "simulated"
[camera.simulated]
width = 480
height = 270
fps = 8
speed_px_s = 240
pitch_px = 240
defect_rate = 0.3
seed = {seed}"""

TRIGGER = 'mode = "free_run"\nline_frac = 0.5\ndirection = "left_to_right"'

MQTT = """
[mqtt]
plant = "p1"
line = "l1"
station = "{name}"
buffer_dir = "{folder}/mqtt"
status_interval_s = 1
keepalive_s = 2
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def stations(tmp_path: Path, tiny_models: Path, broker: Mosquitto) -> Iterator[dict]:
    """The three station processes (killed at the end, whatever happened)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "QT_QPA_PLATFORM": "offscreen"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for i, name in enumerate(NAMES):
            folder = tmp_path / name
            folder.mkdir()
            recipe = write_recipe(folder, tiny_models, camera=CAMERA.format(seed=i + 1),
                                  trigger=TRIGGER, extra=MQTT.format(name=name, folder=folder))
            log = open(folder / "station.log", "w")  # noqa: SIM115 (closed with the process)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "station", "run", "--recipe", str(recipe), "--headless", "--quiet",
                 "--seconds", "500", "--mqtt", broker.url],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {n}:\n" + (tmp_path / n / "station.log").read_text()[-1500:]
                     for n in NAMES if (tmp_path / n / "station.log").exists())


def test_three_stations_on_one_broker_and_one_killed_is_shown_offline(
        qtbot, tmp_path, broker, stations):
    model = FleetModel()
    client = FleetClient(model, MqttSection(url=broker.url))
    window = FleetWindow(model, broker.url)
    qtbot.addWidget(window)
    window.show()
    client.start()
    try:
        def all_inspecting() -> bool:
            ended = [n for n, p in stations.items() if p.poll() is not None]
            if ended:
                pytest.fail(f"station {ended} ended early:\n{_logs(tmp_path)}")
            tiles = [window.tiles.get(f"p1/l1/{n}") for n in NAMES]
            return all(t is not None and t.snap is not None and t.snap.online
                       and t.snap.results >= 2 and t.snap.counts.get("parts", 0) >= 1
                       for t in tiles)
        try:
            qtbot.waitUntil(all_inspecting, timeout=240_000)
        except qtbot.TimeoutError:
            pytest.fail(f"not all three stations seen inspecting: "
                        f"{[(s.key, s.online, s.results) for s in model.stations()]}\n"
                        f"{_logs(tmp_path)}")
        for name in NAMES:
            tile = window.tiles[f"p1/l1/{name}"]
            assert tile.badge.text().strip() == "ONLINE"
            assert tile.what.full_text == "running · recipe", tile.what.full_text  # its file
        assert window.summary.text() == "3 stations · 3 online · 0 offline"

        victim = window.tiles["p1/l1/press-2"]
        os.kill(stations["press-2"].pid, signal.SIGKILL)
        killed = time.monotonic()
        qtbot.waitUntil(lambda: victim.snap is not None and not victim.snap.online,
                        timeout=30_000)
        took = time.monotonic() - killed
        print(f"press-2 shown offline {took:.1f} s after kill -9")
        assert took < 10.0
        assert victim.badge.text().strip() == "OFFLINE"
        qtbot.waitUntil(lambda: window.summary.text() == "3 stations · 2 online · 1 offline",
                        timeout=5000)
        for name in ("press-1", "washer-3"):  # the others keep going
            assert window.tiles[f"p1/l1/{name}"].snap.online
        qtbot.mouseClick(window.tiles["p1/l1/press-1"], Qt.MouseButton.LeftButton)
        assert window.detail.key == "p1/l1/press-1"
        assert model.ignored_total == 0  # the stations' own messages are all read
    finally:
        client.stop()
        window.shutdown()
