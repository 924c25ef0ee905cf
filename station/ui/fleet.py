"""``station fleet``: one window with every station the broker knows.

A tile per station (``station.ui.fleet_tile``), the selected station's trend and recent
rejects beside them (``station.ui.fleet_detail``), the broker's state on top. The model
(``station.plant.fleet``) is fed on paho's thread; :class:`FleetBridge` brings its events to
the GUI thread, the way ``station.ui.bridge`` does for the engine.
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from station.config import MqttSection
from station.plant.fleet import FleetEvents, FleetModel, StationSnapshot
from station.plant.fleet_client import BrokerState, FleetClient
from station.ui import theme
from station.ui.fleet_detail import StationDetail
from station.ui.fleet_tile import StationTile
from station.ui.scaling import fit_to_screen, scale_fonts, scale_for
from station.ui.status_bar import ElidedLabel

TILE_WIDTH = 290  # a column of tiles per this many pixels of the tiles' area
BROKER_OK = "#66bb6a"


class FleetBridge(QObject):
    """Re-emits the model's events as Qt signals on the GUI thread. A burst of messages from
    one station is one update (its latest snapshot), so a busy line never floods the window."""

    station = Signal(object)  # StationSnapshot
    broker = Signal(object)  # BrokerState
    ignored = Signal(str)

    def __init__(self, events: FleetEvents, parent: QObject | None = None,
                 interval_ms: int = 50) -> None:
        super().__init__(parent)
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._events = events
        self._relays = [(events.station, self._put("station")), (events.broker, self._put("broker")),
                        (events.ignored, self._put("ignored"))]
        for source, relay in self._relays:
            source.connect(relay)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.drain)
        self._timer.start(interval_ms)

    def _put(self, kind: str) -> Any:
        def relay(payload: Any) -> None:
            self._queue.put((kind, payload))
        return relay

    def detach(self) -> None:
        for source, relay in self._relays:
            source.disconnect(relay, missing_ok=True)
        self._timer.stop()

    def drain(self) -> None:
        """Deliver what is queued (GUI thread), the latest snapshot per station."""
        latest: dict[str, StationSnapshot] = {}
        for _ in range(2000):
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "station":
                latest[payload.key] = payload
            elif kind == "broker":
                self.broker.emit(payload)
            else:
                self.ignored.emit(payload)
        for snap in latest.values():
            self.station.emit(snap)


class FleetWindow(QMainWindow):
    """``FleetWindow(model, url)``: tiles appear as stations are heard; ``select(key)`` (or a
    click on a tile) shows that station's rejects."""

    def __init__(self, model: FleetModel, url: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.url = url
        self.tiles: dict[str, StationTile] = {}
        self.selected: str | None = None
        self.scale = 0.0
        self.columns = 0
        self.setWindowTitle(f"Station fleet — {url}")
        self.setStyleSheet(theme.STYLE)
        base = self.font()
        base.setPointSize(theme.BASE_POINT_SIZE)
        self.setFont(base)
        self._build()
        self.bridge = FleetBridge(model.events, self)
        self.bridge.station.connect(self.on_station)
        self.bridge.broker.connect(self.on_broker)
        self.bridge.ignored.connect(self.on_ignored)
        fit_to_screen(self)
        self.split.setSizes([round(self.width() * 0.58), round(self.width() * 0.42)])
        self.apply_scale(scale_for(self.size()))
        self.on_broker(BrokerState(False, f"connecting to {url}"))
        for snap in model.stations():
            self.on_station(snap)
        self._show_summary()

    def _build(self) -> None:
        self.summary = QLabel("no stations heard yet")
        font = self.summary.font()
        font.setPointSize(18)
        font.setBold(True)
        self.summary.setFont(font)
        self.broker_label = ElidedLabel()
        self.broker_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top = QHBoxLayout()
        top.setContentsMargins(10, 6, 10, 6)
        top.addWidget(self.summary)
        top.addWidget(self.broker_label, 1)
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(6, 6, 6, 6)
        self.grid.setSpacing(8)
        self.empty = QLabel(f"waiting for stations on {self.url} …")
        self.empty.setStyleSheet(f"color: {theme.MUTED};")
        self.grid.addWidget(self.empty, 0, 0)
        self.tile_area = QScrollArea()
        self.tile_area.setWidgetResizable(True)
        self.tile_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.tile_area.setWidget(self.grid_host)
        self.tile_area.viewport().installEventFilter(self)
        self.detail = StationDetail()
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(self.tile_area)
        self.split.addWidget(self.detail)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        self.split.setChildrenCollapsible(False)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.split, 1)
        self.setCentralWidget(body)
        self.ignored_label = ElidedLabel("no bad messages")
        status = QStatusBar()
        status.addWidget(self.ignored_label, 1)
        self.setStatusBar(status)

    # -- events (GUI thread) ------------------------------------------------------------------
    def on_station(self, snap: StationSnapshot) -> None:
        tile = self.tiles.get(snap.key)
        if tile is None:
            tile = StationTile(snap.key)
            tile.clicked.connect(self.select)
            self.tiles[snap.key] = tile
            if self.scale:
                scale_fonts(tile, self.scale)
            self.relayout(force=True)
        tile.show_station(snap)
        if self.selected is None:  # the detail is never empty once a station is heard
            self.select(snap.key)
        elif snap.key == self.selected:
            self.detail.show_station(snap)
        self._show_summary()

    def select(self, key: str) -> None:
        """Show ``key``'s trend and recent rejects beside the tiles."""
        snap = self.model.station(key)
        if snap is None:
            return
        self.selected = key
        for k, tile in self.tiles.items():
            tile.set_selected(k == key)
        self.detail.show_station(snap)

    def on_broker(self, state: BrokerState) -> None:
        self.broker_state = state
        self.broker_label.setText(("● " if state.connected else "⚠ ") + state.text)
        self.broker_label.setStyleSheet(
            f"color: {BROKER_OK};" if state.connected else
            f"background: {theme.ALARM_BG}; color: #ffffff; padding: 4px 8px; font-weight: bold;")

    def on_ignored(self, line: str) -> None:
        self.ignored_label.setText(f"{self.model.ignored_total} bad messages ignored — "
                                   f"latest: {line}")

    def _show_summary(self) -> None:
        snaps = [t.snap for t in self.tiles.values() if t.snap is not None]
        online = sum(1 for s in snaps if s.online)
        if snaps:
            self.summary.setText(f"{len(snaps)} station{'s' if len(snaps) != 1 else ''} · "
                                 f"{online} online · {len(snaps) - online} offline")

    # -- layout ----------------------------------------------------------------------------------
    def relayout(self, force: bool = False) -> None:
        """Tiles in as many columns as the tiles' area holds, in the order of their names."""
        width = self.tile_area.viewport().width()
        need = max([TILE_WIDTH * (self.scale or 1.0)]
                   + [t.minimumSizeHint().width() + self.grid.spacing() for t in self.tiles.values()])
        columns = max(1, int(width // need))
        if not force and columns == self.columns:
            return
        self.columns = columns
        self.empty.setVisible(not self.tiles)
        for tile in self.tiles.values():
            self.grid.removeWidget(tile)
        for i, key in enumerate(sorted(self.tiles)):
            row, col = divmod(i, columns)
            self.grid.addWidget(self.tiles[key], row, col)
        for col in range(self.grid.columnCount()):
            self.grid.setColumnStretch(col, 1 if col < columns else 0)
        rows = (len(self.tiles) + columns - 1) // columns
        for row in range(self.grid.rowCount()):  # the tiles at the top, the space below
            self.grid.setRowStretch(row, 1 if row >= rows else 0)
        self.grid.setRowStretch(max(rows, 1), 1)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if obj is self.tile_area.viewport() and event.type() == QEvent.Type.Resize:
            self.relayout()
        return super().eventFilter(obj, event)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self.apply_scale(scale_for(event.size()))

    def apply_scale(self, scale: float) -> None:
        if scale != self.scale:
            self.scale = scale
            scale_fonts(self, scale)
            self.detail.table.resizeColumnsToContents()
            self.relayout(force=True)

    def shutdown(self) -> None:
        self.bridge.detach()


def run_fleet(options: MqttSection, *, seconds: float | None = None,
              screenshot: Path | None = None,
              on_broker: Callable[[BrokerState], None] | None = None) -> int:
    """Open the fleet window on the broker of ``options`` (a station's [mqtt] keys; its
    ``topic_root`` too) until it is closed (or ``seconds`` pass);
    ``screenshot`` saves the window as a PNG just before quitting; ``on_broker`` hears each
    change of the broker's state (from the MQTT thread: the command prints it)."""
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Station fleet")
    model = FleetModel(options.topic_root)
    client = FleetClient(model, options)
    window = FleetWindow(model, options.url)
    window.show()
    if on_broker is not None:
        model.events.broker.connect(on_broker)
    client.start()
    started = time.monotonic()

    def finish() -> None:
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(screenshot))
            print(f"station fleet: screenshot saved to {screenshot}", flush=True)
        stations = model.stations()
        print(f"station fleet: {time.monotonic() - started:.0f} s; {len(stations)} stations, "
              f"{sum(s.online for s in stations)} online; {model.ignored_total} bad messages "
              "ignored", flush=True)
        window.close()
        app.quit()

    if seconds is not None:
        QTimer.singleShot(int(seconds * 1000), finish)
    try:
        code = app.exec()
    finally:
        window.shutdown()
        client.stop()
    QCoreApplication.removePostedEvents(app, QEvent.Type.Quit)
    return int(code)
