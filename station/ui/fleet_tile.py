"""One station's tile in the fleet window: who it is, ONLINE or OFFLINE (colour and word),
state, recipe, the shift's counts and yield, its latest verdicts, open alarms and a small
reject-rate trend. Clicking it shows the station's recent rejects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from station.plant.fleet import StationSnapshot
from station.ui import theme
from station.ui.status_bar import ElidedLabel

ONLINE_BG = theme.PASS_BG
OFFLINE_BG = "#757575"
OFFLINE_TILE_BG = "#212121"
SELECTED = "#29b6f6"
VERDICT_LETTER = {"PASS": "P", "REJECT": "R", "ERROR": "E"}
SHOWN_VERDICTS = 12
TREND_PEN = "#ef5350"


def yield_text(snap: StationSnapshot) -> str:
    """The station's own yield when it says it; else from its counts; "—" with no parts."""
    if snap.yield_ is not None:
        return f"{100.0 * snap.yield_:.1f} %"
    parts = snap.counts.get("parts", 0)
    return f"{100.0 * snap.counts.get('passed', 0) / parts:.1f} %" if parts else "—"


def verdict_chips(verdicts: tuple[str, ...], n: int = SHOWN_VERDICTS) -> str:
    """The latest verdicts, newest on the right, as coloured letters (colour and letter)."""
    chips = []
    for v in verdicts[-n:]:
        bg, fg = theme.VERDICT_BG.get(v, theme.IDLE_BG), theme.TEXT_ON_COLOUR.get(v, theme.TEXT)
        chips.append(f"<span style='background:{bg}; color:{fg}'>&nbsp;{VERDICT_LETTER.get(v, '?')}"
                     f"&nbsp;</span>")
    return "&thinsp;".join(chips) if chips else f"<span style='color:{theme.MUTED}'>no parts yet</span>"


def _font(points: int, bold: bool = False) -> QFont:
    font = QFont()
    font.setPointSize(points)
    font.setBold(bold)
    return font


class StationTile(QFrame):
    """``show(snapshot)`` draws the station; ``clicked(key)`` when it is clicked."""

    clicked = Signal(str)

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self.snap: StationSnapshot | None = None
        self.selected = False
        self.setObjectName("tile")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.name = ElidedLabel()
        self.name.setFont(_font(16, bold=True))
        self.badge = QLabel()
        self.badge.setFont(_font(13, bold=True))
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.where = ElidedLabel()  # plant / line · why offline
        self.what = ElidedLabel()  # state · recipe
        self.what.setFont(_font(13, bold=True))
        self.numbers: dict[str, QLabel] = {}
        self.colours: dict[str, str] = {}
        self.verdicts = QLabel()
        self.verdicts.setTextFormat(Qt.TextFormat.RichText)
        self.alarms = ElidedLabel()
        self.trend = self._sparkline()
        self._layout()
        self.setToolTip("click: this station's recent rejects")

    def _sparkline(self) -> pg.PlotWidget:
        plot = pg.PlotWidget(background="#1c262b")
        plot.setMouseEnabled(x=False, y=False)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.getPlotItem().hideAxis("bottom")
        left = plot.getPlotItem().getAxis("left")
        left.setWidth(30)
        left.setTicks([[(0, "0"), (50, "50"), (100, "100")]])
        plot.setYRange(0, 100, padding=0.05)
        plot.setFixedHeight(56)
        plot.setToolTip("reject rate over the last 20 parts, %")
        plot.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.curve = plot.plot(pen=pg.mkPen(TREND_PEN, width=1.5))
        return plot

    def _layout(self) -> None:
        head = QHBoxLayout()
        head.addWidget(self.name, 1)
        head.addWidget(self.badge)
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(0)
        for col, (key, title, colour) in enumerate((
                ("parts", "Parts", theme.TEXT), ("passed", "Pass", "#66bb6a"),
                ("rejected", "Reject", "#ef5350"), ("errors", "Error", theme.ERROR_BG),
                ("yield", "Yield", theme.TEXT))):
            caption = QLabel(title)
            caption.setStyleSheet(f"color: {theme.MUTED};")
            value = QLabel("—")
            value.setFont(_font(15, bold=True))
            grid.addWidget(caption, 0, col)
            self.colours[key] = colour
            grid.addWidget(value, 1, col)
            self.numbers[key] = value
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(3)
        layout.addLayout(head)
        layout.addWidget(self.where)
        layout.addWidget(self.what)
        layout.addLayout(grid)
        layout.addWidget(self.verdicts)
        layout.addWidget(self.alarms)
        layout.addWidget(self.trend)

    def show_station(self, snap: StationSnapshot) -> None:
        self.snap = snap
        self.name.setText(snap.name)
        online = snap.online
        self.badge.setText(" ONLINE " if online else " OFFLINE ")
        self.badge.setStyleSheet(f"background: {ONLINE_BG if online else OFFLINE_BG}; "
                                 "color: #ffffff; border-radius: 4px; padding: 2px 6px;")
        where = f"{snap.plant} / {snap.line}"
        self.where.setText(where if online else f"{where} · {snap.why_offline}")
        self.where.setStyleSheet(f"color: {theme.MUTED if online else '#ffb74d'};")
        state = (snap.state or "—").replace("_", " ")
        what = f"{state} · {snap.recipe or 'no recipe'}"
        self.what.setText(what if online else f"last seen {what}")  # not what it does now
        for key in ("parts", "passed", "rejected", "errors"):
            self.numbers[key].setText(str(snap.counts.get(key, 0)) if snap.counts else "—")
        self.numbers["yield"].setText(yield_text(snap))
        for key, label in self.numbers.items():  # an offline station's numbers are old: grey
            label.setStyleSheet(f"color: {self.colours[key] if online else theme.MUTED};")
        self.verdicts.setText(verdict_chips(snap.verdicts))
        self._show_alarms(snap)
        self._draw_trend(snap)
        self._frame()

    def _show_alarms(self, snap: StationSnapshot) -> None:
        """Red while an alarm's condition holds; amber when all are cleared but not yet
        acknowledged at the station (as its own alarm list shows them)."""
        active = [a for a in snap.alarms if a.active]
        n = len(active) or len(snap.alarms)
        plural = "s" if n > 1 else ""
        if active:
            self.alarms.setText(f"⚠ {n} alarm{plural}: {active[0].kind}: {active[0].message}")
            colours = f"background: {theme.ALARM_BG}; color: #ffffff;"
        elif snap.alarms:
            self.alarms.setText(f"{n} alarm{plural} cleared, not acknowledged: "
                                f"{snap.alarms[0].kind}")
            colours = f"background: {theme.ALARM_CLEARED_BG}; color: #1a1a1a;"
        else:
            self.alarms.setText("no alarms")
            colours = f"color: {theme.MUTED};"
        self.alarms.setStyleSheet(colours + " padding: 1px 4px;")
        self.alarms.setToolTip("\n".join(
            f"{a.kind}: {a.message}{'' if a.active else ' (cleared)'}" for a in snap.alarms)
            or "no alarms")

    def _draw_trend(self, snap: StationSnapshot) -> None:
        if not snap.trend:
            self.curve.setData([], [])
            return
        t = np.asarray([p[0] for p in snap.trend], dtype=float)
        rate = np.asarray([100.0 * p[1] for p in snap.trend], dtype=float)
        self.curve.setData(t - t[-1], rate)

    def set_selected(self, selected: bool) -> None:
        self.selected = selected
        self._frame()

    def _frame(self) -> None:
        online = self.snap is not None and self.snap.online
        border = SELECTED if self.selected else ("#546e7a" if online else OFFLINE_BG)
        style = "solid" if online or self.selected else "dashed"
        self.setStyleSheet(
            f"QFrame#tile {{ background: {theme.PANEL_BG if online else OFFLINE_TILE_BG}; "
            f"border: {3 if self.selected else 2}px {style} {border}; border-radius: 8px; }}"
            " QLabel { background: transparent; }")

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.key)
        super().mousePressEvent(event)
