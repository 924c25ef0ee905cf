"""Engineer mode: behind a PIN (stored only as a PBKDF2 hash in the recipe), the settings an
operator must not touch — thresholds and fusion rule, reject output and timing, camera, ROI.

Every change is validated by :func:`station.recipe.update_recipe` before anything is written,
written back to the recipe (comments kept, dated backup left beside it) and recorded as an
event with who changed what from what to what. The decision applies live
(``engine.set_decision``); the other sections need the engine rebuilt, which "Save and restart"
does through the window.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from station.recipe import RecipeError, field_help, field_info, update_recipe

WHO = "engineer"


# -- the PIN ------------------------------------------------------------------------------------

class PinDialog(QDialog):
    """Ask for the engineer PIN, or (``set_new``) for a new one, typed twice.

    ``verify(pin) -> bool`` decides; a wrong PIN keeps the dialog open with a red message.
    ``pin`` holds the accepted (or new) PIN after ``accepted``; it is never written anywhere.
    """

    def __init__(self, verify: Callable[[str], bool] | None, set_new: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.verify = verify
        self.set_new = set_new
        self.pin = ""
        self.failures = 0
        self.setWindowTitle("Set the engineer PIN" if set_new else "Engineer mode")
        self.first = QLineEdit()
        self.first.setEchoMode(QLineEdit.EchoMode.Password)
        self.second = QLineEdit()
        self.second.setEchoMode(QLineEdit.EchoMode.Password)
        self.message = QLabel("No engineer PIN is set for this recipe yet: choose one (at least "
                              "4 characters)." if set_new else "Enter the engineer PIN.")
        self.message.setWordWrap(True)
        self.error = QLabel("")
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
            if len(pin) < 4:
                self.error.setText("the PIN needs at least 4 characters")
                return
            if pin != self.second.text():
                self.error.setText("the two entries differ")
                return
        elif self.verify is None or not self.verify(pin):
            self.failures += 1
            self.error.setText(f"wrong PIN ({self.failures} failed attempt"
                               f"{'s' if self.failures > 1 else ''})")
            self.first.clear()
            return
        self.pin = pin
        self.first.clear()
        self.second.clear()
        self.accept()


# -- recipe fields as widgets -----------------------------------------------------------------

def recipe_value(recipe: Any, dotted: str) -> Any:
    value = recipe
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class FieldEditor:
    """One recipe key as a widget (combo for choices, spin box for numbers, ...)."""

    def __init__(self, dotted: str, label: str | None = None) -> None:
        self.key = dotted
        tp, meta = field_info(dotted)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        self.optional = len(args) == 1 and type(None) in typing.get_args(tp)
        self.tp = args[0] if self.optional else tp
        self.label = label or dotted.rsplit(".", 1)[-1].replace("_", " ")
        choices = meta.get("choices")
        lo = meta.get("min", meta.get("gt", 0))
        hi = meta.get("max", 1e9)
        self.widget: Any
        if choices:
            self.widget = QComboBox()
            self.widget.addItems([str(c) for c in choices])
        elif self.tp is bool:
            self.widget = QCheckBox()
        elif self.tp is int:
            self.widget = QSpinBox()
            self.widget.setRange(int(lo), int(min(hi, 2**31 - 1)))
        elif self.tp is float:
            self.widget = QDoubleSpinBox()
            self.widget.setDecimals(3 if hi <= 1000 else 1)
            step_min = 0.001 if meta.get("gt") is not None else 0.0
            self.widget.setRange(float(lo) + step_min, float(hi))
            self.widget.setSingleStep(0.05 if hi <= 1000 else 10.0)
        else:
            self.widget = QLineEdit()
        try:
            self.widget.setToolTip(field_help(dotted))
        except KeyError:
            pass

    def set(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox | QDoubleSpinBox):
            w.setValue(0 if value is None else value)
        else:
            w.setText("" if value is None else str(value).encode("unicode_escape").decode())

    def get(self) -> Any:
        w = self.widget
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return int(w.value())
        if isinstance(w, QDoubleSpinBox):
            value = float(w.value())
            return None if self.optional and value == 0 else value
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
        decision = QWidget()
        form = QFormLayout(decision)
        for editor in (self.rule, self.ae_threshold, self.cls_threshold):
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
        self.roi: list[QSpinBox] = []
        for title, keys in SECTIONS.items():
            page = QWidget()
            form = QFormLayout(page)
            if title == "ROI":
                for name in ROI_PARTS:
                    spin = QSpinBox()
                    spin.setRange(0, 20000)
                    spin.setToolTip("region of interest in frame pixels; all 0 = whole frame")
                    spin.valueChanged.connect(
                        lambda _v: self.roi_edited.emit([int(s.value()) for s in self.roi]))
                    self.roi.append(spin)
                    form.addRow(f"ROI {name} (px)", spin)
            for key, label in keys:
                editor = FieldEditor(key, label)
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
        simulated = self.recipe.camera.source == "simulated"
        for key, editor in self.editors.items():
            editor.set(recipe_value(self.recipe, key))
            if key.startswith("camera."):  # only the settings this camera source uses
                self.forms[key].setRowVisible(editor.widget,
                                              key.startswith("camera.simulated.") == simulated)
        roi = tuple(self.recipe.localize.roi)
        for spin, value in zip(self.roi, roi, strict=False):
            spin.setValue(int(value))

    def _say(self, text: str, ok: bool) -> None:
        colour = "#66bb6a" if ok else "#ff5252"
        self.status.setText(f"<span style='color:{colour}'>{text}</span>")

    def apply_decision(self) -> bool:
        """Live: the engine decides with the new values from the next part on; saved too."""
        rule, ae, cls = self.rule.get(), self.ae_threshold.get(), self.cls_threshold.get()
        old = self.engine.inspector.decision
        try:
            # the engine refuses a rule the loaded models cannot serve: before the file changes
            self.engine.set_decision(rule, ae, cls, who=WHO)
        except ValueError as exc:
            self._say(f"not applied: {exc}", False)
            return False
        try:
            update_recipe(self.recipe.path, {"decision.rule": rule,
                                             "decision.autoencoder_threshold": ae,
                                             "decision.classifier_threshold": cls})
        except (RecipeError, OSError) as exc:
            self.engine.set_decision(old.rule, old.ae_threshold, old.cls_threshold, who=WHO)
            self._say(f"not saved, so not applied: {exc}", False)
            return False
        new_decision = dataclasses.replace(self.recipe.decision, rule=rule,
                                           autoencoder_threshold=ae, classifier_threshold=cls)
        self.recipe = dataclasses.replace(self.recipe, decision=new_decision)
        self.engine.recipe = self.recipe
        self._say(f"applied: rule {rule}, anomaly {ae:.2f}, defect {cls:.2f} (saved to "
                  f"{self.recipe.path.name})", True)
        self.decision_applied.emit()
        return True

    def changes(self) -> dict[str, Any]:
        """The keys whose widget differs from the recipe."""
        out: dict[str, Any] = {}
        for key, editor in self.editors.items():
            new, old = editor.get(), recipe_value(self.recipe, key)
            if new != old and not (new is None and old is None):
                out[key] = new
        roi = [int(s.value()) for s in self.roi]
        if roi != list(self.recipe.localize.roi):
            out["localize.roi"] = roi
        return out

    def save_and_restart(self) -> bool:
        """Write the changed keys (validated first, backup kept), record them, restart."""
        changes = self.changes()
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
