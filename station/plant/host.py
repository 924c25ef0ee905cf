"""The station as the plant sees it: one running engine across recipe changeovers.

The window and ``station run --headless`` both hold a :class:`StationHost`; the PLC servers
(:mod:`station.plant.modbus_server`, :mod:`station.plant.opcua_server`) and the MQTT publisher
follow ``engine_changed`` to re-attach to the engine a changeover built. A changeover is the
GUI's: load and validate the recipe, load its models, stop the old engine (parts in flight
finish), build the new one; anything refused leaves the old engine running, and says why in
the recipe's terms (``file: key = value: reason``).

Recipes are numbered for PLCs: ``[product] number`` when set, else the file's position
(1, 2, ...) in the sorted recipe folder; the name is the file's stem (``demo`` for demo.toml).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from psygnal import Signal

from station.config import Recipe, list_recipes, load_recipe
from station.pipeline import Engine
from station.pipeline.startup import describe_startup_error
from station.plant.pulse import RejectPulse

log = logging.getLogger(__name__)


class SelectCode(IntEnum):
    """The answer to a recipe selection, as a PLC reads it (Modbus register, OPC UA)."""

    NONE = 0  # nothing asked yet
    OK = 1  # running the selected recipe (or already was)
    UNKNOWN = 2  # no recipe with that number or name
    BUSY = 3  # a part is in flight, or another changeover runs: ask again when Ready
    REFUSED = 4  # the recipe or its models were refused; the old recipe keeps running
    IN_PROGRESS = 5  # the changeover is running (Modbus: it runs in the background)


@dataclass(frozen=True)
class RecipeEntry:
    """One recipe of the folder: its PLC number, name (file stem), product and file."""

    number: int
    name: str
    product: str
    path: Path
    problem: str = ""  # why it cannot be loaded ("" = it loads)


@dataclass(frozen=True)
class Changeover:
    """The outcome of a changeover: ``code``, a one-line ``reason``, and for a refused one
    the exception and the recipe (if it loaded) the GUI formats into its dialog."""

    ok: bool
    code: SelectCode
    reason: str
    error: BaseException | None = None
    recipe: Recipe | None = None
    was_running: bool = False


def _number_of(path: Path) -> int:
    """``[product] number`` of a recipe that does not validate (0 if unreadable), so a PLC
    selecting it hears why it is refused rather than "unknown"."""
    try:
        with path.open("rb") as f:
            raw = f.read(1 << 20)  # a recipe is a few kB; a huge file is not read whole
        number = tomllib.loads(raw.decode("utf-8")).get("product", {}).get("number", 0)
    except (OSError, ValueError, AttributeError, RecursionError):
        return 0
    return number if isinstance(number, int) and 0 < number <= 65535 else 0


def check_plc_needs(recipe: Recipe) -> None:
    """A PLC trigger or Reject bit needs a PLC interface to carry it (ValueError if not)."""
    if recipe.modbus.enabled or recipe.opcua.enabled:
        return
    if recipe.trigger.mode == "plc":
        raise ValueError('trigger.mode = "plc": expected [modbus] or [opcua] enabled (or '
                         "--modbus / --opcua) to carry the PLC's Trigger")
    if recipe.reject.enabled and recipe.reject.output == "plc":
        raise ValueError('reject.output = "plc": expected [modbus] or [opcua] enabled (or '
                         "--modbus / --opcua) to carry the Reject bit")


def plc_busy(engine: Engine) -> bool:
    """A part the PLC triggered is in flight: a changeover now would judge it on the wrong
    recipe's terms, so it is refused. A line that triggers itself (free run, hardware) always
    has parts coming; there, as in the window, the old engine stops taking frames and its
    parts in flight finish and are recorded before the new recipe runs."""
    return engine.recipe.trigger.mode == "plc" and engine.in_flight > 0


class StationHost:
    """Owns the running :class:`Engine`; ``select_recipe`` changes it over (see module doc).

    ``adjust`` is applied to every recipe the host loads (the command line's ``--modbus`` /
    ``--opcua`` overrides), so a changeover keeps them. ``engine_changed(engine)`` is emitted
    after a changeover, from the thread that asked for it.
    """

    engine_changed = Signal(object)

    def __init__(self, recipe: Recipe | None = None, *, engine: Engine | None = None,
                 adjust: Callable[[Recipe], Recipe] | None = None,
                 engine_options: dict[str, Any] | None = None) -> None:
        """Give a ``recipe`` (the host builds its engine) or an ``engine`` already built."""
        self.adjust = adjust or (lambda r: r)
        self.engine_options = dict(engine_options or {})
        self.pulse = RejectPulse()  # the PLC's Reject bit, the same across changeovers
        self._switch = threading.Lock()
        self.changing = False
        if engine is None:
            if recipe is None:
                raise ValueError("StationHost needs a recipe or an engine")
            engine = self.build_engine(self.adjust(recipe))
        self.engine: Engine = engine

    @property
    def recipe(self) -> Recipe:
        return self.engine.recipe

    def build_engine(self, recipe: Recipe, inspector: Any = None) -> Engine:
        """The engine for ``recipe``, its models loaded (and refused, if need be) first."""
        from station.pipeline.inspector import Inspector

        check_plc_needs(recipe)
        return Engine(recipe, inspector=inspector or Inspector.from_recipe(recipe),
                      reject_output=self.pulse, **self.engine_options)

    # -- the recipe folder ----------------------------------------------------------------
    def catalogue(self) -> list[RecipeEntry]:
        """The recipes of the running recipe's folder, with their PLC numbers and names."""
        entries = []
        for position, path in enumerate(list_recipes(self.recipe.folder), 1):
            try:
                r = load_recipe(path, check_files=False)
                entries.append(RecipeEntry(r.product.number or position, path.stem,
                                           r.product.name, path.resolve()))
            except Exception as exc:  # a broken file is listed, with why
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                entries.append(RecipeEntry(_number_of(path) or position, path.stem, "",
                                           path.resolve(), first))
        return entries

    def current_entry(self) -> RecipeEntry | None:
        here = self.recipe.path.resolve()
        return next((e for e in self.catalogue() if e.path == here), None)

    def find(self, key: str | int) -> tuple[RecipeEntry | None, str]:
        """The entry a PLC means by ``key`` (a number, or a name / file name), or why none."""
        entries = self.catalogue()
        text = str(key).strip()
        if isinstance(key, int) or text.isdigit():
            number = int(text)
            hits = [e for e in entries if e.number == number]
            what = f"recipe number {number}"
        else:
            stem = text[:-5] if text.endswith(".toml") else text
            hits = [e for e in entries if e.name == stem]
            what = f"recipe {text!r}"
        if len(hits) == 1:
            return hits[0], ""
        known = ", ".join(f"{e.number} {e.name}" for e in entries) or "none"
        if not hits:
            return None, f"{what} is unknown; known: {known}"
        return None, (f"{what} is ambiguous: " + ", ".join(e.path.name for e in hits)
                      + " (set [product] number in each)")

    # -- changeover -----------------------------------------------------------------------
    def select_recipe(self, key: str | int) -> tuple[bool, str]:
        """Change over to the recipe a PLC names; ``(ok, reason)``. See :meth:`select`."""
        outcome = self.select(key)
        return outcome.ok, outcome.reason

    def select(self, key: str | int) -> Changeover:
        """As the GUI's product switch, but refused while a PLC-triggered part is in flight
        (:func:`plc_busy`)."""
        entry, why = self.find(key)
        if entry is None:
            return Changeover(False, SelectCode.UNKNOWN, why)
        if entry.path == self.recipe.path.resolve():
            return Changeover(True, SelectCode.OK, f"already running {entry.name}")
        return self.change_to(entry.path, refuse_busy=True)

    def change_to(self, path: Path, *, same: bool = False, refuse_busy: bool = False
                  ) -> Changeover:
        """Run the line on ``path``: a refused recipe or model leaves the old engine running.

        ``same``: rebuild from the (edited) running recipe; it restarts only if it ran.
        """
        if not self._switch.acquire(blocking=False):
            return Changeover(False, SelectCode.BUSY, "busy: another changeover is running")
        try:
            self.changing = True
            return self._change(Path(path), same, refuse_busy)
        finally:
            self.changing = False
            self._switch.release()

    def _change(self, path: Path, same: bool, refuse_busy: bool) -> Changeover:
        from station.pipeline.inspector import Inspector

        old = self.engine
        if refuse_busy and plc_busy(old):
            return Changeover(False, SelectCode.BUSY, f"busy: {old.in_flight} part(s) in "
                              "flight; select again when Ready", was_running=old.running)
        recipe = None
        try:
            recipe = self.adjust(load_recipe(path))
            check_plc_needs(recipe)
            inspector = Inspector.from_recipe(recipe)  # a refused model: the line runs on
        except Exception as exc:  # RecipeError, ModelRefused, ...
            return self._refused(path, exc, recipe, old.running)
        was_running = old.running
        old.stop()  # parts in flight finish first, so the new engine continues the part ids
        try:
            new = self.build_engine(recipe, inspector)
        except Exception as exc:  # a serial port or camera setting that will not open
            if was_running:
                old.start()
            return self._refused(path, exc, recipe, was_running)
        self.engine = new  # first: whoever still polls ``old`` can tell it has been left
        try:
            old.close()
        except Exception:
            log.exception("closing the engine of %s failed", old.recipe.path.name)
        if was_running or not same:
            new.start()
        log.info("changed over to %s", path.name)
        self.engine_changed.emit(new)
        return Changeover(True, SelectCode.OK, ("restarted on " if same else "switched to ")
                          + path.name, recipe=recipe, was_running=was_running)

    def _refused(self, path: Path, exc: BaseException, recipe: Recipe | None,
                 running: bool) -> Changeover:
        why = describe_startup_error(path.name, recipe, exc)  # file: key = value: reason
        log.error("recipe %s refused, staying on %s: %s", path.name, self.recipe.path.name, why)
        return Changeover(False, SelectCode.REFUSED, "; ".join(why.splitlines()),
                          error=exc, recipe=recipe, was_running=running)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.engine.start()

    def close(self) -> None:
        """Close the engine (pending rejects fire first) and drop the Reject bit."""
        self.engine.close()
        self.pulse.close()


def with_overrides(recipe: Recipe, *, modbus: tuple[str, int] | None = None,
                   opcua: str | None = None) -> Recipe:
    """The recipe with the command line's ``--modbus HOST:PORT`` / ``--opcua ENDPOINT``:
    each replaces (and enables) its section."""
    if modbus is not None:
        recipe = dataclasses.replace(recipe, modbus=dataclasses.replace(
            recipe.modbus, enabled=True, host=modbus[0], port=modbus[1]))
    if opcua is not None:
        recipe = dataclasses.replace(recipe, opcua=dataclasses.replace(
            recipe.opcua, enabled=True, endpoint=opcua))
    return recipe
