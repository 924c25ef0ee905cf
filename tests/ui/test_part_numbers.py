"""One part, one number (issue 14, item 9): the tile, the last-part panel and the counts say
the same thing about the same part; the score plot shows the thresholds in force, labelled,
without piling up lines; the part axes show whole part numbers.

Real window, real engine (tiny models), real clicks and key presses, offscreen.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from station.config import hash_pin
from station.decision import Verdict
from station.pipeline.inspector import PartResult
from station.pipeline.line_state import LineState, LineStatus
from tests.ui.test_gui import activate, assets, make_window, write_recipe  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PIN = "2468"


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Run the event loop until ``condition`` holds. Not ``qtbot.waitUntil``: once a test in
    this process has run ``run_app`` (``app.exec()`` then ``quit()``), ``QTest.qWait`` no
    longer delivers timer events, and the window's bridge is a timer."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        QApplication.processEvents()
        time.sleep(0.005)


def _show(window, result: PartResult) -> None:
    """Send ``result`` as the engine's part event and wait for the tile to show it."""
    window.engine.events.part.emit(result)
    wait_until(lambda: f"part #{result.part_id}" in window.verdict.detail.text())


def test_the_tile_and_the_last_part_panel_show_the_same_score(qtbot, assets, tmp_path,  # noqa: F811
                                                             make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    window.show_line_state(LineStatus(LineState.INSPECTING))  # as on a running line
    _show(window, PartResult(part_id="7", verdict=Verdict.REJECT, ae_score=1.4999,
                                    cls_score=0.29, latency_ms=5.0))
    assert "autoencoder 1.49" in window.verdict.detail.text()  # was 1.50 (rounded)
    assert window.part_view.ae_value.text() == "1.49"
    assert window.part_view.cls_value.text() == "0.29"  # not 0.28 (float error)


def test_inspected_counts_the_part_the_tile_shows(qtbot, assets, tmp_path,  # noqa: F811
                                                  make_window):  # noqa: F811  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets, ae=0.05))
    qtbot.keyClick(window, Qt.Key.Key_F5)
    seen = 0
    while seen < 4:
        wait_until(lambda: window.verdict.detail.text().startswith("part #"))
        shown = int(window.verdict.detail.text().split()[1].lstrip("#"))
        if shown > seen:
            seen = shown
            # the same event: Inspected already holds the part on the tile (it trailed by one)
            assert int(window.counts.values["inspected"].text()) >= shown
            assert int(window.counts.values["rejected"].text()) >= shown
        QApplication.processEvents()
    qtbot.keyClick(window, Qt.Key.Key_F5)
    wait_until(lambda: window.counts.counts == window.engine.counts())


def _visible_threshold_lines(window) -> list:
    return [item for item in window.trends.score_plot.getPlotItem().items
            if type(item).__name__ == "InfiniteLine" and item.isVisible()]


def test_a_live_threshold_change_moves_the_one_labelled_line(qtbot, assets, tmp_path,  # noqa: F811
                                                            make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets, pin_hash=hash_pin(PIN)))
    trends, panel = window.trends, window.part_view
    assert trends.threshold_lines() == [(1.0, "reject threshold 1.00")]
    assert len(_visible_threshold_lines(window)) == 1
    assert panel.note.text() == "scores: 1.00 = reject threshold"
    assert window.unlock_engineer(PIN)

    def apply(editor, text: str) -> None:
        qtbot.mouseClick(editor.widget, Qt.MouseButton.LeftButton)
        editor.widget.selectAll()
        qtbot.keyClick(editor.widget, Qt.Key.Key_Backspace)
        qtbot.keyClicks(editor.widget, text)
        qtbot.mouseClick(window.engineer.apply_decision_button, Qt.MouseButton.LeftButton)

    apply(window.engineer.ae_threshold, "1.7")
    # two thresholds now: each line says whose it is and where; nothing else was added
    assert trends.threshold_lines() == [(1.7, "anomaly threshold 1.70"),
                                        (1.0, "defect threshold 1.00")]
    assert len(_visible_threshold_lines(window)) == 2
    assert "1.00 = reject threshold" not in panel.note.text()  # said so before: wrong
    assert "anomaly 1.70" in panel.note.text() and panel.ae_limit.text() == "limit 1.70"

    apply(window.engineer.cls_threshold, "1.7")
    assert trends.threshold_lines() == [(1.7, "reject threshold 1.70")]
    assert len(_visible_threshold_lines(window)) == 1
    assert panel.note.text().startswith("scores: reject at 1.70")


@pytest.mark.parametrize("ids", [["298"], ["298", "299"], [str(i) for i in range(290, 300)]])
def test_the_part_axes_show_whole_part_numbers(qtbot, assets, tmp_path,  # noqa: F811
                                               make_window, ids):  # noqa: F811
    # after a restart the first parts have high numbers: the axis showed part 298.5
    window = make_window(write_recipe(tmp_path, assets))
    for part_id in ids:
        _show(window, PartResult(part_id=part_id, verdict=Verdict.PASS, ae_score=0.5,
                                        cls_score=0.4, latency_ms=3.0))
    window.trends.redraw()
    QApplication.processEvents()
    for plot in (window.trends.score_plot, window.trends.latency_plot):
        axis = plot.getAxis("bottom")
        low, high = plot.getViewBox().viewRange()[0]
        levels = axis.tickValues(low, high, axis.width())
        values = [v for _spacing, vs in levels for v in vs]
        assert values and all(float(v).is_integer() for v in values), values
        strings = [s for spacing, vs in levels for s in axis.tickStrings(vs, 1.0, spacing)]
        assert all(s.lstrip("-").isdigit() for s in strings), strings


def test_a_sure_classifier_does_not_flatten_the_score_plot(qtbot, assets, tmp_path,  # noqa: F811
                                                           make_window):  # noqa: F811
    # the classifier's score is an odds ratio: a sure defect reads thousands, and plotted as
    # such it would press every other point and the threshold line onto the axis
    window = make_window(write_recipe(tmp_path, assets))
    shown = []
    for part_id, ae, cls in (("1", 0.5, 0.01), ("2", 0.9, 4800.0), ("3", 1.3, 0.2)):
        _show(window, PartResult(part_id=part_id, verdict=Verdict.PASS, ae_score=ae,
                                 cls_score=cls, latency_ms=3.0))
        shown.append(window.part_view.cls_value.text())
    assert shown == ["0.01", "≥100", "0.20"]  # what fits the panel and still says "far over"
    window.trends.redraw()
    QApplication.processEvents()
    assert list(window.trends.cls_curve.getData()[1]) == [0.01, 4.0, 0.2]
    assert list(window.trends.ae_curve.getData()[1]) == [0.5, 0.9, 1.3]
    low, high = window.trends.score_plot.getViewBox().viewRange()[1]
    assert low <= 1.0 <= high <= 5.0  # the threshold line and the points stay readable


def test_a_verdict_by_the_sum_rule_says_so_under_the_scores(qtbot):
    """Under the sum rule a part can be rejected with both scores under their own limits
    (shown green): the line under them then says the rule and the evidence that decided,
    and the tile's detail names the evidence."""
    from station.config import DecisionSection
    from station.ui.part_view import PartView
    from station.ui.verdict import VerdictTile

    view = PartView()
    qtbot.addWidget(view)
    decision = DecisionSection(rule="sum", sum_threshold=0.25)
    r = PartResult(part_id="9", verdict=Verdict.REJECT, ae_score=0.9, cls_score=0.5,
                   evidence=0.42)
    view.show_result(r, decision)
    assert (view.ae_value.text(), view.cls_value.text()) == ("0.90", "0.50")
    assert view.note.text() == "rule sum: evidence +0.42 ≥ +0.25 (reject)"
    view.show_result(PartResult(part_id="10", verdict=Verdict.PASS, ae_score=0.9,
                                cls_score=0.5, evidence=0.1), decision)
    assert view.note.text() == "rule sum: evidence +0.10 < +0.25 (pass)"
    view.show_result(r, DecisionSection())  # either: the limits, as always
    assert view.note.text() == "scores: 1.00 = reject threshold"
    assert "evidence +0.42 (sum)" in VerdictTile._describe(r)


def test_under_the_sum_rule_the_score_plot_calls_its_line_a_limit_not_the_threshold(
        qtbot, assets, tmp_path, make_window):  # noqa: F811
    window = make_window(write_recipe(tmp_path, assets))
    window.trends.set_thresholds(1.0, 1.0, "sum")
    assert window.trends.threshold_lines() == [(1.0, "model limit 1.00 (rule sum)")]
    window.trends.set_thresholds(1.5, 1.0, "sum")
    assert window.trends.threshold_lines() == [(1.5, "anomaly limit 1.50 (rule sum)"),
                                               (1.0, "defect limit 1.00 (rule sum)")]
    window.trends.set_thresholds(1.0, 1.0)
    assert window.trends.threshold_lines() == [(1.0, "reject threshold 1.00")]
