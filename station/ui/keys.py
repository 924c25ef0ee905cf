"""The station's keys (F5, Space, F11, Ctrl+E) do what they say whatever widget has the focus.

QShortcuts alone are not enough: a focused combo box takes Space (it opens its list, and
Space, Down, Enter then switches the product mid-run), a focused button presses itself, a
text field claims Ctrl+E, and behind a window-modal dialog no shortcut fires at all. So one
filter on the application takes these keys before any widget of the window sees them.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QComboBox, QLineEdit, QWidget

ENGINEER_KEY = QKeySequence("Ctrl+E")
SPACE = QKeySequence(Qt.Key.Key_Space)


def _free_text(widget: QObject) -> bool:
    """A field where a space is text (engineer mode: a reject message), not a PIN, number or
    list: there Space stays a space."""
    if not isinstance(widget, QLineEdit) or widget.isReadOnly():
        return False
    if widget.echoMode() != QLineEdit.EchoMode.Normal:
        return False
    return not isinstance(widget.parentWidget(), QAbstractSpinBox | QComboBox)


class StationKeys(QObject):
    """``StationKeys(window, {sequence: action})``: an application event filter.

    For a key event aimed at ``window`` or anything it owns (its dialogs included), a
    ShortcutOverride is taken (no widget may claim the key) and the KeyPress runs the
    action and goes no further. Held keys repeat nothing: F5 held does not start and stop.
    """

    def __init__(self, window: QWidget, actions: dict[QKeySequence, Callable[[], None]]) -> None:
        super().__init__(window)
        self.target = window
        self.actions = {seq.toString(): action for seq, action in actions.items()}
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    def _ours(self, obj: QObject) -> bool:
        if not isinstance(obj, QWidget):
            return False
        top: QWidget | None = obj.window()
        while top is not None:
            if top is self.target:
                return True
            top = top.parentWidget()
        return False

    def action_for(self, obj: QObject, event: QKeyEvent) -> Callable[[], None] | None:
        """The station action ``event`` on ``obj`` asks for, or None (not a station key)."""
        seq = QKeySequence(event.keyCombination())
        action = self.actions.get(seq.toString())
        if action is None or not self._ours(obj):
            return None
        if seq == SPACE and _free_text(obj):
            return None
        return action

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        kind = event.type()
        if kind not in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            return False
        if not isinstance(event, QKeyEvent):
            return False
        action = self.action_for(obj, event)
        if action is None:
            return False
        if kind == QEvent.Type.KeyPress and not event.isAutoRepeat():
            action()
        event.accept()
        return True
