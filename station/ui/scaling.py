"""The window on panels from 1024x600 to 1920x1080: sized to the screen (never larger),
fonts that follow the window's size, and an alarm banner that cannot grow the window."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget

DESIGN = QSize(1280, 800)  # the size the fonts were chosen at (scale 1)
SMALLEST = QSize(1024, 600)  # the smallest panel the window must fit whole
MIN_SCALE, MAX_SCALE = 0.75, 1.35
DESIGN_PT = "station_design_pt"  # a widget's own font size at scale 1


def scale_for(size: QSize) -> float:
    """Font scale for a window of ``size``: 1 at 1280x800, 0.75 at 1024x600 and below,
    1.35 at 1920x1080 and above (steps of 0.05, so a drag does not refont every pixel)."""
    raw = min(size.width() / DESIGN.width(), size.height() / DESIGN.height())
    return round(max(MIN_SCALE, min(MAX_SCALE, raw)) * 20) / 20


def fit_to_screen(window: QWidget) -> None:
    """Open at the screen's available size, never larger, with no minimum larger than
    1024x600 (nor than the screen)."""
    screen = window.screen() or QGuiApplication.primaryScreen()
    avail = screen.availableGeometry().size() if screen is not None else DESIGN
    window.setMinimumSize(min(SMALLEST.width(), avail.width()),
                          min(SMALLEST.height(), avail.height()))
    window.resize(avail)


def scale_fonts(root: QWidget, scale: float, skip: Iterable[QWidget] = ()) -> None:
    """Every widget under ``root`` gets its own font size (or, when it chose none, the
    window's) times ``scale``. Set on each widget: under a style sheet a child does not
    follow its window's font. Widgets made later (an alarm row) are scaled on the next call.
    """
    skipped = set(skip)
    base = _design(root, root.font().pointSizeF())
    for widget in root.findChildren(QWidget):
        if widget in skipped:
            continue
        own = widget.testAttribute(Qt.WidgetAttribute.WA_SetFont)
        design = _design(widget, widget.font().pointSizeF() if own else base)
        if design > 0:  # else a pixel size: the widget sizes it itself
            _set_point_size(widget, design * scale)
    if base > 0:
        _set_point_size(root, base * scale)


def _design(widget: QWidget, first_seen: float) -> float:
    """The widget's font size at scale 1, remembered the first time it is seen."""
    design = widget.property(DESIGN_PT)
    if design is None:
        design = first_seen
        widget.setProperty(DESIGN_PT, design)
    return float(design)


def _set_point_size(widget: QWidget, points: float) -> None:
    font = widget.font()
    if abs(font.pointSizeF() - points) > 0.01:
        font.setPointSizeF(points)
        widget.setFont(font)


class BannerArea(QScrollArea):
    """Holds the alarm banner: as tall as the banner up to a share of the window, then it
    scrolls. Shown while the banner is, so an alarm (or its acknowledgement) never makes
    the window taller than the screen."""

    SHARE = 0.3  # of the window's height, at most

    def __init__(self, banner: QWidget, window: QWidget) -> None:
        super().__init__()
        self.banner = banner
        self.window_ = window
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        hidden = banner.isHidden()
        self.setWidget(banner)  # shows it
        banner.setVisible(not hidden)
        self.setVisible(not hidden)
        banner.installEventFilter(self)
        self.fit()

    def fit(self) -> None:
        """As tall as the banner wants, at most SHARE of the window; at least one row."""
        want = self.banner.sizeHint().height()
        most = max(40, int(self.window_.height() * self.SHARE))
        self.setMaximumHeight(min(want, most))
        self.setMinimumHeight(min(want, most, 60))

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        kind = event.type()
        if obj is self.banner:
            if kind in (QEvent.Type.ShowToParent, QEvent.Type.HideToParent):
                self.setVisible(kind == QEvent.Type.ShowToParent)
                self.fit()
            elif kind == QEvent.Type.LayoutRequest:
                self.fit()
        return super().eventFilter(obj, event)
