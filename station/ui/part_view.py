"""The last inspected part: its aligned crop with the map of the model that decided it over it
(named under the picture), and the two normalized scores (1.0 = threshold) next to the
thresholds in force."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPixmap
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from station.pipeline import heatmap_overlay
from station.pipeline.overlay import map_label
from station.ui import theme
from station.ui.formatting import limit_text, score_text, threshold_note
from station.ui.imaging import to_qimage


class ScaledImage(QLabel):
    """A QLabel that keeps its picture scaled to its size, aspect kept."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self._pixmap: QPixmap | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setMinimumSize(100, 90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: #101417; border-radius: 4px;")

    def set_image(self, image: np.ndarray | None) -> None:
        if image is None:
            self._pixmap = None
            self.clear()
            return
        self._pixmap = QPixmap.fromImage(to_qimage(image))
        self._rescale()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None:
            self.setPixmap(self._pixmap.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))


class PartView(QGroupBox):
    """Crop + map (opacity slider), whose map it is, and the scores of the last part.

    A reject shows the map of the model that decided it (the classifier's Grad-CAM when the
    classifier did); a pass shows the autoencoder's, as always."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Last part: where it differs", parent)
        self.image = ScaledImage("no part yet")
        self.source = QLabel("")
        self.source.setWordWrap(True)
        self.source.setStyleSheet(f"color: {theme.MUTED}; font-size: 13px;")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("map opacity: 0 = the crop alone")
        self.opacity.valueChanged.connect(self._redraw)
        big = QFont()
        big.setPointSize(26)
        big.setBold(True)
        self.ae_value = QLabel("—")
        self.cls_value = QLabel("—")
        for label in (self.ae_value, self.cls_value):
            label.setFont(big)
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.ae_limit = QLabel("")
        self.cls_limit = QLabel("")
        scores = QGridLayout()
        scores.addWidget(QLabel("Anomaly\n(autoencoder)"), 0, 0)
        scores.addWidget(self.ae_value, 0, 1)
        scores.addWidget(self.ae_limit, 0, 2)
        scores.addWidget(QLabel("Defect\n(classifier)"), 1, 0)
        scores.addWidget(self.cls_value, 1, 1)
        scores.addWidget(self.cls_limit, 1, 2)
        self.note = QLabel(threshold_note(1.0, 1.0))
        self.note.setWordWrap(True)
        self.note.setStyleSheet(f"color: {theme.MUTED}; font-size: 13px;")
        scores.addWidget(self.note, 2, 0, 1, 3)
        slider_row = QHBoxLayout()
        slider_row.addWidget(QLabel("map"))
        slider_row.addWidget(self.opacity)
        right = QVBoxLayout()
        right.addLayout(scores)
        right.addStretch(1)
        right.addLayout(slider_row)
        left = QVBoxLayout()
        left.addWidget(self.image, 1)
        left.addWidget(self.source)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 3)
        layout.addLayout(right, 2)
        self._result: Any = None

    def show_result(self, result: Any, decision: Any) -> None:
        self._result = result
        for value, score, threshold in (
                (self.ae_value, result.ae_score, decision.ae_threshold),
                (self.cls_value, result.cls_score, decision.cls_threshold)):
            value.setText(score_text(score))
            over = score is not None and (not np.isfinite(score) or score >= threshold)
            colour = theme.REJECT_BG if over else ("#66bb6a" if score is not None else theme.MUTED)
            value.setStyleSheet(f"color: {colour};")
        self.set_thresholds(decision.ae_threshold, decision.cls_threshold)
        evidence = getattr(result, "evidence", None)
        if decision.rule == "sum" and evidence is not None:
            # the rule that decided: neither score need be over its own limit for a REJECT
            over = evidence >= decision.sum_threshold
            self.note.setText(f"rule sum: evidence {evidence:+.2f} {'≥' if over else '<'} "
                              f"{decision.sum_threshold:+.2f} ({'reject' if over else 'pass'})")
        self._redraw()

    def set_thresholds(self, ae: float, cls: float) -> None:
        """The limits in force (also right after a live change, before the next part)."""
        self.ae_limit.setText(f"limit {limit_text(ae)}")
        self.cls_limit.setText(f"limit {limit_text(cls)}")
        self.note.setText(threshold_note(ae, cls))

    def _redraw(self) -> None:
        r = self._result
        source = getattr(r, "map_source", "") or "autoencoder"
        self.source.setText(map_label(source) if r is not None and r.heatmap is not None else "")
        if r is None or r.crop is None:
            self.image.set_image(None)
            self.image.setText("no crop: " + (r.error if r is not None and r.error else "—"))
            return
        if r.heatmap is None:
            self.image.set_image(r.crop)
            return
        self.image.set_image(heatmap_overlay(r.crop, r.heatmap, self.opacity.value() / 100.0))
