"""The big PASS / REJECT / ERROR tile: the one thing an operator reads from across the line."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from station.ui import theme
from station.ui.formatting import score_text


class VerdictTile(QWidget):
    """Green PASS, red REJECT, amber ERROR in a huge font, with the part id and the reason."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMinimumHeight(100)
        self.word = QLabel("—")
        self.word.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = QFont()
        font.setPointSize(64)
        font.setBold(True)
        self.word.setFont(font)
        self.detail = QLabel("waiting for the first part")
        self.detail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.detail.setWordWrap(True)
        dfont = QFont()
        dfont.setPointSize(15)
        self.detail.setFont(dfont)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.addWidget(self.word, 1)
        layout.addWidget(self.detail)
        self.verdict = ""
        self._paint("")

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """The word fills the tile: as big as the space the layout gives it."""
        super().resizeEvent(event)
        font = self.word.font()
        font.setPixelSize(max(24, min(int(self.height() * 0.5), int(self.width() / 4.2))))
        self.word.setFont(font)

    def _paint(self, verdict: str) -> None:
        bg = theme.VERDICT_BG.get(verdict, theme.IDLE_BG)
        fg = theme.TEXT_ON_COLOUR.get(verdict, theme.TEXT)
        self.setStyleSheet(f"VerdictTile {{ background: {bg}; border-radius: 10px; }}"
                           f"QLabel {{ background: transparent; color: {fg}; }}")

    def show_result(self, result: Any) -> None:
        self.verdict = result.verdict
        self.word.setText(result.verdict)
        why = result.error or ""
        if not why and result.verdict != "PASS":
            parts = []
            if result.ae_score is not None:
                parts.append(f"autoencoder {score_text(result.ae_score)}")
            if result.cls_score is not None:
                parts.append(f"classifier {score_text(result.cls_score)}")
            why = "  ".join(parts)
        self.detail.setText(f"part #{result.part_id}" + (f" — {why}" if why else ""))
        self._paint(result.verdict)

    def clear(self) -> None:
        self.verdict = ""
        self.word.setText("—")
        self.detail.setText("waiting for the first part")
        self._paint("")
