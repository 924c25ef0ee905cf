"""The live camera picture at the camera's frame rate, with the ROI, the trigger line and the
last inspected part's box drawn on it.

A QTimer polls the engine's latest-frame slot and repaints only when a new frame arrived, so
the preview runs at the camera's pace and never waits on the models (docs/design.md). A
picture that stopped moving while the station runs is marked "NO SIGNAL" with its age, so the
last frame of a lost camera never passes for a live one.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

from station.ui import theme
from station.ui.imaging import to_qimage

# How long the last part's outline stays on the moving picture. It marks where the part was
# when it was inspected (at the trigger line); the belt has moved on since, so not for long.
BOX_SHOWN_S = 0.6
# A free-running camera silent this long is no live picture any more (a triggered one is
# silent between parts by design: its picture is never marked).
STALE_S = 1.0


class LiveView(QWidget):
    """Draws ``engine.latest_frame()``; ``shown_fps`` is the rate frames actually reach the
    screen (the number the Xvfb check compares with the camera's fps)."""

    def __init__(self, parent: QWidget | None = None, poll_ms: int = 5) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 180)
        self._engine: Any = None
        self._image: QImage | None = None
        self._frame_shape: tuple[int, int] = (0, 0)
        self._seq: int | None = None
        self._new = False
        self._shown: deque[float] = deque(maxlen=240)
        self.frames_shown = 0
        self._part: Any = None
        self.pending_roi: tuple[int, int, int, int] | None = None  # engineer editing the ROI
        self._part_time = 0.0
        self._frame_time = 0.0  # monotonic time the shown frame arrived
        self.stale = False  # "NO SIGNAL" is drawn over the picture
        self._stale_drawn = 0.0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.poll)
        self._timer.start(poll_ms)

    def set_engine(self, engine: Any) -> None:
        self._engine = engine
        self._image = None
        self._seq = None
        self._part = None
        self.stale = False
        self.update()

    def show_part(self, result: Any) -> None:
        """Mark the part just inspected (its box, in its verdict's colour)."""
        if result is not None and result.box is not None:
            self._part = result
            self._part_time = time.monotonic()

    @property
    def shown_fps(self) -> float:
        """Frames painted per second over the last ~2 s."""
        now = time.monotonic()
        recent = [t for t in self._shown if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def poll(self) -> None:
        """Fetch the newest frame if its sequence number moved on; never blocks."""
        if self._engine is None:
            return
        frame = self._engine.latest_frame()
        if frame is None or frame.seq == self._seq:
            self._check_stale()
            return
        self._frame_time = time.monotonic()
        self.stale = False
        self._seq = frame.seq
        self._frame_shape = frame.image.shape[:2]
        self._image = to_qimage(frame.image)
        self._new = True
        self.update()

    def _check_stale(self) -> None:
        """Mark the picture once no new frame came for ``STALE_S`` while running."""
        engine = self._engine
        stale = (self._image is not None and engine.running
                 and not engine.source.info.triggered
                 and time.monotonic() - self._frame_time > STALE_S)
        now = time.monotonic()
        if stale != self.stale or (stale and now - self._stale_drawn >= 0.5):
            self.stale = stale
            self._stale_drawn = now  # the age shown counts up: two repaints a second
            self.update()

    # -- drawing ----------------------------------------------------------------------------
    def _target(self) -> tuple[QRectF, float]:
        h, w = self._frame_shape
        scale = min(self.width() / w, self.height() / h)
        tw, th = w * scale, h * scale
        return QRectF((self.width() - tw) / 2, (self.height() - th) / 2, tw, th), scale

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#101417"))
        if self._image is None:
            p.setPen(QColor(theme.MUTED))
            p.setFont(QFont(self.font().family(), 18))
            text = "no camera picture yet" if self._engine is not None else "no recipe loaded"
            if self._engine is not None and not self._engine.running:
                text = "stopped: press START (F5)"
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
            p.end()
            return
        target, scale = self._target()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 1.0)
        p.drawImage(target, self._image)
        p.translate(target.topLeft())
        p.scale(scale, scale)
        self._draw_roi_and_line(p)
        self._draw_part(p)
        p.resetTransform()
        if self._engine is not None and not self._engine.running:
            p.fillRect(self.rect(), QColor(0, 0, 0, 110))
            p.setPen(QColor("#ffffff"))
            p.setFont(QFont(self.font().family(), 26, QFont.Weight.Bold))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "STOPPED")
        elif self.stale:
            self._draw_no_signal(p)
        p.end()
        if self._new:
            self._new = False
            self.frames_shown += 1
            self._shown.append(time.monotonic())

    def _draw_no_signal(self, p: QPainter) -> None:
        p.fillRect(self.rect(), QColor(0, 0, 0, 150))
        p.setPen(QColor("#ff5252"))
        p.setFont(QFont(self.font().family(), 30, QFont.Weight.Bold))
        age = time.monotonic() - self._frame_time
        p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                   f"NO SIGNAL\nlast picture {age:.0f} s old")

    def _roi(self) -> tuple[float, float, float, float]:
        h, w = self._frame_shape
        roi = tuple(getattr(self._engine.recipe.localize, "roi", (0, 0, 0, 0)) or (0, 0, 0, 0))
        if len(roi) != 4 or roi[2] <= 0 or roi[3] <= 0:
            return 0.0, 0.0, float(w), float(h)
        return tuple(float(v) for v in roi)  # type: ignore[return-value]

    def _draw_roi_and_line(self, p: QPainter) -> None:
        x, y, w, h = self._roi()
        pen = QPen(QColor("#29b6f6"), 2.0)
        pen.setCosmetic(True)
        pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawRect(QRectF(x, y, w, h))
        if self.pending_roi is not None and self.pending_roi[2] > 0 and self.pending_roi[3] > 0:
            pen = QPen(QColor("#ff9100"), 2.0)
            pen.setCosmetic(True)
            p.setPen(pen)
            p.drawRect(QRectF(*[float(v) for v in self.pending_roi]))
            p.drawText(QPointF(self.pending_roi[0] + 4, self.pending_roi[1] + 16), "new ROI")
        trig = self._engine.recipe.trigger
        if trig.mode != "free_run":
            return
        frac = float(trig.line_frac)
        pen = QPen(QColor("#ffee58"), 2.0)
        pen.setCosmetic(True)
        p.setPen(pen)
        if trig.direction in ("left_to_right", "right_to_left"):
            lx = x + frac * w
            p.drawLine(QPointF(lx, y), QPointF(lx, y + h))
        else:
            ly = y + frac * h
            p.drawLine(QPointF(x, ly), QPointF(x + w, ly))

    def _draw_part(self, p: QPainter) -> None:
        r = self._part
        age = time.monotonic() - self._part_time
        if r is None or age > BOX_SHOWN_S:
            return
        colour = QColor(theme.VERDICT_BG.get(r.verdict, theme.IDLE_BG))
        colour.setAlphaF(1.0 - 0.7 * age / BOX_SHOWN_S)  # fades as the part moves on
        pen = QPen(colour, 3.0)
        pen.setCosmetic(True)
        p.setPen(pen)
        if r.crop_to_frame is not None and r.crop is not None:
            ch, cw = (float(v) for v in r.crop.shape[:2])  # crops need not be square
            m = np.asarray(r.crop_to_frame, dtype=np.float64)
            corners = np.array([[0, 0, 1], [cw, 0, 1], [cw, ch, 1], [0, ch, 1]], dtype=np.float64)
            pts = corners @ m.T
            p.drawPolygon(QPolygonF([QPointF(float(a), float(b)) for a, b in pts]))
            ax, ay = float(pts[:, 0].min()), float(pts[:, 1].min())
        else:
            x, y, w, h = r.box
            p.drawRect(QRectF(x, y, w, h))
            ax, ay = float(x), float(y)
        # the words in screen pixels: scaled with a small picture they outgrew the view
        anchor = p.transform().map(QPointF(ax, ay))
        p.save()
        p.resetTransform()
        p.setFont(QFont(self.font().family(), 16, QFont.Weight.Bold))
        p.drawText(QPointF(max(4.0, anchor.x()), max(22.0, anchor.y() - 6)),
                   f"inspected #{r.part_id}: {r.verdict}")
        p.restore()
