"""The selected station in the fleet window: its reject-rate trend and its recent rejects
(part id, time, verdict, reason, scores, image reference), from the result messages.

Like the station's own rejects browser, but the rows come from the broker, not the records:
the images stay on the station, so the detail names them (the reference the station sent).
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QLabel,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.plant.fleet import ResultMessage, StationSnapshot
from station.ui import theme
from station.ui.fleet_tile import TREND_PEN
from station.ui.formatting import score_text

COLUMNS = ("time", "part", "verdict", "reason", "anomaly", "defect", "image")
MODEL_COLUMNS = {"anomaly": "autoencoder", "defect": "classifier"}


def _normalized(result: ResultMessage, model: str) -> str:
    score = result.scores.get(model)
    return score_text(None if score is None else score.normalized)


def image_reference(result: ResultMessage) -> str:
    """The picture to look at on the station: its crop, else its frame, else "—"."""
    for kind in ("crop", "frame"):
        if result.images.get(kind):
            return str(result.images[kind])
    return next((str(v) for v in result.images.values() if v), "—")


def row_values(result: ResultMessage) -> tuple[str, ...]:
    when = result.time or ""
    return (when[11:19] if len(when) >= 19 else when or "—", result.part_id, result.verdict,
            result.reason or "—", _normalized(result, "autoencoder"),
            _normalized(result, "classifier"), image_reference(result))


def describe(result: ResultMessage) -> str:
    """Everything the station said about one part, as rich text."""
    e = html.escape
    scores = "; ".join(
        f"{e(model)} {score_text(s.normalized)} (raw {'—' if s.raw is None else f'{s.raw:.4g}'})"
        for model, s in result.scores.items()) or "no scores"
    images = "<br>".join(f"{e(kind)}: {e(path) if path else '— (not saved)'}"
                         for kind, path in result.images.items()) or "no images"
    fired = {True: "fired", False: "not fired", None: "not known"}[result.reject_fired]
    versions = ", ".join(f"{e(k)} {e(v)}" for k, v in result.model_versions.items()) or "—"
    latency = "—" if result.latency_ms is None else f"{result.latency_ms:.1f} ms"
    return (f"<b>part {e(result.part_id)}</b> — {e(result.verdict)} at {e(result.time or '—')}"
            f"{'' if result.seq is None else f' (message {result.seq})'}<br>"
            f"reason: {e(result.reason or '—')}<br>scores (1.00 = threshold): {scores}<br>"
            f"reject output: {fired} · latency {latency} · recipe {e(result.recipe or '—')}<br>"
            f"models: {versions}<br><b>images on the station</b><br>{images}")


class StationDetail(QWidget):
    """``show_station(snapshot)``: the trend and the rejects table of one station."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key: str | None = None
        self.rows: tuple[ResultMessage, ...] = ()
        self.title = QLabel("click a station to see its recent rejects")
        font = self.title.font()
        font.setPointSize(15)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setWordWrap(True)
        self.plot = pg.PlotWidget(background="#1c262b",
                                  axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.plot.setTitle("Reject rate, last 20 parts", color=theme.TEXT, size="10pt")
        self.plot.setLabel("left", "%", color=theme.MUTED)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.setYRange(0, 100, padding=0.05)
        self.plot.setMinimumHeight(90)
        self.curve = self.plot.plot(pen=pg.mkPen(TREND_PEN, width=2), symbol="o", symbolSize=4,
                                    symbolBrush=TREND_PEN, symbolPen=None)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        self.detail.setTextFormat(Qt.TextFormat.RichText)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        detail_area = QScrollArea()  # a long reference or model name never cuts the rest
        detail_area.setWidgetResizable(True)
        detail_area.setFrameShape(QFrame.Shape.NoFrame)
        detail_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        detail_area.setWidget(self.detail)
        split.addWidget(detail_area)
        split.setSizes([150, 260, 150])
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(split, 1)

    def show_station(self, snap: StationSnapshot) -> None:
        """Show ``snap``; the same station again keeps the row chosen when rows are new."""
        same = snap.key == self.key
        self.key = snap.key
        state = "ONLINE" if snap.online else f"OFFLINE ({snap.why_offline})"
        self.title.setText(f"{snap.name} — {state} — {len(snap.rejects)} recent "
                           f"reject{'s' if len(snap.rejects) != 1 else ''} / errors")
        if snap.trend:
            t = np.asarray([p[0] for p in snap.trend], dtype=float)
            self.curve.setData(t, np.asarray([100.0 * p[1] for p in snap.trend], dtype=float))
        else:
            self.curve.setData([], [])
        if same and snap.rejects == self.rows:
            return
        # a row the user chose stays chosen; else the newest is shown, as rejects come in
        chosen = self._chosen() if same else None
        self.rows = snap.rejects
        self.table.setRowCount(len(self.rows))
        for i, result in enumerate(self.rows):
            for j, value in enumerate(row_values(result)):
                item = QTableWidgetItem(value)
                if j == 2:
                    item.setBackground(pg.mkColor(theme.VERDICT_BG.get(value, theme.IDLE_BG)))
                    item.setForeground(pg.mkColor(theme.TEXT_ON_COLOUR.get(value, "#111111")))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        keep = next((i for i, r in enumerate(self.rows) if chosen is not None
                     and (r.seq, r.part_id) == chosen), 0)
        if self.rows:
            self.table.selectRow(keep)
            self._show_selected()  # the same row number may now hold another part
        else:
            self.detail.setText("no rejects received from this station yet")

    def _chosen(self) -> tuple[int | None, str] | None:
        sel = self.table.selectionModel().selectedRows()
        if not sel or sel[0].row() == 0 or sel[0].row() >= len(self.rows):
            return None
        r = self.rows[sel[0].row()]
        return r.seq, r.part_id

    def _show_selected(self) -> None:
        sel = self.table.selectionModel().selectedRows()
        if sel and sel[0].row() < len(self.rows):
            self.detail.setText(describe(self.rows[sel[0].row()]))
