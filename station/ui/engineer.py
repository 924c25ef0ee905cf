"""Engineer mode: behind a PIN (stored only as a PBKDF2 hash in the recipe), the settings an
operator must not touch — thresholds and fusion rule, reject output and timing, camera, ROI.

The PIN is set with ``station set-pin`` (a recipe without one keeps engineer mode locked).
:class:`PinGuard` refuses guessing: after three wrong PINs a lockout of 30 s, doubling with
each further wrong PIN up to 15 min, during which even the right PIN is refused; every wrong
PIN, refusal and lockout is an event in the records.

Every change is validated by :func:`station.config.update_recipe` before anything is written,
written back to the recipe (comments kept, dated backup left beside it) and recorded as an
event with who changed what from what to what. The decision applies live
(``engine.set_decision``); the other sections need the engine rebuilt, which "Save and restart"
does through the window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from station.config import (
    MIN_PIN_LENGTH,
    RecipeError,
    check_pin,
    field_help,
    field_info,
    pin_problem,
    update_recipe,
)
from station.config.show import in_range, num_text, range_text

WHO = "engineer"
PIN_ENTRY = "pin-entry"  # who an attempt at the PIN is recorded as: nobody is known yet
NO_PIN_TEXT = ("No engineer PIN is set for this recipe: run `station set-pin --recipe {recipe}`"
               " to set one.")
# Keys the window must never edit: camera.cti is native code the station loads (trust rule
# in docs/gui.md); it is set in the recipe file by whoever may install software.
NOT_EDITABLE = frozenset({"camera.cti"})
LOOP_PORT = "loop://"


# -- the PIN ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PinVerdict:
    """What :meth:`PinGuard.attempt` decided, and the line to show."""

    ok: bool
    message: str = ""


_LOCK_RE = re.compile(r"locked for (\d+) s")


class PinGuard:
    """Wrong-PIN lockout for engineer mode; one per window, whatever recipe runs.

    ``FREE_TRIES`` wrong PINs in a row lock the PIN for ``FIRST_LOCK_S``; after a lockout
    each further wrong PIN locks it again for twice as long, up to ``MAX_LOCK_S``; the right
    PIN (outside a lockout) clears it all. ``record(key, text)`` stores each wrong PIN,
    refusal, lockout and unlock as an event. ``clock`` is monotonic seconds (tests pass
    their own, so they need not wait out a lockout).
    """

    FREE_TRIES = 3
    FIRST_LOCK_S = 30.0
    MAX_LOCK_S = 900.0

    def __init__(self, record: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.record = record or (lambda key, text: None)
        self.clock = clock
        self.failures = 0  # wrong PINs since the last lockout or success
        self.lockouts = 0  # lockouts since the last success
        self.locked_until = 0.0

    def remaining(self) -> int:
        """Whole seconds of lockout left (0 = not locked)."""
        return max(0, math.ceil(self.locked_until - self.clock()))

    def attempt(self, pin: str, stored: str) -> PinVerdict:
        """Check ``pin`` against the recipe's ``stored`` hash, unless locked out."""
        left = self.remaining()
        if left:
            self.record("engineer.pin_refused", f"PIN entered while locked for {left} s")
            return PinVerdict(False, f"locked for {left} s after repeated wrong PINs")
        try:
            ok = check_pin(pin, stored)
        except (ValueError, OverflowError):
            return PinVerdict(False, "the recipe's engineer.pin_hash is malformed: set the PIN "
                                     "again with station set-pin")
        if ok:
            self.failures = self.lockouts = 0
            self.record("engineer.unlock", "engineer mode entered")
            return PinVerdict(True)
        self.failures += 1
        self.record("engineer.pin_failed", f"wrong PIN ({self.failures} in a row)")
        if self.failures < self.FREE_TRIES and not self.lockouts:
            tries = self.FREE_TRIES - self.failures
            return PinVerdict(False, f"wrong PIN ({tries} more tr{'y' if tries == 1 else 'ies'} "
                                     "before a lockout)")
        seconds = int(min(self.FIRST_LOCK_S * 2 ** self.lockouts, self.MAX_LOCK_S))
        self.lockouts += 1
        self.failures = 0
        self.locked_until = self.clock() + seconds
        self.record("engineer.pin_lockout", f"locked for {seconds} s")
        return PinVerdict(False, f"wrong PIN: locked for {seconds} s")

    def restore(self, events: Iterable[dict], now: float | None = None) -> None:
        """Take up a lockout from the records' events (newest first), so that restarting
        the station does not clear it."""
        now = time.time() if now is None else now
        newest: float | None = None
        for event in events:
            if event.get("key") == "engineer.unlock":
                break
            found = _LOCK_RE.search(str(event.get("new") or ""))
            if event.get("key") == "engineer.pin_lockout" and found:
                self.lockouts += 1
                if newest is None:
                    newest = float(event["time_epoch"]) + int(found.group(1)) - now
        if newest is not None and newest > 0:
            self.locked_until = self.clock() + newest


class PinDialog(QDialog):
    """Ask for the engineer PIN, or (``set_new``) for a new one, typed twice.

    ``verify(pin) -> PinVerdict`` decides; a refused PIN keeps the dialog open with its
    reason in red ("wrong PIN", "locked for N s"). ``pin`` holds the accepted (or new) PIN
    after ``accepted``; it is never written anywhere.
    """

    def __init__(self, verify: Callable[[str], PinVerdict] | None, set_new: bool = False,
                 parent: QWidget | None = None, notice: str = "") -> None:
        super().__init__(parent)
        self.verify = verify
        self.set_new = set_new
        self.pin = ""
        self.failures = 0
        self.setWindowTitle("Change the engineer PIN" if set_new else "Engineer mode")
        self.first = QLineEdit()
        self.first.setEchoMode(QLineEdit.EchoMode.Password)
        self.second = QLineEdit()
        self.second.setEchoMode(QLineEdit.EchoMode.Password)
        self.message = QLabel(f"Choose a new engineer PIN (at least {MIN_PIN_LENGTH} "
                              "characters)." if set_new else "Enter the engineer PIN.")
        self.message.setWordWrap(True)
        self.error = QLabel(notice)
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #ff5252; font-weight: bold;")
        form = QFormLayout()
        form.addRow("PIN" if not set_new else "new PIN", self.first)
        if set_new:
            form.addRow("again", self.second)
        else:
            self.second.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        buttons.accepted.connect(self.try_accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def try_accept(self) -> None:
        pin = self.first.text()
        if self.set_new:
            problem = pin_problem(pin)
            if problem:
                self.error.setText(problem)
                return
            if pin != self.second.text():
                self.error.setText("the two entries differ")
                return
        else:
            verdict = self.verify(pin) if self.verify is not None else PinVerdict(False, "")
            if not verdict.ok:
                self.failures += 1
                self.error.setText(verdict.message or "wrong PIN")
                self.first.clear()
                return
        self.pin = pin
        self.first.clear()
        self.second.clear()
        self.accept()


# -- recipe fields as widgets -----------------------------------------------------------------

class FieldInvalid(ValueError):
    """A field holds a value the recipe schema refuses; the message names the field and its
    allowed range, so nothing typed is ever changed into something else behind the engineer's
    back (a spin box turned -1 into 1 and applied it)."""


class NumberField(QLineEdit):
    """A number as typed: kept exactly, checked on Apply against the schema's own range.

    ``setValue``/``value`` keep the spin-box spelling callers know."""

    def setValue(self, value: Any) -> None:  # noqa: N802 (spin-box spelling)
        self.setText("" if value is None else num_text(value))

    def value(self) -> str:
        return self.text().strip()


def recipe_value(recipe: Any, dotted: str) -> Any:
    value = recipe
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def serial_port_choices(current: str = "") -> list[str]:
    """What ``reject.port`` may be set to here: the serial ports ``station devices`` lists,
    ``loop://`` (no hardware), and the recipe's current value so that it is kept as it is."""
    from serial.tools import list_ports

    ports = sorted({p.device for p in list_ports.comports()}) + [LOOP_PORT]
    if current and current not in ports:
        ports.insert(0, current)
    return ports


class FieldEditor:
    """One recipe key as a widget (combo for choices, spin box for numbers, ...).

    ``choices`` makes it a fixed list whatever the key's type (``reject.port``: only the
    ports this machine has), refilled with :meth:`set_choices`.
    """

    def __init__(self, dotted: str, label: str | None = None,
                 choices: Iterable[str] | None = None) -> None:
        if dotted in NOT_EDITABLE:
            raise ValueError(f"{dotted} is not editable from the window")
        self.key = dotted
        tp, meta = field_info(dotted)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        self.optional = len(args) == 1 and type(None) in typing.get_args(tp)
        self.tp = args[0] if self.optional else tp
        self.label = label or dotted.rsplit(".", 1)[-1].replace("_", " ")
        choices = list(choices) if choices is not None else meta.get("choices")
        self.meta = meta
        self.widget: Any
        if choices:
            self.widget = QComboBox()
            self.widget.addItems([str(c) for c in choices])
        elif self.tp is bool:
            self.widget = QCheckBox()
        elif self.tp in (int, float):
            self.widget = NumberField()
            self.widget.textEdited.connect(lambda _t: self.widget.setStyleSheet(""))
        else:
            self.widget = QLineEdit()
        with contextlib.suppress(KeyError):
            allowed = f" ({self.allowed()})" if self.tp in (int, float) else ""
            self.widget.setToolTip(field_help(dotted) + allowed)

    def allowed(self) -> str:
        """The schema's range for this key, as the recipe's own errors say it."""
        noun = "an integer" if self.tp is int else "a number"
        text = range_text(self.meta, noun)
        return text + (", or empty" if self.optional else "")

    def _number(self, text: str) -> Any:
        """``text`` as the key's number, or :class:`FieldInvalid` naming field and range."""
        if not text and self.optional:
            return None
        try:
            value: Any = int(text) if self.tp is int else float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not in_range(value, self.meta):
            self.widget.setStyleSheet("border: 2px solid #ff5252;")
            shown = f'"{text}"' if text else "empty"
            raise FieldInvalid(f"{self.label} ({self.key}) = {shown}: expected {self.allowed()}")
        return value

    def set_choices(self, choices: Iterable[str]) -> None:
        """Refill a choice list (ports come and go); the widget stays a fixed list."""
        w = self.widget
        w.clear()
        w.addItems([str(c) for c in choices])

    def set(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, NumberField):
            w.setValue(value)
            w.setStyleSheet("")
        else:
            w.setText("" if value is None else str(value).encode("unicode_escape").decode())

    def get(self) -> Any:
        w = self.widget
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, NumberField):
            return self._number(w.value())
        return w.text().encode().decode("unicode_escape")


SECTIONS: dict[str, list[tuple[str, str]]] = {
    "Reject output": [
        ("reject.enabled", "reject output on"), ("reject.port", "serial port"),
        ("reject.baudrate", "baud rate"), ("reject.mode", "mode"), ("reject.line", "line"),
        ("reject.message", "message"), ("reject.ack", "acknowledgement"),
        ("reject.delay_mode", "delay by"), ("reject.delay_ms", "delay (ms)"),
        ("reject.delay_parts", "delay (parts)"), ("reject.pulse_ms", "pulse width (ms)"),
        ("reject.fail_safe", "fail-safe"), ("trigger.mode", "trigger"),
    ],
    "Camera": [
        ("camera.fps", "frames per second"), ("camera.exposure_us", "exposure (µs)"),
        ("camera.gain_db", "gain (dB)"), ("camera.width", "width (px)"),
        ("camera.height", "height (px)"), ("camera.simulated.fps", "simulated: fps"),
        ("camera.simulated.speed_px_s", "simulated: belt speed (px/s)"),
        ("camera.simulated.defect_rate", "simulated: defect rate"),
    ],
    "ROI": [
        ("trigger.line_frac", "trigger line (0..1 across ROI)"),
        ("trigger.direction", "parts travel"),
    ],
}
ROI_PARTS = ("x", "y", "width", "height")


class EngineerPanel(QWidget):
    """The engineer's settings. The window passes the engine and recipe; nothing here is
    reachable before :class:`PinDialog` accepted."""

    restart_requested = Signal()
    roi_edited = Signal(object)  # [x, y, w, h] being edited, for the live view to draw
    lock_requested = Signal()
    change_pin_requested = Signal()
    decision_applied = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine: Any = None
        self.recipe: Any = None
        self.status = QLabel("")
        self.status.setWordWrap(True)
        tabs = QTabWidget()
        # decision: applied live
        self.rule = FieldEditor("decision.rule", "fusion rule")
        self.ae_threshold = FieldEditor("decision.autoencoder_threshold", "anomaly threshold")
        self.cls_threshold = FieldEditor("decision.classifier_threshold", "defect threshold")
        self.sum_threshold = FieldEditor("decision.sum_threshold", "evidence threshold (sum)")
        decision = QWidget()
        form = QFormLayout(decision)
        for editor in (self.rule, self.ae_threshold, self.cls_threshold, self.sum_threshold):
            form.addRow(editor.label, editor.widget)
        note = QLabel("Normalized scores: 1.00 = the threshold the model chose at training. "
                      "Applied at once and saved to the recipe.")
        note.setWordWrap(True)
        form.addRow(note)
        self.apply_decision_button = QPushButton("Apply thresholds")
        self.apply_decision_button.clicked.connect(self.apply_decision)
        form.addRow(self.apply_decision_button)
        tabs.addTab(decision, "Decision")
        # the sections that need a restart
        self.editors: dict[str, FieldEditor] = {}
        self.forms: dict[str, QFormLayout] = {}
        self.roi: list[NumberField] = []
        self.roi_meta = field_info("localize.roi")[1]
        for title, keys in SECTIONS.items():
            page = QWidget()
            form = QFormLayout(page)
            if title == "ROI":
                for name in ROI_PARTS:
                    box = NumberField()
                    box.setToolTip("region of interest in frame pixels; all 0 = whole frame ("
                                   f"{range_text(self.roi_meta, 'an integer')})")
                    box.textChanged.connect(self._roi_typed)
                    self.roi.append(box)
                    form.addRow(f"ROI {name} (px)", box)
            for key, label in keys:
                editor = FieldEditor(key, label, choices=[LOOP_PORT] if key == "reject.port"
                                     else None)
                self.editors[key] = editor
                self.forms[key] = form
                form.addRow(editor.label, editor.widget)
            button = QPushButton("Save and restart")
            button.setToolTip("write these settings to the recipe (with a backup) and restart "
                              "the engine on it")
            button.clicked.connect(self.save_and_restart)
            form.addRow(button)
            tabs.addTab(page, title)
        self.tabs = tabs
        lock = QPushButton("Lock (leave engineer mode)")
        lock.clicked.connect(self.lock_requested.emit)
        change_pin = QPushButton("Change PIN…")
        change_pin.clicked.connect(self.change_pin_requested.emit)
        row = QHBoxLayout()
        row.addWidget(change_pin)
        row.addWidget(lock)
        layout = QVBoxLayout(self)
        layout.addWidget(tabs, 1)
        layout.addWidget(self.status)
        layout.addLayout(row)

    def load(self, engine: Any) -> None:
        """Fill the widgets from the engine's live decision and its recipe."""
        self.engine = engine
        self.recipe = engine.recipe
        d = engine.inspector.decision
        self.rule.set(d.rule)
        self.ae_threshold.set(d.ae_threshold)
        self.cls_threshold.set(d.cls_threshold)
        self.sum_threshold.set(d.sum_threshold)
        simulated = self.recipe.camera.source == "simulated"
        self.editors["reject.port"].set_choices(serial_port_choices(self.recipe.reject.port))
        for key, editor in self.editors.items():
            editor.set(recipe_value(self.recipe, key))
            if key.startswith("camera."):  # only the settings this camera source uses
                self.forms[key].setRowVisible(editor.widget,
                                              key.startswith("camera.simulated.") == simulated)
        roi = tuple(self.recipe.localize.roi)
        for box, value in zip(self.roi, roi, strict=False):
            box.setValue(int(value))
            box.setStyleSheet("")

    def roi_values(self, mark: bool = True) -> list[int]:
        """The ROI as typed; :class:`FieldInvalid` (field outlined red when ``mark``) for a
        part that is not a whole number in the schema's range."""
        out = []
        for name, box in zip(ROI_PARTS, self.roi, strict=True):
            text = box.value()
            try:
                value: int | None = int(text)
            except ValueError:
                value = None
            if value is None or not in_range(value, self.roi_meta):
                if mark:
                    box.setStyleSheet("border: 2px solid #ff5252;")
                shown = f'"{text}"' if text else "empty"
                raise FieldInvalid(f"ROI {name} (localize.roi) = {shown}: expected "
                                   f"{range_text(self.roi_meta, 'an integer')}")
            out.append(value)
        return out

    def _roi_typed(self, _text: str) -> None:
        """Draw the ROI being typed on the live view, once every part of it is a number."""
        with contextlib.suppress(FieldInvalid):
            self.roi_edited.emit(self.roi_values(mark=False))
        for box in self.roi:
            box.setStyleSheet("")

    def _say(self, text: str, ok: bool) -> None:
        colour = "#66bb6a" if ok else "#ff5252"
        self.status.setText(f"<span style='color:{colour}'>{text}</span>")

    def decision_changes(self) -> dict[str, Any]:
        """The decision keys whose field differs from the live decision; raises
        :class:`FieldInvalid` for a value the schema refuses."""
        d = self.engine.inspector.decision
        fields = {"decision.rule": (self.rule, d.rule),
                  "decision.autoencoder_threshold": (self.ae_threshold, d.ae_threshold),
                  "decision.classifier_threshold": (self.cls_threshold, d.cls_threshold),
                  "decision.sum_threshold": (self.sum_threshold, d.sum_threshold)}
        out: dict[str, Any] = {}
        for key, (editor, old) in fields.items():
            new = editor.get()
            if new != old:
                out[key] = new
        return out

    def apply_decision(self) -> bool:
        """Live: the engine decides with the new values from the next part on; saved too.

        Invalid input is refused with its field and range; only changed keys are written,
        and nothing at all (no backup) when nothing changed."""
        try:
            changes = self.decision_changes()
        except FieldInvalid as exc:
            self._say(f"not applied: {exc}", False)
            return False
        if not changes:
            self._say("nothing changed: nothing applied or written", True)
            return False
        old = self.engine.inspector.decision
        rule = changes.get("decision.rule", old.rule)
        ae = changes.get("decision.autoencoder_threshold", old.ae_threshold)
        cls = changes.get("decision.classifier_threshold", old.cls_threshold)
        total = changes.get("decision.sum_threshold", old.sum_threshold)
        try:
            # the engine refuses a rule the loaded models cannot serve: before the file changes
            self.engine.set_decision(rule, ae, cls, who=WHO, sum_threshold=total)
        except ValueError as exc:
            self._say(f"not applied: {exc}", False)
            return False
        try:
            update_recipe(self.recipe.path, changes)
        except (RecipeError, OSError) as exc:
            self.engine.set_decision(old.rule, old.ae_threshold, old.cls_threshold, who=WHO,
                                     sum_threshold=old.sum_threshold)
            self._say(f"not saved, so not applied: {exc}", False)
            return False
        new_decision = dataclasses.replace(self.recipe.decision, rule=rule,
                                           autoencoder_threshold=ae, classifier_threshold=cls,
                                           sum_threshold=total)
        self.recipe = dataclasses.replace(self.recipe, decision=new_decision)
        self.engine.recipe = self.recipe
        self._say("applied: " + ", ".join(f"{k} = {num_text(v)}" for k, v in changes.items())
                  + f" (saved to {self.recipe.path.name})", True)
        self.decision_applied.emit()
        return True

    def changes(self) -> dict[str, Any]:
        """The keys whose widget differs from the recipe."""
        out: dict[str, Any] = {}
        for key, editor in self.editors.items():
            if key in NOT_EDITABLE:
                continue
            new, old = editor.get(), recipe_value(self.recipe, key)
            if new != old and not (new is None and old is None):
                out[key] = new
        roi = self.roi_values()
        if roi != list(self.recipe.localize.roi):
            out["localize.roi"] = roi
        return out

    def save_and_restart(self) -> bool:
        """Write the changed keys (validated first, backup kept), record them, restart."""
        try:
            changes = self.changes()
        except FieldInvalid as exc:
            self._say(f"not saved: {exc}", False)
            return False
        if not changes:
            self._say("nothing changed", True)
            return False
        try:
            update_recipe(self.recipe.path, changes)
        except (RecipeError, OSError) as exc:
            self._say(f"not saved: {exc}", False)
            return False
        records = getattr(self.engine, "records", None)
        if records is not None:
            for key, value in changes.items():
                records.record_event(WHO, key, recipe_value(self.recipe, key), value)
        self._say("saved: " + ", ".join(f"{k} = {v}" for k, v in changes.items())
                  + "; restarting", True)
        self.restart_requested.emit()
        return True
