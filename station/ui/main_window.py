"""The station's main window: live view, last part, verdict, counts, trends, alarms, controls,
engineer mode (:mod:`station.ui.engineer_mode`) and status bar, over one :class:`station.pipeline.engine.Engine`.

The window holds no inspection state of its own: it reads the engine (polling and events
re-posted by :class:`EngineBridge`) and calls its methods. Switching recipes builds a new
engine and only then lets the old one go, so a bad recipe never stops a running line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from station.ui import theme
from station.ui.alarms import AlarmBanner
from station.ui.bridge import EngineBridge
from station.ui.counters import CountsPanel
from station.ui.engineer import WHO as ENGINEER
from station.ui.engineer import EngineerPanel, PinDialog, PinGuard
from station.ui.engineer_mode import EngineerMode
from station.ui.keys import ENGINEER_KEY, StationKeys
from station.ui.live_view import LiveView
from station.ui.messages import MessageLine
from station.ui.part_view import PartView
from station.ui.recipes import RecipeBox
from station.ui.rejects_browser import RejectsBrowser
from station.ui.scaling import BannerArea, fit_to_screen, scale_fonts, scale_for
from station.ui.status_bar import StationStatusBar
from station.ui.trends import TrendsPanel
from station.ui.verdict import VerdictTile

log = logging.getLogger(__name__)


def make_engine(recipe: Any, inspector: Any = None) -> Any:
    """The engine for ``recipe``; its models are loaded (and refused, if need be) first."""
    from station.pipeline import Engine
    from station.pipeline.inspector import Inspector

    return Engine(recipe, inspector=inspector or Inspector.from_recipe(recipe))


class MainWindow(EngineerMode):
    """``MainWindow(engine)``; the engine may be running or not. ``close`` closes it.
    ``engine_changed(engine)`` after a recipe switch (publishers re-attach to it). ``host``:
    the :class:`station.plant.StationHost` that owns ``engine`` when PLC servers run beside
    the window; a changeover the PLC commands then reaches the window too (the host emits
    from the server's thread, the window follows on the GUI thread). ``links``: what the
    status bar shows of the PLC and MQTT links (polled with the rates)."""

    engine_changed = Signal(object)
    _host_changed = Signal(object)  # the host's engine_changed, re-posted to the GUI thread

    def __init__(self, engine: Any, parent: QWidget | None = None, *, host: Any = None,
                 links: Callable[[], Any] | None = None) -> None:
        super().__init__(parent)
        self.engine: Any = None
        # the changeover logic (station.plant.host): given, or made at the first switch
        self.host: Any = host
        # the plant's links for the status bar (station.plant.services.link_summary), if served
        self.links = links
        self._switching = False  # a switch of the window's own: the host's signal is ours
        self.engineer_unlocked = False
        self.pin_dialog: PinDialog | None = None
        # one guard per window: switching recipes does not clear a lockout
        self.pin_guard = PinGuard(record=self._record_pin_event)
        self.rejects_dialog: RejectsBrowser | None = None
        self.last_error = ""
        self.scale = 0.0  # the fonts' scale, set from the window's size
        self.setStyleSheet(theme.STYLE)
        base = self.font()
        base.setPointSize(theme.BASE_POINT_SIZE)
        self.setFont(base)
        self._connect_bridge()
        self._build_toolbar()
        self._build_body()
        self._build_engineer_dock()
        self.status = StationStatusBar(self)
        for label in self.status.labels.values():  # a long camera source never widens
            if not label.whole:                    # the status bar past a 1024 px window
                label.setMinimumWidth(24)
        self.setStatusBar(self.status)
        self._install_shortcuts()
        self._start_timers()
        fit_to_screen(self)
        self.apply_scale(scale_for(self.size()))
        self._set_engine(engine)
        if host is not None:
            self._host_changed.connect(self._on_host_changed)  # queued: another thread emits
            host.engine_changed.connect(self._relay_host)
        if engine.records is not None:  # a lockout survives a restart of the station
            self.pin_guard.restore(engine.records.events(n=500))

    # -- building the window -------------------------------------------------------------------
    def _connect_bridge(self) -> None:
        """The engine's events, re-posted on the GUI thread, to the window's slots."""
        self.bridge = EngineBridge(self)
        self.bridge.part.connect(self.on_part)
        self.bridge.alarm.connect(lambda _a: self.refresh_alarms())
        self.bridge.alarm_cleared.connect(lambda _a: self.refresh_alarms())
        self.bridge.state.connect(self.on_state)
        self.bridge.line.connect(self.show_line_state)

    def _build_toolbar(self) -> None:
        """The top bar: what the operator presses, and one line saying what just happened."""
        self.product = QLabel("")
        pfont = QFont()
        pfont.setPointSize(20)
        pfont.setBold(True)
        self.product.setFont(pfont)
        self.product.setContentsMargins(16, 0, 8, 0)
        self.product.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Preferred)
        self.start_button = QPushButton("START")
        self.start_button.setToolTip("start / stop inspecting (F5)")
        self.start_button.clicked.connect(self.toggle_running)
        self.trigger_button = QPushButton("Trigger")
        self.trigger_button.setToolTip("inspect the current picture now (Space)")
        self.trigger_button.clicked.connect(self.trigger)
        self.recipes = RecipeBox()
        self.recipes.activated.connect(self._on_recipe_chosen)
        self.recipes.setEnabled(False)  # switching the product: engineer mode only
        self.rejects_button = QPushButton("Rejects…")
        self.rejects_button.clicked.connect(self.show_rejects)
        self.engineer_button = QPushButton("Engineer…")
        self.engineer_button.setToolTip("engineer mode, behind a PIN (Ctrl+E)")
        self.engineer_button.clicked.connect(self.toggle_engineer)
        self.kiosk_button = QPushButton("Full screen")
        self.kiosk_button.setToolTip("kiosk mode (F11)")
        self.kiosk_button.clicked.connect(self.toggle_kiosk)
        for b in (self.start_button, self.trigger_button, self.rejects_button,
                  self.engineer_button, self.kiosk_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.message = MessageLine()  # one line under the buttons: what just happened
        # a tool bar spans the whole width, above the engineer dock too
        top = QToolBar("controls")
        top.setMovable(False)
        top.setFloatable(False)
        top.toggleViewAction().setEnabled(False)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        for widget in (self.start_button, self.trigger_button, self.product, self.recipes, spacer, self.rejects_button, self.engineer_button,
                       self.kiosk_button):
            top.addWidget(widget)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, top)
        self.toolbar = top

    def _build_body(self) -> None:
        """The alarm banner, the picture, the verdict, the part, the counts and the trends."""
        self.alarms = AlarmBanner()
        self.alarms.acknowledge_requested.connect(self.acknowledge)
        self.live = LiveView()
        self.verdict = VerdictTile()
        self.part_view = PartView()
        self.counts = CountsPanel()
        self.counts.reset_requested.connect(self.reset_counts)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.verdict, 3)
        rl.addWidget(self.part_view, 4)
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(self.live)
        upper.addWidget(right)
        self.trends = TrendsPanel()
        # the counts beside the plots: the right column stays short enough for 600 px
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.trends)
        lower.addWidget(self.counts)
        for row in (upper, lower):
            row.setStretchFactor(0, 3)
            row.setStretchFactor(1, 2)
            row.setSizes([600, 400])
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(upper)
        body.addWidget(lower)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 1)
        body.setSizes([600, 200])
        self.alarm_area = BannerArea(self.alarms, self)

        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(6, 2, 6, 0)
        cl.setSpacing(4)
        cl.addWidget(self.message)
        cl.addWidget(self.alarm_area)
        cl.addWidget(body, 1)
        self.setCentralWidget(central)

    def _build_engineer_dock(self) -> None:
        """Engineer mode: a dock shown (and enabled) only while unlocked."""
        self.engineer = EngineerPanel()
        self.engineer.lock_requested.connect(self.lock_engineer)
        self.engineer.restart_requested.connect(self.reload_recipe)
        self.engineer.change_pin_requested.connect(lambda: self.ask_pin(set_new=True))
        self.engineer.decision_applied.connect(self._on_decision_applied)
        self.engineer.roi_edited.connect(self._show_pending_roi)
        self.engineer_dock = QDockWidget("ENGINEER MODE", self)
        self.engineer_dock.setWidget(self.engineer)
        self.engineer_dock.setMaximumWidth(380)
        self.engineer_dock.setFeatures(QDockWidget.DockWidgetFeature.NoDockWidgetFeatures)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.engineer_dock)
        self.engineer_dock.hide()
        self.engineer.setEnabled(False)

    def _install_shortcuts(self) -> None:
        """F5 start/stop, Space trigger, F11 kiosk, Ctrl+E engineer: whatever has the focus,
        in the window or its dialogs (the rejects browser too: F5 must always stop the line)."""
        self.keys = StationKeys(self, {
            QKeySequence(Qt.Key.Key_F5): self.toggle_running,
            QKeySequence(Qt.Key.Key_Space): self.trigger,
            QKeySequence(Qt.Key.Key_F11): self.toggle_kiosk,
            ENGINEER_KEY: self.toggle_engineer})

    def _start_timers(self) -> None:
        """The status bar and trends every 0.5 s, the counts every second (polling the engine)."""
        self._stats_timer, self._counts_timer = QTimer(self), QTimer(self)
        self._stats_timer.timeout.connect(self.refresh_stats)
        self._counts_timer.timeout.connect(self.refresh_counts)
        self._stats_timer.start(500)
        self._counts_timer.start(1000)

    # -- engine ------------------------------------------------------------------------------
    def _set_engine(self, engine: Any) -> None:
        self.engine = engine
        self.bridge.attach(engine)
        self.live.set_engine(engine)
        recipe = engine.recipe
        self.product.setText(recipe.product.name)
        self.product.setToolTip(f"{recipe.product.name} ({recipe.path})")
        self.setWindowTitle(f"Inspection station — {recipe.product.name} ({recipe.path.name})")
        self.recipes.fill(recipe.path)
        self.counts.for_product(recipe.product.name)
        self.verdict.clear()
        self.trends.clear()
        self._on_decision_applied()
        self.refresh_counts()
        self.refresh_alarms()
        self.show_line_state(engine.line_state())
        self.on_state("running" if engine.running else "stopped")
        self.engine_changed.emit(engine)

    def _on_recipe_chosen(self, index: int) -> None:
        """Another product chosen: only in engineer mode, and only once confirmed."""
        path = self.recipes.path_at(index)
        current = self.engine.recipe
        self.recipes.fill(current.path)  # the list shows what runs until the switch is done
        if path.resolve() == current.path.resolve():
            return
        if not self.engineer_unlocked:
            self._say("switching the product needs engineer mode (Ctrl+E)", ok=False)
            return
        chosen = self.recipes.itemText(self.recipes.findData(str(path.resolve())))
        box = QMessageBox(
            QMessageBox.Icon.Warning, "Switch product",
            f"Switch the line from {current.product.name} ({current.path.name}) to "
            f"{chosen} ({path.name})?\n\nThe station restarts on the new recipe; the counts "
            "shown are then the new product's.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.finished.connect(lambda _code: self._on_switch_confirmed(box, path))
        self._switch_confirm = box  # tests reach the open box here
        box.open()

    def _on_switch_confirmed(self, box: QMessageBox, path: Path) -> None:
        if box.standardButton(box.clickedButton()) == QMessageBox.StandardButton.Yes:
            self.switch_recipe(path)

    def switch_recipe(self, path: Path, *, same: bool = False) -> bool:
        """Run the line on ``path``. A recipe or model that is refused leaves the running
        engine untouched and says why; returns whether the switch happened. The changeover
        itself is the host's (:meth:`StationHost.change_to`), the one a PLC commands too."""
        from station.plant.host import StationHost

        if self.host is None or self.host.engine is not self.engine:
            self.host = StationHost(engine=self.engine)
        self._switching = True
        try:
            outcome = self.host.change_to(path, same=same)
        finally:
            self._switching = False
        if not outcome.ok:
            self._refused(path, outcome.error or RuntimeError(outcome.reason),
                          outcome.was_running, outcome.recipe)
            self.recipes.fill(self.engine.recipe.path)
            return False
        self.lock_engineer()
        self._set_engine(self.host.engine)
        self._say(outcome.reason, ok=True)
        return True

    def _relay_host(self, engine: Any) -> None:
        """Any thread: hand the host's new engine to the GUI thread."""
        self._host_changed.emit(engine)

    def _on_host_changed(self, engine: Any) -> None:
        """The PLC changed the recipe over (``SelectRecipe``, the Modbus recipe register):
        show the new engine; engineer mode was unlocked for the old recipe, so it locks."""
        if self._switching or self.engine is None or engine is self.engine:
            return
        if engine is not self.host.engine:  # a later changeover follows: show that one
            return
        self.lock_engineer()
        self._set_engine(engine)
        self._say(f"the PLC switched the line to {engine.recipe.path.name} "
                  f"({engine.recipe.product.name})", ok=True)

    def reload_recipe(self) -> bool:
        """Rebuild the engine from its (just edited) recipe file."""
        unlocked = self.engineer_unlocked
        ok = self.switch_recipe(self.engine.recipe.path, same=True)
        if ok and unlocked:
            self._unlock()
        return ok

    def _refused(self, path: Path, exc: BaseException, running: bool, recipe: Any = None) -> None:
        from station.pipeline.startup import describe_startup_error

        staying = "still running" if running else "staying on"
        why = describe_startup_error(path.name, recipe, exc)  # file: key = value: reason
        self.last_error = f"{path.name} refused, {staying} {self.engine.recipe.path.name}:\n{why}"
        log.error("%s", self.last_error)
        self._say(self.last_error, ok=False)
        box = QMessageBox(QMessageBox.Icon.Critical, "Recipe refused", self.last_error,
                          QMessageBox.StandardButton.Ok, self)
        self._error_box = box
        box.open()

    # -- operator actions ----------------------------------------------------------------------
    def toggle_running(self) -> None:
        if self.engine is None:  # closed
            return
        if self.engine.running:
            self.engine.stop()
        else:
            self.engine.start()
        self.on_state("running" if self.engine.running else "stopped")

    def on_state(self, state: str) -> None:
        if self.engine is None:  # closed
            return
        running = self.engine.running
        self.start_button.setText("STOP" if running else "START")
        self.start_button.setStyleSheet(theme.start_style(running, self.scale))
        self.trigger_button.setEnabled(running)
        if state == "ended":
            self._say("the camera source ended (end of file or folder)", ok=False)
        self.live.update()

    def show_line_state(self, status: Any) -> None:
        """The engine's one line state, on the tile, the status bar and the alarm list."""
        for view in (self.verdict, self.status, self.alarms):
            view.show_line_state(status)

    def trigger(self) -> None:
        if self.engine is None:  # closed
            return
        if not self.engine.running:
            self._say("start the station first (F5)", ok=False)
            return
        event = self.engine.software_trigger()
        self._say(f"triggered part #{event.part_id}", ok=True)

    def on_part(self, result: Any) -> None:
        if self.engine is None:  # closed
            return
        self.verdict.show_result(result)
        self.part_view.show_result(result, self.engine.inspector.decision)
        self.live.show_part(result)
        self.trends.add_result(result)
        self.counts.note_part(result)  # counted with the tile, from the same event
        QTimer.singleShot(200, self.refresh_counts)

    def refresh_counts(self) -> None:
        self._poll(lambda: self.counts.refresh(self.engine))

    def _poll(self, read: Callable[[], None]) -> None:
        """A timer's read of the engine; skipped, never a fault, when a PLC's changeover has
        just closed that engine (on the server's thread: the window follows a moment later)."""
        try:
            if self.engine is not None and not self._left_by_host():
                read()
        except Exception:
            if not self._left_by_host():  # else: closed under this very read
                raise

    def _left_by_host(self) -> bool:
        return self.host is not None and self.host.engine is not self.engine

    def reset_counts(self) -> None:
        self.engine.reset_counts(ENGINEER if self.engineer_unlocked else "operator")
        self.trends.clear()
        self.refresh_counts()

    def refresh_alarms(self) -> None:
        self._poll(self._show_alarms)

    def _show_alarms(self) -> None:
        self.alarms.set_alarms(self.engine.alarms())
        scale_fonts(self.alarms, self.scale)  # new rows: the window's scale
        self.alarm_area.fit()

    def acknowledge(self, alarm_id: int) -> None:
        who = ENGINEER if self.engineer_unlocked else "operator"
        try:
            self.engine.acknowledge(alarm_id, who)
        except ValueError as exc:  # already acknowledged elsewhere
            log.warning("%s", exc)
        self.refresh_alarms()

    def refresh_stats(self) -> None:
        self._poll(self._show_stats)

    def _show_stats(self) -> None:
        self.status.update_stats(self.engine.stats(), self.live.shown_fps)
        self.status.show_plant(self.links() if self.links is not None else None)
        self.trends.redraw()

    def show_rejects(self) -> None:
        if self.engine.records is None:
            self._say("this station keeps no records", ok=False)
            return
        self.rejects_dialog = RejectsBrowser(self.engine.records, self)
        self.rejects_dialog.show()

    def toggle_kiosk(self) -> None:
        """F11: full screen on / off (the fonts follow the new size)."""
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()
        self.kiosk_button.setText("Leave full screen" if self.isFullScreen() else "Full screen")

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self.apply_scale(scale_for(event.size()))

    def apply_scale(self, scale: float) -> None:
        """Fonts, buttons and the alarm banner's share for a window this size."""
        if scale == self.scale:
            return
        self.scale = scale
        scale_fonts(self, scale, skip=(self.verdict.word,))  # the tile sizes its own word
        height = round(56 * scale)
        for button in (self.start_button, self.trigger_button, self.rejects_button,
                       self.engineer_button, self.kiosk_button):
            button.setMinimumHeight(height)
        self.start_button.setMinimumWidth(round(150 * scale))
        running = self.engine is not None and self.engine.running
        self.start_button.setStyleSheet(theme.start_style(running, scale))
        self.alarm_area.fit()

    def _on_decision_applied(self) -> None:
        d = self.engine.inspector.decision
        self.trends.set_thresholds(d.ae_threshold, d.cls_threshold, d.rule)
        self.part_view.set_thresholds(d.ae_threshold, d.cls_threshold)

    # -- closing -------------------------------------------------------------------------------
    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the line and close the engine (port, records); safe to call twice."""
        for timer in (self._stats_timer, self._counts_timer):
            timer.stop()
        self.bridge.detach()
        if self.host is not None:
            self.host.engine_changed.disconnect(self._relay_host, missing_ok=True)
        if self.engine is not None:
            engine, self.engine = self.engine, None
            self.live.set_engine(None)
            host = self.host
            if host is not None and host.engine is not engine:
                host.engine.close()  # the PLC's changeover the window had not shown yet
            engine.close()
