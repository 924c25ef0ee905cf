"""The alarm banner: red, blinking, across the top of the window, one row per alarm, each with
an Acknowledge button. An alarm leaves only when the operator acknowledges it (recorded with
who and when); one whose condition has gone turns amber but stays until acknowledged.

Acknowledging a fault that still holds (the engine keeps it: a lost camera, a dead reject
output) quiets it, it does not hide it: the row stays, dimmed and without its button, until
the cause is gone. Rows behind the engine's line state carry its words ("NOT INSPECTING").
"""

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
    "reject_output": "REJECT OUTPUT FAILED",
    "trigger": "TRIGGER",
    "overload": "OVERLOAD",
}
MESSAGE_CHARS = 120
ACKED_STYLE = ("AlarmRow { background: #4e342e; border-radius: 4px; }"
               "AlarmRow QLabel { color: #d7ccc8; }")


class AlarmRow(QWidget):
    """One alarm: its title, message, time and the Acknowledge button."""

    def __init__(self, alarm: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.alarm = alarm
        self.line_title = ""  # the line state this alarm stands behind, if any
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

    @property
    def acknowledged(self) -> bool:
        return bool(getattr(self.alarm, "acknowledged_by", ""))

    def update_alarm(self, alarm: Any, line_title: str | None = None) -> None:
        self.alarm = alarm
        if line_title is not None:
            self.line_title = line_title
        stamp = time.strftime("%H:%M:%S", time.localtime(alarm.time))
        if not alarm.active:
            state = "  (condition cleared — acknowledge to dismiss)"
        elif self.acknowledged:
            state = f"  (acknowledged by {alarm.acknowledged_by}; still holding)"
        else:
            state = ""
        tag = f"{self.line_title}: " if self.line_title else ""
        text = alarm.message  # a long one (a path, an OS error) is cut; all of it on hover
        short = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"
        self.message.setText(f"{stamp}  {tag}{short}{state}")
        self.message.setToolTip(text)
        self.ack.setVisible(not self.acknowledged)
        style = ACKED_STYLE if self.acknowledged else ""
        if self.styleSheet() != style:  # a new style re-polishes the row: only on a change
            self.setStyleSheet(style)


class AlarmBanner(QWidget):
    """Shows ``engine.alarms()``; hidden when there is none. ``acknowledged`` carries the id."""

    acknowledge_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.rows: dict[int, AlarmRow] = {}
        self.line: Any = None  # the engine's LineStatus
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
                row.update_alarm(alarm, self._line_title(alarm.id))
                row.ack.clicked.connect(lambda _=False, i=alarm.id: self.acknowledge_requested.emit(i))
                self.rows[alarm.id] = row
                self._layout.addWidget(row)
            else:
                known.update_alarm(alarm, self._line_title(alarm.id))
        self.setVisible(bool(self.rows))
        self._paint()

    def show_line_state(self, status: Any) -> None:
        """Mark the alarms behind the engine's line state with its words."""
        self.line = status
        for alarm_id, row in self.rows.items():
            row.update_alarm(row.alarm, self._line_title(alarm_id))

    def _line_title(self, alarm_id: int) -> str:
        line = self.line
        return line.title if line is not None and alarm_id in line.alarm_ids else ""

    @property
    def active(self) -> bool:
        """An alarm holds that nobody has acknowledged yet: the banner blinks."""
        return any(r.alarm.active and not r.acknowledged for r in self.rows.values())

    @property
    def holding(self) -> bool:
        """A cause still holds, acknowledged or not: the banner stays red."""
        return any(r.alarm.active for r in self.rows.values())

    def _toggle(self) -> None:
        if self.active:
            self._blink = not self._blink
            self._paint()

    def _paint(self) -> None:
        if self.active:
            bg = theme.ALARM_BG_BLINK if self._blink else theme.ALARM_BG
        elif self.holding:  # acknowledged, still holding: steady, quieter
            bg = theme.ALARM_BG_BLINK
        else:
            bg = theme.ALARM_CLEARED_BG
        fg = "#ffffff" if self.holding else "#111111"
        self.setStyleSheet(f"AlarmBanner {{ background: {bg}; border-radius: 6px; }}"
                           f"AlarmBanner QLabel {{ background: transparent; color: {fg}; }}")
