"""Trend plots (pyqtgraph): score per part against the threshold, inspection latency, and a
histogram of recent scores, so drift is seen before it turns into rejects."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QWidget

from station.ui import theme
from station.ui.formatting import limit_text

HISTORY = 300
#: The score plot's ceiling, in thresholds: a score above it is drawn on it. The plot is for
#: drift near the threshold, and a sure classifier's score (an odds ratio) runs to thousands,
#: which would flatten every other point onto the axis.
SCORE_CEILING = 4.0


class PartAxis(pg.AxisItem):
    """An axis of part numbers: whole numbers only (a restart left ticks at part 298.5)."""

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list:  # noqa: N802 N803
        levels = [(spacing, [v for v in values if float(v).is_integer()])
                  for spacing, values in super().tickValues(minVal, maxVal, size)
                  if spacing >= 1]
        levels = [(spacing, values) for spacing, values in levels if values]
        if levels:
            return levels
        whole = [float(v) for v in range(math.ceil(minVal), math.floor(maxVal) + 1)]
        return [(1.0, whole)] if whole else []

    def tickStrings(self, values: list, scale: float, spacing: float) -> list[str]:  # noqa: N802
        return [str(int(round(v * scale))) for v in values]


def _plot(title: str, left: str, bottom: str, part_axis: bool = False) -> pg.PlotWidget:
    axes = {"bottom": PartAxis(orientation="bottom")} if part_axis else None
    w = pg.PlotWidget(background="#1c262b", axisItems=axes)
    w.setTitle(title, color=theme.TEXT, size="10pt")  # short titles: they fit a 1024 px screen
    w.setLabel("left", left, color=theme.MUTED)
    w.setLabel("bottom", bottom, color=theme.MUTED)
    w.showGrid(x=True, y=True, alpha=0.25)
    w.setMouseEnabled(x=False, y=False)
    w.setMenuEnabled(False)
    w.setMinimumHeight(100)
    return w


class TrendsPanel(QWidget):
    """Three plots fed by ``add_result``; ``set_thresholds`` moves the threshold lines.

    The score plot has one red threshold line, labelled with its value, while both models
    reject at the same score; only when the two thresholds differ is there a second
    (dashed) line, and then each line's label says whose threshold it is."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ids: deque[int] = deque(maxlen=HISTORY)
        self.ae: deque[float] = deque(maxlen=HISTORY)
        self.cls: deque[float] = deque(maxlen=HISTORY)
        self.latency: deque[float] = deque(maxlen=HISTORY)
        self._n = 0

        self.score_plot = _plot(
            f"<span style='color:{theme.AE_PEN}'>anomaly</span> · "
            f"<span style='color:{theme.CLS_PEN}'>defect</span>", "score", "part",
            part_axis=True)
        self.ae_curve = self.score_plot.plot(
            pen=pg.mkPen(theme.AE_PEN, width=1), symbol="o", symbolSize=5,
            symbolBrush=theme.AE_PEN, symbolPen=None, name="anomaly")
        self.cls_curve = self.score_plot.plot(
            pen=pg.mkPen(theme.CLS_PEN, width=1), symbol="t", symbolSize=5,
            symbolBrush=theme.CLS_PEN, symbolPen=None, name="defect")
        # labels at the left end, above the line: inside the plot at any width
        label_opts = {"color": theme.THRESHOLD_PEN, "position": 0.03, "anchors": [(0, 1), (0, 1)]}
        self.ae_line = pg.InfiniteLine(1.0, angle=0, pen=pg.mkPen(theme.THRESHOLD_PEN, width=2),
                                       label="", labelOpts=label_opts)
        self.cls_line = pg.InfiniteLine(1.0, angle=0, pen=pg.mkPen(
            theme.THRESHOLD_PEN, width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
            label="", labelOpts={**label_opts, "position": 0.45})
        self.score_plot.addItem(self.ae_line)
        self.score_plot.addItem(self.cls_line)

        self.latency_plot = _plot("Latency", "ms", "part", part_axis=True)
        self.latency_curve = self.latency_plot.plot(pen=pg.mkPen(theme.LATENCY_PEN, width=1.5))

        self.hist_plot = _plot("Anomaly scores", "parts", "score")
        self.hist_bars = pg.BarGraphItem(x=[], height=[], width=0.05, brush=theme.AE_PEN)
        self.hist_plot.addItem(self.hist_bars)
        self.hist_line = pg.InfiniteLine(1.0, angle=90, pen=pg.mkPen(theme.THRESHOLD_PEN, width=2))
        self.hist_plot.addItem(self.hist_line)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.score_plot, 3)
        layout.addWidget(self.latency_plot, 2)
        layout.addWidget(self.hist_plot, 2)
        self._dirty = False
        self.set_thresholds(1.0, 1.0)

    def set_thresholds(self, ae: float, cls: float, rule: str = "either") -> None:
        """Move the lines to the thresholds in force (never adds a line). Under the ``sum``
        rule no one score decides, so the lines are each model's own limit, and say so."""
        self.ae_line.setValue(ae)
        self.cls_line.setValue(cls)
        self.hist_line.setValue(ae)
        self._dirty = True  # the plot's ceiling follows the thresholds
        same = limit_text(ae) == limit_text(cls)
        self.cls_line.setVisible(not same)
        what, tail = ("limit", " (rule sum)") if rule == "sum" else ("threshold", "")
        if same:
            word = "model" if rule == "sum" else "reject"
            self.ae_line.label.setFormat(f"{word} {what} {limit_text(ae)}{tail}")
        else:
            self.ae_line.label.setFormat(f"anomaly {what} {limit_text(ae)}{tail}")
            self.cls_line.label.setFormat(f"defect {what} {limit_text(cls)}{tail}")

    def threshold_lines(self) -> list[tuple[float, str]]:
        """(value, label) of each threshold line shown on the score plot."""
        return [(float(line.value()), line.label.format) for line in (self.ae_line, self.cls_line)
                if line.isVisible()]

    def clear(self) -> None:
        for d in (self.ids, self.ae, self.cls, self.latency):
            d.clear()
        self._dirty = True
        self.redraw()

    def add_result(self, result: Any) -> None:
        """Remember one part; the plots redraw on ``redraw`` (a timer), not per part."""
        self._n += 1
        try:
            pid = int(result.part_id)
        except (TypeError, ValueError):
            pid = self._n
        self.ids.append(pid)
        self.ae.append(np.nan if result.ae_score is None else float(result.ae_score))
        self.cls.append(np.nan if result.cls_score is None else float(result.cls_score))
        self.latency.append(float(result.latency_ms))
        self._dirty = True

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        x = np.asarray(self.ids, dtype=float)
        ae = np.asarray(self.ae, dtype=float)
        cls = np.asarray(self.cls, dtype=float)
        ok_ae, ok_cls = np.isfinite(ae), np.isfinite(cls)  # ERROR parts have no score
        top = SCORE_CEILING * max(self.ae_line.value(), self.cls_line.value())
        self.ae_curve.setData(x[ok_ae], np.minimum(ae[ok_ae], top))
        self.cls_curve.setData(x[ok_cls], np.minimum(cls[ok_cls], top))
        self.latency_curve.setData(x, np.asarray(self.latency, dtype=float))
        finite = ae[np.isfinite(ae)]
        if finite.size:
            top = max(2.0, float(np.percentile(finite, 99)) * 1.1, self.hist_line.value() * 1.2)
            counts, edges = np.histogram(np.clip(finite, 0, top), bins=30, range=(0.0, top))
            centres = (edges[:-1] + edges[1:]) / 2
            over = centres >= self.hist_line.value()
            brushes = [pg.mkBrush(theme.THRESHOLD_PEN if o else theme.AE_PEN) for o in over]
            self.hist_bars.setOpts(x=centres, height=counts, width=(edges[1] - edges[0]) * 0.9,
                                   brushes=brushes)
        else:
            self.hist_bars.setOpts(x=[], height=[])
