"""The window on a small panel (offscreen, pytest-qt): issue 14, items 4 (1024x600 did not
fit, the window grew past the screen after an alarm) and 8 (messages pushed the screen down
and never cleared)."""

# ruff: noqa: F811  (pytest fixtures imported from test_gui)
from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLabel, QWidget

from station.pipeline.alarms import ALARM_STREAK
from tests.ui.test_gui import activate, assets, make_window, write_recipe  # noqa: F401

pytestmark = pytest.mark.timeout(120)

SMALL = QSize(1024, 600)


def _inside(window, widget: QWidget) -> None:
    """``widget`` is shown, wholly inside the window, and given at least what it needs."""
    assert widget.isVisible(), widget
    box = QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())
    assert window.rect().contains(box), (widget, box, window.rect())
    need = widget.minimumSizeHint()
    assert widget.width() >= need.width() and widget.height() >= need.height(), (widget, need)


def _fits(window) -> None:
    for widget in (window.verdict, window.counts, window.counts.reset_button,
                   window.start_button, window.trigger_button, window.engineer_button,
                   window.kiosk_button, window.rejects_button, window.status,
                   window.part_view, window.message):
        _inside(window, widget)
    for label in window.counts.values.values():  # the numbers are never cut
        assert label.width() >= label.sizeHint().width(), label.text()
        assert label.height() >= label.sizeHint().height(), label.text()
    for button in (window.counts.reset_button, window.engineer_button, window.kiosk_button):
        assert button.width() >= button.sizeHint().width(), button.text()


def _resize(qtbot, window, size: QSize) -> None:
    window.resize(size)
    qtbot.waitUntil(lambda: window.size() == size, timeout=2000)
    qtbot.wait(50)


def test_the_window_opens_within_the_screen_with_no_big_minimum(qtbot, assets, tmp_path,
                                                                 make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    screen = window.screen().availableGeometry().size()
    assert window.width() <= screen.width() and window.height() <= screen.height()
    minimum = window.minimumSize()
    assert minimum.width() <= SMALL.width() and minimum.height() <= SMALL.height()
    qtbot.keyClick(window, Qt.Key.Key_F11)  # full screen, and back
    qtbot.waitUntil(window.isFullScreen, timeout=2000)
    assert window.kiosk_button.text() == "Leave full screen"
    qtbot.keyClick(window, Qt.Key.Key_F11)
    qtbot.waitUntil(lambda: not window.isFullScreen(), timeout=2000)
    assert window.width() <= screen.width() and window.height() <= screen.height()


def test_at_1024x600_everything_fits_and_an_alarm_does_not_grow_the_window(
        qtbot, assets, tmp_path, make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    _resize(qtbot, window, SMALL)
    _fits(window)
    window.engine.raise_alarm(ALARM_STREAK, "12 rejects in a row: " + "check the line " * 20)
    qtbot.waitUntil(lambda: window.alarms.isVisible() and bool(window.alarms.rows),
                    timeout=3000)
    qtbot.wait(100)
    assert window.size() == SMALL
    _fits(window)
    (row,) = window.alarms.rows.values()
    _inside(window, row.ack)
    qtbot.mouseClick(row.ack, Qt.MouseButton.LeftButton)
    qtbot.wait(100)
    assert window.size() == SMALL
    _fits(window)


def test_fonts_follow_the_window_from_1024x600_to_1920x1080(qtbot, assets, tmp_path,
                                                            make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    _resize(qtbot, window, SMALL)
    small = (window.counts.values["inspected"].font().pointSizeF(), window.font().pointSizeF(),
             window.verdict.word.font().pixelSize())
    _resize(qtbot, window, QSize(1920, 1080))
    large = (window.counts.values["inspected"].font().pointSizeF(), window.font().pointSizeF(),
             window.verdict.word.font().pixelSize())
    assert all(b > a * 1.5 for a, b in zip(small, large, strict=True)), (small, large)
    _fits(window)


def test_messages_keep_one_place_elide_and_leave(qtbot, assets, tmp_path,
                                                 make_window):  # noqa: F811
    path = write_recipe(tmp_path, assets)
    window = make_window(path)
    _resize(qtbot, window, SMALL)

    def layout() -> tuple[QRect, QRect]:
        return (QRect(window.live.mapTo(window, QPoint(0, 0)), window.live.size()),
                QRect(window.verdict.mapTo(window, QPoint(0, 0)), window.verdict.size()))

    before = layout()
    qtbot.keyClick(window, Qt.Key.Key_Space)  # stopped: "start the station first (F5)"
    qtbot.wait(50)
    assert "start the station first" in window.message.text()
    assert layout() == before
    bad = tmp_path / "broken.toml"
    bad.write_text(path.read_text().replace("delay_ms = 300", "delay_ms = -5"), encoding="utf-8")
    assert not window.switch_recipe(bad)  # a refusal of several lines
    window._error_box.close()
    qtbot.wait(50)
    assert layout() == before  # nothing pushed down
    assert "\n" not in window.message.text() and "reject.delay_ms" in window.message.toolTip()
    assert window.message.height() == window.message.fontMetrics().height() + 6
    long = "triggered part #88 " + "with a very long explanation " * 20
    window.message.say(long, ok=True)
    assert window.message.text().endswith("…") and window.message.toolTip() == long
    window.message.OK_LIFETIME_MS = 200
    window.message.say("engineer PIN saved (hashed) in line.toml", ok=True)
    assert window.message.text()
    qtbot.waitUntil(lambda: window.message.text() == "", timeout=2000)
    assert window.message.toolTip() == ""
    assert isinstance(window.message, QLabel) and layout() == before
