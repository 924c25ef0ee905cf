"""Engineer fields never change a value behind the engineer's back (issue 14, item 10): what
is typed is refused with the field and its range, or applied as typed; Apply writes only what
changed, and nothing (no backup) when nothing changed. Also item 5: the shipped recipes and
docs/gui.md agree that ``pin_hash = ""`` locks engineer mode.

Real window, real engine (tiny models), real key presses and clicks, offscreen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from station.config import hash_pin, load_recipe
from tests.ui.test_gui import activate, assets, make_window, write_recipe  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PIN = "2468"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def engineer(qtbot, assets, tmp_path, make_window):  # noqa: F811 (fixtures)
    path = write_recipe(tmp_path, assets, ae=1.25, pin_hash=hash_pin(PIN))
    window = make_window(path)
    assert window.unlock_engineer(PIN)
    return window, path


def _type(qtbot, widget, text: str) -> None:
    """Click into the field, select what is there and type ``text`` over it."""
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)
    widget.selectAll()
    qtbot.keyClick(widget, Qt.Key.Key_Backspace)
    qtbot.keyClicks(widget, text)


def _backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.*.bak.toml"))


@pytest.mark.parametrize("typed", ["-1", "abc", "0", ""])
def test_an_invalid_threshold_is_refused_with_its_field_and_range(qtbot, engineer, typed):
    window, path = engineer
    panel = window.engineer
    before = path.read_text()
    _type(qtbot, panel.ae_threshold.widget, typed)
    assert panel.ae_threshold.widget.text() == typed  # kept as typed, not turned into 1
    qtbot.mouseClick(panel.apply_decision_button, Qt.MouseButton.LeftButton)
    said = panel.status.text()
    assert "not applied" in said and "anomaly threshold" in said
    assert "greater than 0 and at most 1000" in said
    assert window.engine.inspector.decision.ae_threshold == pytest.approx(1.25)
    assert path.read_text() == before and not _backups(path)
    assert load_recipe(path).decision.autoencoder_threshold == pytest.approx(1.25)


def test_apply_writes_only_what_changed_and_nothing_when_nothing_changed(qtbot, engineer):
    window, path = engineer
    panel = window.engineer
    qtbot.mouseClick(panel.apply_decision_button, Qt.MouseButton.LeftButton)
    assert "nothing changed" in panel.status.text()
    assert not _backups(path)
    assert not [e for e in window.engine.records.events(500) if e["key"].startswith("decision.")]

    _type(qtbot, panel.cls_threshold.widget, "1.4")
    qtbot.mouseClick(panel.apply_decision_button, Qt.MouseButton.LeftButton)
    assert "decision.classifier_threshold = 1.4" in panel.status.text()
    assert "autoencoder_threshold" not in panel.status.text()
    assert len(_backups(path)) == 1
    saved = load_recipe(path).decision
    assert (saved.autoencoder_threshold, saved.classifier_threshold) == (1.25, 1.4)
    assert "autoencoder_threshold = 1.25   # normalized" in path.read_text()  # line untouched
    keys = [e["key"] for e in window.engine.records.events(500) if e["key"].startswith("decision.")]
    assert keys == ["decision.classifier_threshold"]

    qtbot.mouseClick(panel.apply_decision_button, Qt.MouseButton.LeftButton)  # again: no change
    assert "nothing changed" in panel.status.text() and len(_backups(path)) == 1


def test_save_and_restart_refuses_an_out_of_range_setting(qtbot, engineer):
    window, path = engineer
    panel = window.engineer
    before = path.read_text()
    _type(qtbot, panel.editors["reject.pulse_ms"].widget, "-5")
    assert not panel.save_and_restart()
    said = panel.status.text()
    assert "not saved" in said and "pulse width (ms)" in said and "between 1 and 10000" in said
    assert path.read_text() == before and not _backups(path)


def test_shipped_recipes_and_docs_agree_an_empty_pin_locks_engineer_mode():
    docs = (ROOT / "docs" / "gui.md").read_text(encoding="utf-8")
    assert 'without a PIN (`pin_hash = ""`, as shipped) keeps engineer mode locked' in docs
    for recipe in sorted((ROOT / "recipes").glob("*.toml")):
        text = recipe.read_text(encoding="utf-8")
        if "pin_hash" in text:
            assert '"" = engineer mode is LOCKED' in text, recipe.name
            assert "not locked" not in text, recipe.name


def test_a_negative_roi_is_refused_not_turned_positive(qtbot, engineer):
    window, path = engineer
    panel = window.engineer
    before = path.read_text()
    _type(qtbot, panel.roi[0], "-1")
    assert panel.roi[0].text() == "-1"
    assert not panel.save_and_restart()
    said = panel.status.text()
    assert "not saved" in said and "ROI x (localize.roi)" in said and "0 or more" in said
    assert path.read_text() == before and not _backups(path)
