"""The station's keys and the product switch on the real window (offscreen, pytest-qt, real
key presses and clicks): issue 14, items 1 (Space could change the product) and 6 (anyone
could switch the product, and the counts mixed)."""

# ruff: noqa: F811  (pytest fixtures imported from test_gui)
from __future__ import annotations

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from station.config import hash_pin
from tests.ui.test_gui import activate, assets, make_window, write_recipe  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PIN = "2468"
LEFT = Qt.MouseButton.LeftButton


def _press(qtbot, window, key: Qt.Key) -> None:
    """A real key press goes to the widget with the focus (the window when none has it)."""
    qtbot.keyClick(QApplication.focusWidget() or window, key)


def _cancel_reset(qtbot, window) -> None:
    """The operator clicks Reset counts… and then Cancel."""
    qtbot.mouseClick(window.counts.reset_button, LEFT)
    box = window.counts._confirm
    qtbot.waitUntil(box.isVisible, timeout=2000)
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), LEFT)
    qtbot.waitUntil(lambda: not box.isVisible(), timeout=2000)
    qtbot.wait(50)


def test_space_triggers_after_the_reset_dialog_is_cancelled(qtbot, assets, tmp_path,  # noqa: F811
                                                           make_window):  # noqa: F811
    path = write_recipe(tmp_path, assets)
    write_recipe(tmp_path, assets, name="other", product="other-product")
    window = make_window(path)
    _press(qtbot, window, Qt.Key.Key_F5)
    engine = window.engine
    assert engine.running
    _cancel_reset(qtbot, window)
    assert engine.counts()["inspected"] >= 0  # still counting: nothing was reset
    for _ in range(2):  # whatever took the focus, Space triggers and opens nothing
        window.message.setText("")
        _press(qtbot, window, Qt.Key.Key_Space)
        assert "triggered part #" in window.message.text()
        assert not window.recipes.view().isVisible()
    # even with the recipe list focused (as the audit found it): Space, Down, Enter
    window.recipes.setFocus()
    for key in (Qt.Key.Key_Space, Qt.Key.Key_Down, Qt.Key.Key_Return):
        qtbot.keyClick(window.recipes, key)
        assert not window.recipes.view().isVisible()
    assert window.engine is engine and window.product.text() == "gui-test"
    assert "triggered part #" in window.message.text()
    qtbot.keyClick(window.recipes, Qt.Key.Key_F5)  # F5 stops the line from there too
    assert not engine.running and window.start_button.text() == "START"
    # the next click is not swallowed by an open list: Reset counts… opens its dialog
    qtbot.mouseClick(window.counts.reset_button, LEFT)
    qtbot.waitUntil(window.counts._confirm.isVisible, timeout=2000)
    window.counts._confirm.button(QMessageBox.StandardButton.Cancel).click()


def test_no_station_widget_takes_the_keyboard_focus(qtbot, assets, tmp_path,  # noqa: F811
                                                    make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    for widget in (window.recipes, window.start_button, window.trigger_button,
                   window.rejects_button, window.engineer_button, window.kiosk_button,
                   window.counts.reset_button):
        assert widget.focusPolicy() == Qt.FocusPolicy.NoFocus, widget


def test_held_f5_does_not_start_and_stop(qtbot, assets, tmp_path, make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    _press(qtbot, window, Qt.Key.Key_F5)
    assert window.engine.running
    held = QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_F5, Qt.KeyboardModifier.NoModifier, "",
                     True)  # the key held down (auto-repeat): no toggle
    QApplication.sendEvent(window, held)
    assert window.engine.running
    _press(qtbot, window, Qt.Key.Key_F5)
    assert not window.engine.running


def _unlock(qtbot, window) -> None:
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    dialog = window.pin_dialog
    dialog.first.setText(PIN)
    qtbot.mouseClick(dialog.ok_button, LEFT)
    assert window.engineer_unlocked


def _choose(qtbot, window, text: str) -> QMessageBox:
    """Open the product list with a click and click ``text``; the confirmation it opens."""
    combo = window.recipes
    qtbot.mouseClick(combo, LEFT)
    view = combo.view()
    qtbot.waitUntil(view.isVisible, timeout=2000)
    row = combo.findText(text)
    assert row >= 0, [combo.itemText(i) for i in range(combo.count())]
    view.setCurrentIndex(view.model().index(row, 0))  # the row under the finger
    qtbot.keyClick(view, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window._switch_confirm.isVisible(), timeout=2000)
    return window._switch_confirm


def test_switching_the_product_needs_engineer_mode_a_confirmation_and_counts_apart(
        qtbot, assets, tmp_path, make_window):  # noqa: F811
    path = write_recipe(tmp_path, assets, pin_hash=hash_pin(PIN))
    window = make_window(path)
    window.toggle_running()
    qtbot.waitUntil(lambda: window.engine.stats().parts >= 2, timeout=5000)
    window.toggle_running()
    first = window.engine
    assert first.counts()["inspected"] >= 2
    # a recipe added while the station runs; the list names products, the file on hover
    write_recipe(tmp_path, assets, name="other", product="other-product",
                 pin_hash=hash_pin(PIN))
    assert not window.recipes.isEnabled()  # locked: nobody switches the product
    qtbot.mouseClick(window.recipes, LEFT)
    assert not window.recipes.view().isVisible()
    _unlock(qtbot, window)
    box = _choose(qtbot, window, "other-product")
    assert window.recipes.itemData(window.recipes.findText("other-product"),
                                   Qt.ItemDataRole.ToolTipRole) == "other.toml"
    assert window.recipes.findText("line") < 0  # no file names
    assert "gui-test" in box.text() and "other-product" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), LEFT)
    assert window.engine is first and window.recipes.currentText() == "gui-test"
    box = _choose(qtbot, window, "other-product")
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), LEFT)
    qtbot.waitUntil(lambda: window.engine is not first, timeout=5000)
    assert window.product.text() == "other-product"
    assert window.recipes.currentText() == "other-product"
    assert not window.engineer_unlocked and not window.recipes.isEnabled()
    # a switch to another product starts the line on it (StationHost.change_to)
    assert window.engine.running
    qtbot.waitUntil(lambda: window.engine.stats().parts >= 1, timeout=5000)
    window.toggle_running()
    assert not window.engine.running
    assert window.engine.records.flush(5.0)  # the rows are in the database
    since = window.engine.shift_start()
    own = window.engine.records.counts(since=since, recipe="other-product")
    old = window.engine.records.counts(since=since, recipe="gui-test")
    assert own["inspected"] >= 1 and old["inspected"] >= 2
    # the shift's counts shown are the new product's, not the old one's carried on
    qtbot.waitUntil(lambda: (window.refresh_counts(), window.counts.counts)[1] == own,
                    timeout=3000)
    assert "other-product" in window.counts.title()
    assert window.counts.values["inspected"].text() == str(own["inspected"])
    # the shift holds both products
    assert window.engine.counts()["inspected"] == own["inspected"] + old["inspected"]
