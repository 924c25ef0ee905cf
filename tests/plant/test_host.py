"""StationHost: the numbered recipe catalogue and changeovers validated as the GUI's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from station.config import load_recipe
from station.plant import SelectCode, StationHost
from tests.e2e.test_engine import part_frames, wait_for
from tests.plant.plc_recipes import folder_recipe


def test_catalogue_numbers_recipes_by_key_or_position(tiny_models: Path, tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 2)
    first = folder_recipe(tmp_path, tiny_models, name="alpha", frames=frames)
    folder_recipe(tmp_path, tiny_models, name="bravo", number=7, frames=frames)
    folder_recipe(tmp_path, tiny_models, name="charlie", frames=frames)
    (tmp_path / "delta.toml").write_text("[product]\nname = 5\n")
    host = StationHost(load_recipe(first))
    try:
        entries = {e.name: e for e in host.catalogue()}
        assert [(e.name, e.number) for e in host.catalogue()] == [
            ("alpha", 1), ("bravo", 7), ("charlie", 3), ("delta", 4)]
        assert entries["bravo"].product == "bravo part"
        assert "delta.toml:2: product.name = 5" in entries["delta"].problem
        assert host.find(7)[0] == entries["bravo"]
        assert host.find("charlie")[0] == entries["charlie"]
        assert host.find("charlie.toml")[0] == entries["charlie"]
        entry, why = host.find(9)
        assert entry is None and why.startswith("recipe number 9 is unknown; known: 1 alpha")
    finally:
        host.close()


def test_select_recipe_changes_over_and_refuses_bad_ones(tiny_models: Path,
                                                         tmp_path: Path) -> None:
    frames = part_frames(tmp_path / "frames", 6)
    first = folder_recipe(tmp_path, tiny_models, name="alpha", trigger="hardware", frames=frames)
    folder_recipe(tmp_path, tiny_models, name="bravo", trigger="hardware", frames=frames,
                  number=12)
    bad = folder_recipe(tmp_path, tiny_models, name="charlie", trigger="hardware",
                        frames=frames, reject="enabled = false\npulse_ms = -5")
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if "pulse_ms" in t)
    host = StationHost(load_recipe(first))
    changed = []
    host.engine_changed.connect(changed.append)
    try:
        host.start()
        old = host.engine
        assert wait_for(lambda: len(old.results()) >= 2, 30.0)
        ok, reason = host.select_recipe(3)  # charlie: refused, alpha keeps running
        assert not ok and f"charlie.toml:{line}: reject.pulse_ms = -5" in reason
        assert host.engine is old and old.running and changed == []
        n = len(old.results())
        assert wait_for(lambda: len(old.results()) >= n + 2, 30.0), "the old recipe runs on"
        assert host.select(99).code == SelectCode.UNKNOWN
        assert host.select_recipe("alpha") == (True, "already running alpha")
        ok, reason = host.select_recipe(12)
        assert ok, reason
        assert changed == [host.engine] and host.engine is not old and not old.running
        assert host.recipe.product.name == "bravo part" and host.engine.running
        last_old = max(int(r.part_id) for r in old.results())
        assert wait_for(lambda: len(host.engine.results()) >= 2, 30.0)
        assert int(host.engine.results()[0].part_id) == last_old + 1, "part ids continue"
    finally:
        host.close()
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    recipes = {r[0] for r in db.execute("SELECT recipe FROM parts")}
    assert recipes == {"alpha part", "bravo part"}


def test_plc_trigger_without_a_plc_interface_is_refused(tiny_models: Path,
                                                        tmp_path: Path) -> None:
    first = folder_recipe(tmp_path, tiny_models, name="alpha", trigger="hardware")
    alone = tmp_path / "solo.toml"
    alone.write_text(first.read_text().replace("enabled = true", "enabled = false")
                     .replace('mode = "hardware"', 'mode = "plc"'))
    host = StationHost(load_recipe(first))
    try:
        ok, reason = host.select_recipe("solo")
        assert not ok
        assert reason == ('solo.toml: trigger.mode = "plc": expected [modbus] or [opcua] '
                          "enabled (or --modbus / --opcua) to carry the PLC's Trigger")
    finally:
        host.close()
