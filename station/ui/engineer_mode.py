"""Engineer mode of the main window: the PIN (with its lockout), the dock of engineer
settings, and what locking and unlocking enable.

Why apart from :mod:`station.ui.main_window`: the PIN is checked, stored and locked out
here, and the lock opened and closed, so a reader checks the lock in one place.
:class:`EngineerMode` is the base class of :class:`~station.ui.main_window.MainWindow`,
which builds the widgets it reads (engine, live view, recipe box, message line, dock).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from PySide6.QtWidgets import QDockWidget, QMainWindow, QPushButton

from station.config import hash_pin, update_recipe
from station.ui.engineer import (
    NO_PIN_TEXT,
    PIN_ENTRY,
    EngineerPanel,
    PinDialog,
    PinGuard,
    PinVerdict,
)
from station.ui.engineer import WHO as ENGINEER
from station.ui.live_view import LiveView
from station.ui.messages import MessageLine
from station.ui.recipes import RecipeBox

log = logging.getLogger(__name__)


class EngineerMode(QMainWindow):
    """The engineer-mode half of the main window (the window builds the widgets named here)."""

    engine: Any
    live: LiveView
    recipes: RecipeBox
    engineer_button: QPushButton
    engineer_unlocked: bool
    pin_dialog: PinDialog | None
    pin_guard: PinGuard
    engineer: EngineerPanel
    engineer_dock: QDockWidget
    message: MessageLine  # one line under the buttons: what just happened

    def _say(self, text: str, ok: bool) -> None:
        self.message.say(text, ok)

    def toggle_engineer(self) -> None:
        """Ctrl+E and the Engineer button: lock, or ask for the PIN (never two dialogs)."""
        if self.engine is None:  # closed
            return
        if self.engineer_unlocked:
            self.lock_engineer()
        elif self.pin_dialog is not None and self.pin_dialog.isVisible():
            self.pin_dialog.raise_()
            self.pin_dialog.activateWindow()
        elif not self.engine.recipe.engineer.pin_required:
            self._say(NO_PIN_TEXT.format(recipe=self.engine.recipe.path), ok=False)
        else:
            self.ask_pin(set_new=False)

    def ask_pin(self, set_new: bool) -> PinDialog | None:
        """Open the PIN dialog (``open``, not ``exec``). ``set_new`` (changing the PIN) only
        from engineer mode: nobody chooses the first PIN here, that is ``station set-pin``."""
        if set_new and not self.engineer_unlocked:
            return None
        left = self.pin_guard.remaining()
        notice = f"locked for {left} s after repeated wrong PINs" if left and not set_new else ""
        dialog = PinDialog(self.verify_pin, set_new=set_new, parent=self, notice=notice)
        dialog.accepted.connect(lambda: self._pin_accepted(dialog))
        self.pin_dialog = dialog
        dialog.open()
        return dialog

    def verify_pin(self, pin: str) -> PinVerdict:
        """The PIN against the recipe's hash, through the lockout (each attempt recorded)."""
        recipe = self.engine.recipe
        if not recipe.engineer.pin_required:  # no PIN: locked, whatever is typed
            return PinVerdict(False, NO_PIN_TEXT.format(recipe=recipe.path))
        return self.pin_guard.attempt(pin, recipe.engineer.pin_hash)

    def _record_pin_event(self, key: str, text: str) -> None:
        if key == "engineer.pin_lockout":
            log.warning("engineer PIN: %s", text)
        records = getattr(self.engine, "records", None)
        if records is not None:
            records.record_event(PIN_ENTRY, key, None, text)

    def unlock_engineer(self, pin: str) -> bool:
        """Unlock with ``pin``; a wrong PIN leaves every engineer setting out of reach."""
        verdict = self.verify_pin(pin)
        if not verdict.ok:
            self._say(verdict.message or "wrong engineer PIN", ok=False)
            return False
        self._unlock()
        return True

    def _pin_accepted(self, dialog: PinDialog) -> None:
        if dialog.set_new:
            self.set_pin(dialog.pin)
        else:
            self._unlock()

    def set_pin(self, pin: str) -> None:
        """Store the PIN's hash (never the PIN) in the recipe, and record that it changed."""
        recipe = self.engine.recipe
        stored = hash_pin(pin)
        try:
            update_recipe(recipe.path, {"engineer.pin_hash": stored})
        except (ValueError, OSError) as exc:  # RecipeError is a ValueError
            self._say(f"engineer PIN not changed: {exc}", ok=False)
            return
        engineer = dataclasses.replace(recipe.engineer, pin_hash=stored)
        self.engine.recipe = dataclasses.replace(recipe, engineer=engineer)
        if self.engine.records is not None:
            self.engine.records.record_event(
                ENGINEER, "engineer.pin_hash", "set" if recipe.engineer.pin_hash else "",
                "changed")
        self._say("engineer PIN saved (hashed) in " + recipe.path.name, ok=True)

    def _unlock(self) -> None:
        self.engineer_unlocked = True
        self.engineer.load(self.engine)
        self.engineer.setEnabled(True)
        self.engineer_dock.show()
        self.engineer_button.setText("Lock engineer")
        self.recipes.setEnabled(True)

    def _show_pending_roi(self, roi: list[int]) -> None:
        current = list(self.engine.recipe.localize.roi) if self.engine is not None else roi
        pending = (roi[0], roi[1], roi[2], roi[3]) if len(roi) == 4 else None
        self.live.pending_roi = pending if self.engineer_unlocked and roi != current else None
        self.live.update()

    def lock_engineer(self) -> None:
        self.engineer_unlocked = False
        self.live.pending_roi = None
        self.engineer.setEnabled(False)
        self.engineer_dock.hide()
        self.engineer_button.setText("Engineer…")
        self.recipes.setEnabled(False)
