"""The big PASS / REJECT / ERROR tile: the one thing an operator reads from across the line.

While the engine says the line is not inspected (its :class:`LineStatus`: stopped, camera
lost, trigger blind, reject output down) the tile says that instead of the last verdict, so
a green PASS never stands for parts nobody judged or a red REJECT for one nobody removed.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from station.ui import theme
from station.ui.formatting import score_text

# Not inspecting (or not protecting): dark, with a red frame and amber words, unlike any verdict.
FAULT_STYLE = ("VerdictTile { background: #1a1a1a; border: 6px solid #d32f2f; "
               "border-radius: 10px; } QLabel { background: transparent; color: #ffb300; }")


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
        self.line: Any = None  # the engine's LineStatus; None = not told yet (inspecting)
        self._result: Any = None
        self._paint("")

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """The word fills the tile: as big as the space the layout gives it."""
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        """The largest font at which the word fits the tile's width (REJECT OUTPUT DOWN too)."""
        font = self.word.font()
        size = max(24, int(self.height() * 0.5))
        font.setPixelSize(size)
        room = max(1, self.width() - 24)
        wide = QFontMetrics(font).horizontalAdvance(self.word.text())
        if wide > room:
            font.setPixelSize(max(12, int(size * room / wide)))
        self.word.setFont(font)

    @property
    def inspecting(self) -> bool:
        return self.line is None or self.line.inspecting

    def _paint(self, verdict: str) -> None:
        bg = theme.VERDICT_BG.get(verdict, theme.IDLE_BG)
        fg = theme.TEXT_ON_COLOUR.get(verdict, theme.TEXT)
        self.setStyleSheet(f"VerdictTile {{ background: {bg}; border-radius: 10px; }}"
                           f"QLabel {{ background: transparent; color: {fg}; }}")

    def show_result(self, result: Any) -> None:
        self.verdict = result.verdict
        self._result = result
        if not self.inspecting:  # judged, yet the line is not protected: say that first
            self._show_line()
            return
        self.word.setText(result.verdict)
        self.detail.setText(self._describe(result))
        self._paint(result.verdict)
        self._fit()

    def show_line_state(self, status: Any) -> None:
        """The engine's line state: a fault (or STOPPED) replaces the verdict until it ends."""
        self.line = status
        if not self.inspecting:
            self._show_line()
        elif self._result is not None:
            self.show_result(self._result)
        else:
            self.clear()

    def _show_line(self) -> None:
        self.word.setText(self.line.title)
        last = self._result
        tail = f"\nlast part #{last.part_id}: {last.verdict}" if last is not None else ""
        short = self.line.summary or self.line.reason or ""
        self.detail.setText(short + tail)
        self.detail.setToolTip((self.line.reason or "") + tail)
        if self.line.state == "stopped":
            self._paint("")
        else:
            self.setStyleSheet(FAULT_STYLE)
        self._fit()

    @staticmethod
    def _describe(result: Any) -> str:
        why = result.error or ""
        if not why and result.verdict != "PASS":
            parts = []
            if result.ae_score is not None:
                parts.append(f"autoencoder {score_text(result.ae_score)}")
            if result.cls_score is not None:
                parts.append(f"classifier {score_text(result.cls_score)}")
            if getattr(result, "evidence", None) is not None:
                parts.append(f"evidence {result.evidence:+.2f} (sum)")
            why = "  ".join(parts)
        return f"part #{result.part_id}" + (f" — {why}" if why else "")

    def clear(self) -> None:
        """A new engine: no verdict yet (its line state is told next)."""
        self.verdict = ""
        self._result = None
        self.word.setText("—")
        self.detail.setText("waiting for the first part")
        self._paint("")
        if not self.inspecting:
            self._show_line()
