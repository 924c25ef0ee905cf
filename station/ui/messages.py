"""One fixed line for what just happened ("triggered part #88", "recipe refused ..."):
always the same height, so a message never pushes the window's panes down, and each
message leaves by itself after a while (errors stay longer)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

OK_COLOUR = "#a5d6a7"
ERROR_COLOUR = "#ff8a80"


class MessageLine(QLabel):
    """``say(text, ok)``: one line, elided to the width (the whole text on hover)."""

    OK_LIFETIME_MS = 8000
    ERROR_LIFETIME_MS = 30000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.full_text = ""
        self.setWordWrap(False)
        self.setTextFormat(Qt.TextFormat.PlainText)
        # never widens the window, never changes height
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.clear_message)
        self._fit_height()

    def say(self, text: str, ok: bool) -> None:
        """Show ``text`` (several lines become one) for its lifetime."""
        self.full_text = " ".join(part.strip() for part in text.splitlines() if part.strip())
        colour = OK_COLOUR if ok else ERROR_COLOUR
        self.setStyleSheet(f"color: {colour}; font-weight: bold;")
        self.setToolTip(text)
        self._elide()
        self._timer.start(self.OK_LIFETIME_MS if ok else self.ERROR_LIFETIME_MS)

    def clear_message(self) -> None:
        self.full_text = ""
        self.setToolTip("")
        self.setText("")

    def _elide(self) -> None:
        width = max(0, self.contentsRect().width())
        self.setText(self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight,
                                                   width))

    def _fit_height(self) -> None:
        self.setFixedHeight(self.fontMetrics().height() + 6)

    def changeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().changeEvent(event)
        if event.type() == event.Type.FontChange:
            self._fit_height()
            self._elide()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._elide()
