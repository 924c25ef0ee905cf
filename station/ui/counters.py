"""Counts since the shift started: inspected, passed, rejected, errors, yield, parts per minute.

The numbers come from the records (``engine.counts``), so they survive a restart of the
station within a shift; "Reset counts" starts a new shift after a confirmation. A part the
tile shows is counted here from the same event (``note_part(result)``), before its row
reaches the records, so Inspected never trails the tile; the records' numbers take over as
the rows arrive (in the parts' order).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QMessageBox, QPushButton, QWidget

from station.ui import theme

VERDICT_COUNT = {"PASS": "passed", "REJECT": "rejected", "ERROR": "errors"}


def yield_percent(counts: dict[str, int]) -> float | None:
    n = counts.get("inspected", 0)
    return 100.0 * counts.get("passed", 0) / n if n else None


def product_counts(engine: Any) -> dict[str, int]:
    """This shift's counts of the product the engine runs: after a switch the numbers (and
    the yield) are the new product's, never a mix (the records' rows name their product)."""
    records = getattr(engine, "records", None)
    if records is None:  # no records: the engine's own tally, which starts with the engine
        return dict(engine.counts(wait=False))
    return dict(records.counts(since=engine.shift_start(), recipe=engine.recipe.product.name))


class CountsPanel(QGroupBox):
    """The shift's numbers; ``refresh(engine)`` reads them without blocking the GUI."""

    reset_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("This shift", parent)
        self.values: dict[str, QLabel] = {}
        grid = QGridLayout(self)
        big = QFont()
        big.setPointSize(20)
        big.setBold(True)
        names = [("inspected", "Inspected", theme.TEXT), ("passed", "Passed", "#66bb6a"),
                 ("rejected", "Rejected", "#ef5350"), ("errors", "Errors", theme.ERROR_BG),
                 ("yield", "Yield", theme.TEXT), ("ppm", "Parts / min", theme.TEXT)]
        for i, (key, title, colour) in enumerate(names):
            row, col = divmod(i, 3)
            caption = QLabel(title)
            caption.setStyleSheet(f"color: {theme.MUTED};")
            value = QLabel("0")
            value.setFont(big)
            value.setStyleSheet(f"color: {colour};")
            grid.addWidget(caption, row * 2, col)
            grid.addWidget(value, row * 2 + 1, col)
            self.values[key] = value
        self.reset_button = QPushButton("Reset counts…")
        self.reset_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.reset_button.clicked.connect(self.confirm_reset)
        grid.addWidget(self.reset_button, 4, 0, 1, 3)
        self.counts: dict[str, int] = {"inspected": 0, "passed": 0, "rejected": 0, "errors": 0}
        self._recorded: dict[str, int] = dict(self.counts)  # the records' last numbers
        self._unrecorded: deque[str] = deque()  # parts shown, rows not yet in those numbers
        self._part_times: deque[float] = deque(maxlen=2000)

    def for_product(self, name: str) -> None:
        """Counts from now on are ``name``'s (a recipe switch): named, parts/min anew."""
        self.setTitle(f"This shift: {name}")
        self._part_times.clear()
        self._unrecorded.clear()

    def note_part(self, result: Any = None) -> None:
        """A part was inspected now (parts per minute); with its ``result``, it is counted
        at once, with the tile, from the same event."""
        self._part_times.append(time.monotonic())
        if result is not None:
            self._unrecorded.append(VERDICT_COUNT.get(str(result.verdict), "errors"))
            self._show()

    def parts_per_minute(self) -> float:
        """Parts in the last minute (scaled up while the first minute is still running)."""
        if not self._part_times:
            return 0.0
        now = time.monotonic()
        window = min(60.0, max(10.0, now - self._part_times[0]))
        return 60.0 * sum(1 for t in self._part_times if now - t <= window) / window

    def refresh(self, engine: Any) -> None:
        if engine is None:
            return
        if not engine.running:  # stopped: no parts per minute, not a decaying last minute
            self._part_times.clear()
        self.show_counts(product_counts(engine))

    def show_counts(self, counts: dict[str, int]) -> None:
        """The records' numbers; parts shown since then whose rows they already hold (the
        oldest ones: rows are written in order) are no longer counted on top."""
        arrived = counts.get("inspected", 0) - self._recorded.get("inspected", 0)
        if arrived < 0:  # a new shift
            self._unrecorded.clear()
        for _ in range(min(max(arrived, 0), len(self._unrecorded))):
            self._unrecorded.popleft()
        self._recorded = dict(counts)
        self._show()

    def _show(self) -> None:
        counts = dict(self._recorded)
        for key in self._unrecorded:
            counts["inspected"] = counts.get("inspected", 0) + 1
            counts[key] = counts.get(key, 0) + 1
        self.counts = counts
        for key in ("inspected", "passed", "rejected", "errors"):
            self.values[key].setText(str(counts.get(key, 0)))
        y = yield_percent(counts)
        self.values["yield"].setText("—" if y is None else f"{y:.1f} %")
        self.values["ppm"].setText(f"{self.parts_per_minute():.0f}")

    def confirm_reset(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "Reset counts",
                          "Start a new shift? The counts go back to zero (the records keep "
                          "every part).", QMessageBox.StandardButton.Yes
                          | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        self._confirm = box  # tests reach the open box here
        box.finished.connect(lambda code: self._on_confirm(box, code))
        box.open()

    def _on_confirm(self, box: QMessageBox, code: int) -> None:
        if box.standardButton(box.clickedButton()) == QMessageBox.StandardButton.Yes:
            self._part_times.clear()
            self._unrecorded.clear()  # a new shift: nothing shown so far counts in it
            self.reset_requested.emit()
