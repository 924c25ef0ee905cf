"""The status bar: whether the line is inspected, camera, preview and inspection rates,
latency, dropped frames, serial link, the plant's links (PLC, MQTT) and the models in use —
what an engineer checks first when the line misbehaves.

Every field gives way rather than widen the window or run into its neighbour (the engineer
dock takes width away): it is cut with "…" and its full text is on hover.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QLabel, QSizePolicy, QStatusBar, QWidget

# The line state's colour in the status bar (the tile shows the same state, bigger).
LINE_COLOURS = {"inspecting": "#66bb6a", "stopped": "#b0bec5"}
FAULT_COLOUR = "#ff5252"


class ElidedLabel(QLabel):
    """One line of plain text, cut with "…" to the width it is given; the full text on hover."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *,
                 whole: bool = False) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.whole = whole  # short figures: always shown in full, the long fields give way
        self.full_text = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt name)
        self.full_text = text
        super().setText(text)
        self.setToolTip(text)
        if self.whole:
            self.setMinimumWidth(self._text_width())
        self.update()

    def _text_width(self) -> int:
        """What the whole text needs: its advance plus the label's margins and padding."""
        frame = self.width() - self.contentsRect().width()
        return self.fontMetrics().horizontalAdvance(self.full_text) + max(frame, 16) + 4

    @property
    def elided(self) -> bool:
        """The text does not fit: what is drawn ends in "…"."""
        return self.shown_text() != self.full_text

    def shown_text(self) -> str:
        room = self.contentsRect().width()
        return self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight, room)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        width = self._text_width() if self.whole else self.fontMetrics().horizontalAdvance("…") * 3
        return QSize(width, super().minimumSizeHint().height())

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(self.contentsRect(), int(Qt.AlignmentFlag.AlignVCenter), self.shown_text())
        p.end()


class StationStatusBar(QStatusBar):
    """``update_stats(stats, shown_fps)`` from a timer; ``show_line_state(status)`` on the
    engine's ``line`` event."""

    FIELDS = ("line", "camera", "preview", "inspect", "latency", "dropped", "serial", "plant",
              "models")
    # the short figures (the plant's links too) are always shown whole; the line state's
    # reason and the model versions share what is left (cut with "…", full text on hover)
    WHOLE = ("camera", "preview", "inspect", "latency", "dropped", "serial", "plant")
    STRETCH = {"line": 3, "models": 4}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeGripEnabled(False)
        self.labels: dict[str, ElidedLabel] = {}
        for key in self.FIELDS:
            label = ElidedLabel("", whole=key in self.WHOLE)
            label.setObjectName(f"status_{key}")
            self.labels[key] = label
            self.addPermanentWidget(label, self.STRETCH.get(key, 1))
        self.show_line_state(None)
        self.show_plant(None)

    def show_line_state(self, status: Any) -> None:
        """The engine's one line state (the same the tile and the alarm list show)."""
        label = self.labels["line"]
        if status is None:
            label.setText("")
            return
        bold = QFont(label.font())
        bold.setBold(True)  # the title itself is never cut: it is what the field is for
        label.setMinimumWidth(QFontMetrics(bold).horizontalAdvance(status.title + ": …") + 20)
        fault = not status.inspecting and status.state != "stopped"
        colour = LINE_COLOURS.get(str(status.state), FAULT_COLOUR)
        label.setStyleSheet(f"color: {colour}; font-weight: bold;")
        label.setText(status.title + (f": {status.summary}" if fault and status.summary else ""))
        if fault:
            label.setToolTip(f"{status.title}: {status.reason}")

    def show_plant(self, links: Any) -> None:
        """The PLC and MQTT links (:func:`station.plant.services.link_summary`): hidden on a
        station that serves no plant, red when a PLC stops acknowledging or the broker is down."""
        label = self.labels["plant"]
        label.setVisible(links is not None)
        if links is None:
            return
        label.setStyleSheet(f"color: {FAULT_COLOUR if links.fault else LINE_COLOURS['inspecting']};")
        label.setText(links.text)
        label.setToolTip(links.detail)

    def update_stats(self, s: Any, shown_fps: float) -> None:
        # compact, so a 1024 px status bar reads without eliding; the hover says it in full
        texts = {
            "camera": (f"cam {s.camera_fps:.0f} fps", f"camera frames per second ({s.source})"),
            "preview": (f"view {shown_fps:.0f} fps", "live view frames per second"),
            "inspect": (f"{s.inspect_fps:.1f} parts/s", "inspections per second"),
            "latency": (f"p50 {s.latency_p50_ms:.0f} ms p99 {s.latency_p99_ms:.0f} ms",
                        "trigger-to-verdict latency, median and 99th percentile"),
        }
        for key, (text, meaning) in texts.items():
            self.labels[key].setText(text)
            self.labels[key].setToolTip(f"{text} — {meaning}")
        dropped = self.labels["dropped"]
        dropped.setText(f"dropped {s.dropped_frames} · late {s.late}")
        dropped.setToolTip(f"{dropped.full_text}\ndropped frames: camera frames the inspection "
                           "did not take (normal in free-run); late parts: triggered parts the "
                           "inspection could not take in time")
        serial = s.serial_state
        colour = {"connected": "#66bb6a", "off": "#b0bec5"}.get(serial, FAULT_COLOUR)
        self.labels["serial"].setStyleSheet(f"color: {colour};")
        self.labels["serial"].setText("serial ok" if serial == "connected" else f"serial {serial}")
        self.labels["serial"].setToolTip(f"reject output (serial): {serial}")
        self.labels["models"].setText("models " + (", ".join(s.models.values()) or "none"))
