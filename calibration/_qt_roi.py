"""Interactive ROI editor: the frame with a draggable ROI rectangle and a live crop preview.

The engineer sees at once what the station will do with the region: whether the part is still
found (status line) and what the aligned crop the models get looks like. Drag the rectangle
to move it, drag its bottom-right corner to resize it, or type the numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPen, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QGraphicsItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from station.ui.imaging import to_qimage
from station.vision.align import AlignParams, PartNotFound, find_and_align
from station.vision.localize import LocalizeParams

Roi = tuple[int, int, int, int]


class RoiRectItem(QGraphicsRectItem):
    """Movable rectangle kept inside the image; its bottom-right corner resizes it."""

    HANDLE = 12.0  # scene pixels around the corner that grab for resizing

    def __init__(self, roi: Roi, bounds: QRectF, on_change) -> None:
        x, y, w, h = roi
        super().__init__(0, 0, w, h)
        self._bounds = bounds
        self._on_change = on_change
        self._resizing = False
        self.setPos(x, y)
        self.setPen(QPen(QColor(0, 200, 0), 0))
        self.setBrush(QBrush(QColor(0, 200, 0, 40)))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, True)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges, True)

    def roi(self) -> Roi:
        p, r = self.pos(), self.rect()
        return round(p.x()), round(p.y()), round(r.width()), round(r.height())

    def itemChange(self, change, value):  # noqa: N802 (Qt API)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange:
            r, b = self.rect(), self._bounds
            x = min(max(round(value.x()), b.left()), b.right() - r.width())
            y = min(max(round(value.y()), b.top()), b.bottom() - r.height())
            return QPointF(x, y)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self._on_change()
        return super().itemChange(change, value)

    def mousePressEvent(self, event):  # noqa: N802 (Qt API)
        r = self.rect()
        corner = QPointF(r.width(), r.height())
        d = event.pos() - corner
        self._resizing = abs(d.x()) <= self.HANDLE and abs(d.y()) <= self.HANDLE
        if not self._resizing:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event):  # noqa: N802 (Qt API)
        if self._resizing:
            b, p = self._bounds, self.pos()
            w = min(max(8.0, round(event.pos().x())), b.right() - p.x())
            h = min(max(8.0, round(event.pos().y())), b.bottom() - p.y())
            self.setRect(0, 0, w, h)
            self._on_change()
        else:
            super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event):  # noqa: N802 (Qt API)
        self._resizing = False
        super().mouseReleaseEvent(event)


class RoiDialog(QDialog):
    """Edit the ROI over a frame; ``roi()`` after ``exec()`` is the engineer's choice."""

    roiChanged = Signal(tuple)  # noqa: N815 (Qt naming)

    def __init__(self, image: np.ndarray, roi: Roi | None, localize_params: LocalizeParams | None = None,
                 align_params: AlignParams | None = None, crop_size: int = 256,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Region of interest")
        self._image = image
        self._lp = localize_params or LocalizeParams()
        self._ap = align_params or AlignParams()
        self._size = int(crop_size)
        self._syncing = False
        h, w = image.shape[:2]
        if roi is None or tuple(roi) == (0, 0, 0, 0):
            roi = (0, 0, w, h)
        self.last_status = ""
        self.last_crop: np.ndarray | None = None

        self.scene = QGraphicsScene(self)
        self.scene.addItem(QGraphicsPixmapItem(QPixmap.fromImage(to_qimage(image, stretch=True))))
        self.rect_item = RoiRectItem(roi, QRectF(0, 0, w, h), self._rect_moved)
        self.scene.addItem(self.rect_item)
        self.view = QGraphicsView(self.scene)
        self.view.setMinimumSize(480, 360)

        self.preview = QLabel()
        self.preview.setFixedSize(self._size, self._size)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.status = QLabel()
        self.status.setWordWrap(True)

        self.spins: dict[str, QSpinBox] = {}
        form = QGridLayout()
        for i, (name, maximum) in enumerate((("x", w - 1), ("y", h - 1), ("w", w), ("h", h))):
            spin = QSpinBox()
            spin.setRange(0 if name in "xy" else 8, maximum)
            spin.valueChanged.connect(self._spins_changed)
            self.spins[name] = spin
            form.addWidget(QLabel(name), i, 0)
            form.addWidget(spin, i, 1)

        side = QVBoxLayout()
        side.addWidget(QLabel("Aligned crop (what the models see)"))
        side.addWidget(self.preview)
        side.addWidget(self.status)
        side.addLayout(form)
        side.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.view, 1)
        top.addLayout(side)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(buttons)
        self._sync_spins()
        self.update_preview()

    def roi(self) -> Roi:
        return self.rect_item.roi()

    def set_roi(self, roi: Roi) -> None:
        """Move/resize the rectangle (clamped to the image) and refresh the preview."""
        x, y, w, h = (int(v) for v in roi)
        ih, iw = self._image.shape[:2]
        w, h = max(8, min(w, iw)), max(8, min(h, ih))
        self.rect_item.setRect(0, 0, w, h)
        self.rect_item.setPos(min(max(0, x), iw - w), min(max(0, y), ih - h))  # emits via itemChange
        self._rect_moved()

    def _rect_moved(self) -> None:
        self._sync_spins()
        self.update_preview()
        self.roiChanged.emit(self.roi())

    def _sync_spins(self) -> None:
        self._syncing = True
        for name, value in zip("xywh", self.roi(), strict=True):
            self.spins[name].setValue(value)
        self._syncing = False

    def _spins_changed(self) -> None:
        if self._syncing:
            return
        roi = tuple(self.spins[n].value() for n in "xywh")
        if roi != self.roi():
            self.set_roi(roi)  # type: ignore[arg-type]

    def update_preview(self) -> None:
        """Localize inside the current ROI and show the aligned crop (or why there is none)."""
        params = dataclasses.replace(self._lp, roi=self.roi())
        try:
            aligned = find_and_align(self._image, params, self._ap, self._size)
        except PartNotFound as exc:
            self.last_crop = None
            self.last_status = f"{exc.localization.status}: {exc.localization.message}"
            self.preview.setPixmap(QPixmap())
            self.preview.setText("no crop")
        else:
            loc = aligned.localization
            self.last_crop = aligned.crop
            self.last_status = f"ok: part length {loc.length_px:.1f} px, angle {loc.angle_deg:.1f}°"
            self.preview.setPixmap(QPixmap.fromImage(to_qimage(aligned.crop, stretch=True)))
        self.status.setText(self.last_status)


def edit_roi(image: np.ndarray, roi: Roi | None, localize_params: LocalizeParams | None = None,
             align_params: AlignParams | None = None, crop_size: int = 256) -> Roi | None:
    """Run the dialog; the chosen ROI, or None if the engineer cancelled."""
    app = QApplication.instance() or QApplication([])  # noqa: F841 (must outlive the dialog)
    dialog = RoiDialog(image, roi, localize_params, align_params, crop_size)
    dialog.resize(1100, 650)
    accepted = dialog.exec() == QDialog.DialogCode.Accepted
    return dialog.roi() if accepted else None
