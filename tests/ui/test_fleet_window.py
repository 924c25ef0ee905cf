"""The fleet window (offscreen, pytest-qt) on a real Mosquitto broker: stations appear as
they publish, ONLINE / OFFLINE is shown in colour and in words, a click on a station shows
its recent rejects, a broker that is down is said on screen, and the window stays readable
from 1024x600 to 1920x1080."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QWidget

from station.config import MqttSection
from station.plant.fleet import FleetModel
from station.plant.fleet_client import FleetClient
from station.plant.mosquitto import Mosquitto, find_mosquitto, free_port
from station.ui import theme
from station.ui.fleet import FleetWindow
from station.ui.fleet_tile import OFFLINE_BG, ONLINE_BG, StationTile
from tests.plant.test_fleet import Station

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def open_window(qtbot) -> Iterator[Callable[[str], FleetWindow]]:
    """``open_window(url)``: the fleet window following that broker (closed afterwards)."""
    opened: list[tuple[FleetWindow, FleetClient]] = []

    def make(url: str) -> FleetWindow:
        model = FleetModel()
        client = FleetClient(model, MqttSection(url=url))
        window = FleetWindow(model, url)
        qtbot.addWidget(window)
        window.show()
        client.start()
        opened.append((window, client))
        return window

    yield make
    for window, client in opened:
        client.stop()
        window.shutdown()


@pytest.fixture
def three(broker: Mosquitto) -> Iterator[list[Station]]:
    """Three stations on the broker (they publish in ``_open_on_fleet``)."""
    stations = [Station(broker, "press-1"), Station(broker, "press-2"), Station(broker, "washer-3")]
    yield stations
    for s in stations:
        s.client.disconnect()
        s.client.loop_stop()


def _open_on_fleet(qtbot, open_window, broker: Mosquitto, three: list[Station]) -> FleetWindow:
    """The window, once connected, on three stations: two running (one with rejects, one
    with an alarm), one that has shut down. (Results are not retained: a view sees the
    parts inspected while it runs.)"""
    window = open_window(broker.url)
    qtbot.waitUntil(lambda: window.broker_state.connected, timeout=20000)
    a, b, c = three
    a.status(counts={"parts": 120, "passed": 114, "rejected": 5, "errors": 1}, **{"yield": 0.95})
    b.status(recipe="bracket", alarms=[{"kind": "camera", "message": "no frames for 2 s",
                                        "since": None}])
    c.status(state="stopped")
    for i, verdict in enumerate(["PASS", "REJECT", "PASS", "REJECT", "ERROR", "PASS"]):
        a.result(f"{i + 1:06d}", verdict, reason={"REJECT": "scratch (anomaly 1.73)",
                                                  "ERROR": "no part found"}.get(verdict, ""),
                 ae=1.73 if verdict == "REJECT" else 0.3)
    c.close()

    def ready() -> bool:
        tiles = window.tiles
        return (len(tiles) == 3 and tiles["p1/l1/press-1"].snap is not None
                and tiles["p1/l1/press-1"].snap.results == 6
                and tiles["p1/l1/washer-3"].snap is not None
                and not tiles["p1/l1/washer-3"].snap.online)
    qtbot.waitUntil(ready, timeout=20000)
    return window


def test_every_station_appears_with_online_and_offline_in_colour_and_words(
        qtbot, broker, three, open_window):
    window = _open_on_fleet(qtbot, open_window, broker, three)
    press, alarmed, washer = (window.tiles[f"p1/l1/{n}"] for n in ("press-1", "press-2", "washer-3"))
    assert press.badge.text().strip() == "ONLINE" and ONLINE_BG in press.badge.styleSheet()
    assert washer.badge.text().strip() == "OFFLINE" and OFFLINE_BG in washer.badge.styleSheet()
    assert "connection lost or shut down" in washer.where.full_text
    assert press.what.full_text == "running · demo" and alarmed.what.full_text == "running · bracket"
    assert [press.numbers[k].text() for k in ("parts", "passed", "rejected", "errors", "yield")] \
        == ["120", "114", "5", "1", "95.0 %"]
    assert press.verdicts.text().count("&nbsp;R&nbsp;") == 2
    assert alarmed.alarms.full_text == "⚠ 1 alarm: camera: no frames for 2 s"
    assert press.alarms.full_text == "no alarms"
    assert window.summary.text() == "3 stations · 2 online · 1 offline"
    assert window.broker_label.full_text == f"● connected to {broker.url}"
    three[1].alarm("camera", "frames again", raised=False)  # amber until acknowledged there
    qtbot.waitUntil(lambda: alarmed.alarms.full_text
                    == "1 alarm cleared, not acknowledged: camera", timeout=20000)
    assert theme.ALARM_CLEARED_BG in alarmed.alarms.styleSheet()


def test_clicking_a_station_shows_its_recent_rejects(qtbot, broker, three, open_window):
    window = _open_on_fleet(qtbot, open_window, broker, three)
    tile: StationTile = window.tiles["p1/l1/press-1"]
    qtbot.mouseClick(window.tiles["p1/l1/press-2"], Qt.MouseButton.LeftButton)
    assert window.detail.key == "p1/l1/press-2" and window.detail.table.rowCount() == 0
    qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)
    assert window.selected == "p1/l1/press-1" and tile.selected
    table = window.detail.table
    rows = [[table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("000005", "ERROR", "no part found"), ("000004", "REJECT", "scratch (anomaly 1.73)"),
        ("000002", "REJECT", "scratch (anomaly 1.73)")]
    assert rows[1][4] == "1.73" and rows[1][6] == "images/000004-crop.png"
    assert rows[1][0] == "01:02:03"
    table.selectRow(1)
    text = window.detail.detail.text()
    assert "part 000004" in text and "autoencoder 1.73" in text and "fired" in text
    assert "images/000004-frame.png" in text and "images/000004-crop.png" in text
    assert "3 recent rejects" in window.detail.title.text()
    three[0].result("000007", "REJECT", reason="dent")  # a new reject: on top; the part
    qtbot.waitUntil(lambda: table.rowCount() == 4, timeout=20000)  # chosen stays chosen
    assert table.item(0, 1).text() == "000007"
    assert table.selectionModel().selectedRows()[0].row() == 2
    assert "part 000004" in window.detail.detail.text()
    table.selectRow(0)  # the newest chosen: the view follows the newest
    three[0].result("000008", "ERROR", reason="no part found")
    qtbot.waitUntil(lambda: table.rowCount() == 5, timeout=20000)
    assert table.selectionModel().selectedRows()[0].row() == 0
    assert "part 000008" in window.detail.detail.text()


def test_a_broker_that_is_down_is_said_on_screen(qtbot, open_window):
    url = f"mqtt://127.0.0.1:{free_port()}"
    window = open_window(url)
    qtbot.waitUntil(lambda: "unreachable" in window.broker_label.full_text, timeout=20000)
    assert window.broker_label.full_text.startswith(f"⚠ broker {url} unreachable, retrying (")
    assert "background" in window.broker_label.styleSheet()
    assert window.tiles == {}


def test_garbage_is_counted_in_the_status_bar_and_the_window_keeps_going(
        qtbot, broker, open_window):
    window = open_window(broker.url)
    qtbot.waitUntil(lambda: window.broker_state.connected, timeout=20000)
    st = Station(broker, "st1")
    try:
        st.raw("status", b"{broken")
        st.raw("result", b"x" * 70000)
        st.status(recipe="still-read")
        qtbot.waitUntil(lambda: "p1/l1/st1" in window.tiles
                        and window.tiles["p1/l1/st1"].what.full_text.endswith("still-read"),
                        timeout=20000)
        qtbot.waitUntil(lambda: window.ignored_label.full_text.startswith("2 bad messages"),
                        timeout=20000)
        assert "station/p1/l1/st1/result: ignored: payload of 70000 bytes" \
            in window.ignored_label.full_text
    finally:
        st.client.disconnect()
        st.client.loop_stop()


def _inside(window: QWidget, widget: QWidget) -> None:
    assert widget.isVisible(), widget
    box = QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())
    assert window.rect().contains(box), (widget, box, window.rect())


@pytest.mark.parametrize("size", [QSize(1024, 600), QSize(1920, 1080)])
def test_the_window_is_readable_on_small_and_large_screens(qtbot, broker, three, open_window,
                                                           size):
    window = _open_on_fleet(qtbot, open_window, broker, three)
    window.resize(size)
    qtbot.waitUntil(lambda: window.size() == size, timeout=5000)
    qtbot.wait(100)
    assert window.columns >= 2  # at least two stations side by side
    for tile in window.tiles.values():
        assert tile.width() >= tile.minimumSizeHint().width()
        for label in (tile.badge, *tile.numbers.values()):  # never cut
            assert label.width() >= label.sizeHint().width(), label.text()
            assert label.height() >= label.sizeHint().height(), label.text()
    first = window.tiles["p1/l1/press-1"]
    for widget in (first, first.badge, first.trend, window.summary, window.detail.table,
                   window.detail.plot):
        _inside(window, widget)
    assert window.summary.width() >= window.summary.sizeHint().width()
    big = window.tiles["p1/l1/press-1"].numbers["parts"].font().pointSizeF()
    assert big >= (11 if size.width() < 1280 else 15)  # read from a metre or two


def test_the_command_says_an_unreachable_broker_in_one_line(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"
    shot = tmp_path / "fleet.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "station", "fleet", "--broker", url,
                           "--seconds", "3", "--screenshot", str(shot)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "QStandardPaths" not in line]
    assert lines[0].startswith(f"station fleet: broker {url} unreachable, retrying ("), lines
    assert "Traceback" not in done.stderr and len(lines) <= 2, lines
    assert "0 stations" in done.stdout and shot.stat().st_size > 0
