"""Engineer mode on the real window (offscreen, pytest-qt): the PIN lockout, Ctrl+E from any
widget, and the settings the window must not reach (audit defects #8 and #9, GUI side).

The window runs on a real engine (tiny ONNX models, a folder camera, loop:// reject port,
SQLite records in ``tmp_path``), as in ``test_gui``.
"""

from __future__ import annotations

import sqlite3

import pytest
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication, QComboBox

from station.config import hash_pin, load_recipe
from station.ui.engineer import LOOP_PORT, FieldEditor, PinGuard, serial_port_choices
from tests.ui.test_gui import activate, assets, make_window, write_recipe  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PIN = "2468"


class FakeClock:
    """Monotonic seconds the test moves on, so a 30 s lockout needs no 30 s wait."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _events(window, key_prefix: str = "engineer.") -> list[tuple[str, str, str]]:
    """(who, key, new) of the window's recorded events, oldest first."""
    return [(e["who"], e["key"], e["new"]) for e in reversed(window.engine.records.events(500))
            if e["key"].startswith(key_prefix)]


def _enter(qtbot, window, pin: str) -> str:
    """Type ``pin`` into the PIN dialog and press OK; the dialog's red line after."""
    if window.pin_dialog is None or not window.pin_dialog.isVisible():
        window.toggle_engineer()
    dialog = window.pin_dialog
    dialog.first.setText(pin)
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    return dialog.error.text()


@pytest.fixture()
def locked_window(qtbot, assets, tmp_path, make_window):  # noqa: F811 (fixtures)
    window = make_window(write_recipe(tmp_path, assets, pin_hash=hash_pin(PIN)))
    clock = FakeClock()
    window.pin_guard.clock = clock
    return window, clock


def test_sixty_wrong_pins_then_the_right_one_is_refused(qtbot, locked_window):
    # the audit: 60 wrong PINs in 4.9 s, then the right one was accepted
    window, _clock = locked_window
    for i in range(60):
        _enter(qtbot, window, f"{i:04d}" if f"{i:04d}" != PIN else "9999")
    message = _enter(qtbot, window, PIN)
    assert "locked for" in message and not window.engineer_unlocked
    assert window.pin_dialog.isVisible()


def test_three_wrong_pins_lock_out_even_the_right_pin_and_every_attempt_is_recorded(
        qtbot, locked_window):
    window, clock = locked_window
    assert "2 more tries" in _enter(qtbot, window, "1111")
    assert "1 more try" in _enter(qtbot, window, "2222")
    assert _enter(qtbot, window, "3333") == "wrong PIN: locked for 30 s"
    clock.now += 10
    assert "locked for 20 s" in _enter(qtbot, window, PIN)  # the right PIN, refused
    assert not window.engineer_unlocked and not window.unlock_engineer(PIN)
    clock.now += 21
    # after a lockout each wrong PIN locks again, twice as long
    assert _enter(qtbot, window, "4444") == "wrong PIN: locked for 60 s"
    clock.now += 61
    _enter(qtbot, window, PIN)
    assert window.engineer_unlocked and window.engineer_dock.isVisible()
    assert _events(window) == [
        ("pin-entry", "engineer.pin_failed", "wrong PIN (1 in a row)"),
        ("pin-entry", "engineer.pin_failed", "wrong PIN (2 in a row)"),
        ("pin-entry", "engineer.pin_failed", "wrong PIN (3 in a row)"),
        ("pin-entry", "engineer.pin_lockout", "locked for 30 s"),
        ("pin-entry", "engineer.pin_refused", "PIN entered while locked for 20 s"),
        ("pin-entry", "engineer.pin_refused", "PIN entered while locked for 20 s"),
        ("pin-entry", "engineer.pin_failed", "wrong PIN (1 in a row)"),
        ("pin-entry", "engineer.pin_lockout", "locked for 60 s"),
        ("pin-entry", "engineer.unlock", "engineer mode entered"),
    ]
    # the right PIN clears the count: three free tries again
    window.lock_engineer()
    assert "2 more tries" in _enter(qtbot, window, "1111")


def test_the_lockout_doubles_up_to_fifteen_minutes():
    clock = FakeClock()
    guard = PinGuard(clock=clock)
    stored = hash_pin(PIN, iterations=100_000)
    for _ in range(PinGuard.FREE_TRIES - 1):
        assert not guard.attempt("0000", stored).ok and guard.remaining() == 0
    locks = []
    for _ in range(8):
        assert not guard.attempt("0000", stored).ok
        locks.append(guard.remaining())
        clock.now += guard.remaining()
    assert locks == [30, 60, 120, 240, 480, 900, 900, 900]
    assert guard.attempt(PIN, stored).ok and guard.remaining() == 0


def test_a_lockout_survives_a_restart_of_the_station(qtbot, assets, tmp_path,  # noqa: F811
                                                     make_window):  # noqa: F811
    path = write_recipe(tmp_path, assets, pin_hash=hash_pin(PIN))
    first = make_window(path)
    for pin in ("1111", "2222", "3333"):
        assert not first.unlock_engineer(pin)
    first.shutdown()
    second = make_window(path)  # real clock: the 30 s have not passed
    assert not second.unlock_engineer(PIN)
    assert "locked for" in second.message.text()
    second.toggle_engineer()
    assert "locked for" in second.pin_dialog.error.text()  # said before anyone types


class ClaimsCtrlE(QObject):
    """What a focused QLineEdit does on X11, where Ctrl+E means "end of line": it accepts
    the ShortcutOverride, and no shortcut fires. The offscreen platform uses another key
    scheme, so the test widget claims the key the same way."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if (event.type() == QEvent.Type.ShortcutOverride and event.key() == Qt.Key.Key_E
                and event.modifiers() == Qt.KeyboardModifier.ControlModifier):
            event.accept()
            return True
        return False


def _ctrl_e(qtbot, widget) -> None:
    qtbot.keyClick(widget, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)


def test_ctrl_e_works_whatever_widget_has_the_focus(qtbot, locked_window):
    window, _clock = locked_window
    window.recipes.setFocus()
    _ctrl_e(qtbot, window.recipes)
    dialog = window.pin_dialog
    assert dialog is not None and dialog.isVisible()
    _ctrl_e(qtbot, dialog.first)  # again, from inside the dialog: the same dialog, no second
    assert window.pin_dialog is dialog
    _enter(qtbot, window, PIN)
    assert window.engineer_unlocked

    # a text field that claims Ctrl+E for itself has the focus: Ctrl+E still locks
    port_message = window.engineer.editors["reject.message"].widget
    claims = ClaimsCtrlE()
    port_message.installEventFilter(claims)
    port_message.setFocus()
    qtbot.waitUntil(port_message.hasFocus, timeout=2000)
    _ctrl_e(qtbot, port_message)
    assert not window.engineer_unlocked and not window.engineer_dock.isVisible()

    # a key press that reached a widget without the shortcut firing (no active window)
    QApplication.sendEvent(window.live, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_E,
                                                  Qt.KeyboardModifier.ControlModifier))
    assert window.pin_dialog.isVisible()
    _enter(qtbot, window, PIN)
    assert window.engineer_unlocked
    spin = window.engineer.editors["reject.delay_ms"].widget
    spin.installEventFilter(claims)
    spin.setFocus()
    _ctrl_e(qtbot, spin)
    assert not window.engineer_unlocked


def test_ctrl_e_from_the_rejects_browser_opens_the_pin_dialog(qtbot, locked_window):
    window, _clock = locked_window
    window.show_rejects()
    browser = window.rejects_dialog
    activate(qtbot, browser)
    _ctrl_e(qtbot, browser)
    assert window.pin_dialog is not None and window.pin_dialog.isVisible()


def test_the_reject_port_is_a_choice_of_real_ports_and_loop(qtbot, locked_window):
    window, _clock = locked_window
    assert window.unlock_engineer(PIN)
    editor = window.engineer.editors["reject.port"]
    combo = editor.widget
    assert isinstance(combo, QComboBox) and not combo.isEditable()
    items = [combo.itemText(i) for i in range(combo.count())]
    assert items == serial_port_choices(window.engine.recipe.reject.port)
    assert LOOP_PORT in items and all(i == LOOP_PORT or i.startswith(("/dev/", "COM"))
                                      for i in items)
    for hostile in ("spy://loop://?file=/tmp/station-spy.txt", "socket://example.com:80"):
        combo.setCurrentText(hostile)
        assert editor.get() == LOOP_PORT
    assert "reject.port" not in window.engineer.changes()


def test_a_port_not_plugged_in_stays_as_the_recipe_has_it(qtbot, assets, tmp_path,  # noqa: F811
                                                         make_window):  # noqa: F811
    path = write_recipe(tmp_path, assets, pin_hash=hash_pin(PIN))
    path.write_text(path.read_text().replace("enabled = true", "enabled = false")
                    .replace('port = "loop://"', 'port = "/dev/ttyUSB7"'))
    window = make_window(path)
    assert window.unlock_engineer(PIN)
    combo = window.engineer.editors["reject.port"].widget
    assert combo.currentText() == "/dev/ttyUSB7"
    assert window.engineer.changes() == {}
    combo.setCurrentText(LOOP_PORT)
    assert window.engineer.changes() == {"reject.port": LOOP_PORT}


def test_camera_cti_is_not_editable_from_the_window(qtbot, locked_window):
    window, _clock = locked_window
    assert window.unlock_engineer(PIN)
    assert not any(key.startswith("camera.cti") for key in window.engineer.editors)
    with pytest.raises(ValueError, match="camera.cti"):
        FieldEditor("camera.cti")


def test_pin_events_reach_the_records_file(qtbot, locked_window):
    window, _clock = locked_window
    assert not window.unlock_engineer("0000")
    database = load_recipe(window.engine.recipe.path).records.database
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT who, key, old, new FROM events").fetchall()
    assert ("pin-entry", "engineer.pin_failed", None, "wrong PIN (1 in a row)") in rows
