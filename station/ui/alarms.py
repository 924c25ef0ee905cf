"""The alarm banner: red, blinking, across the top of the window, one row per alarm, each with
an Acknowledge button. An alarm leaves only when the operator acknowledges it (recorded with
who and when); one whose condition has gone turns amber but stays until acknowledged."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from station.ui import theme

TITLES = {
    "camera_lost": "CAMERA LOST",
    "serial_lost": "SERIAL LINK LOST",
    "reject_streak": "REJECTS IN A ROW",
    "model_error": "MODEL ERROR",
    "image_quality": "IMAGE QUALITY",
    "records": "RECORDS",
}


class AlarmRow(QWidget):
    """One alarm: its title, message, time and the Acknowledge button."""

    def __init__(self, alarm: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alarm = alarm
        title = TITLES.get(alarm.kind, alarm.kind.upper().replace("_", " "))
        self.title = QLabel(title)
        font = QFont()
        font.setPointSize(20)
        font.setBold(True)
        self.title.setFont(font)
        self.message = QLabel()
        self.message.setWordWrap(True)
        mfont = QFont()
        mfont.setPointSize(14)
        self.message.setFont(mfont)
        self.ack = QPushButton("Acknowledge")
        self.ack.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.ack.setMinimumHeight(40)
        self.ack.setStyleSheet("QPushButton { background: #ffffff; color: #111; font-size: 17px;"
                               " font-weight: bold; }")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 2, 8, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.message, 1)
        layout.addWidget(self.ack)
        self.update_alarm(alarm)

    def update_alarm(self, alarm: Any) -> None:
        self.alarm = alarm
        stamp = time.strftime("%H:%M:%S", time.localtime(alarm.time))
        state = "" if alarm.active else "  (condition cleared — acknowledge to dismiss)"
        self.message.setText(f"{stamp}  {alarm.message}{state}")


class AlarmBanner(QWidget):
    """Shows ``engine.alarms()``; hidden when there is none. ``acknowledged`` carries the id."""

    acknowledge_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.rows: dict[int, AlarmRow] = {}
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.setSpacing(2)
        self._blink = False
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._toggle)
        self._timer.start(500)
        self.setVisible(False)
        self._paint()

    def set_alarms(self, alarms: list[Any]) -> None:
        """Show exactly these alarms (oldest first)."""
        ids = {a.id for a in alarms}
        for alarm_id in list(self.rows):
            if alarm_id not in ids:
                row = self.rows.pop(alarm_id)
                self._layout.removeWidget(row)
                row.deleteLater()
        for alarm in alarms:
            known = self.rows.get(alarm.id)
            if known is None:
                row = AlarmRow(alarm, self)
                row.ack.clicked.connect(lambda _=False, i=alarm.id: self.acknowledge_requested.emit(i))
                self.rows[alarm.id] = row
                self._layout.addWidget(row)
            else:
                known.update_alarm(alarm)
        self.setVisible(bool(self.rows))
        self._paint()

    @property
    def active(self) -> bool:
        return any(r.alarm.active for r in self.rows.values())

    def _toggle(self) -> None:
        if self.rows:
            self._blink = not self._blink
            self._paint()

    def _paint(self) -> None:
        if self.active:
            bg = theme.ALARM_BG_BLINK if self._blink else theme.ALARM_BG
        else:
            bg = theme.ALARM_CLEARED_BG
        fg = "#ffffff" if self.active else "#111111"
        self.setStyleSheet(f"AlarmBanner {{ background: {bg}; border-radius: 6px; }}"
                           f"AlarmBanner QLabel {{ background: transparent; color: {fg}; }}")
