"""The operator window driven offscreen with pytest-qt over a real engine.

Real parts throughout: tiny ONNX models built with ``onnx.helper`` (real graphs, real
metadata, real onnxruntime sessions), a folder of rendered synthetic parts as the camera,
a ``loop://`` serial port for the reject output, SQLite records in ``tmp_path``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.exceptions import TimeoutError  # noqa: A004 (pytest-qt's own)

from station.config import check_pin, hash_pin, list_recipes, load_recipe
from station.ui.main_window import MainWindow, make_engine

pytestmark = pytest.mark.timeout(60)

SIZE = 64


def _tiny_models(folder: Path) -> None:
    """anomaly_map = |tensor - background level| (its mean is the score); P(defect) is a
    sigmoid of the same mean. Good enough to tell a part from an empty belt, and real ONNX."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from station.vision.align import AlignParams
    from station.vision.localize import LocalizeParams
    from station.vision.preprocess import PreprocessSpec

    spec = PreprocessSpec(size=SIZE, channels=1)
    consts = [helper.make_tensor("bg", TensorProto.FLOAT, [], [float(spec.background_value)]),
              helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
              helper.make_tensor("k", TensorProto.FLOAT, [], [20.0])]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])
    diff = [helper.make_node("Sub", ["image", "bg"], ["d"]),
            helper.make_node("Abs", ["d"], ["anomaly_map"])]
    graphs = {
        "autoencoder": helper.make_graph(
            [*diff, helper.make_node("ReduceMean", ["anomaly_map", "axes"], ["score"], keepdims=0)],
            "ae", [image],
            [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, SIZE, SIZE]),
             helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])], consts),
        "classifier": helper.make_graph(
            [*diff, helper.make_node("ReduceMean", ["anomaly_map", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "k"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p_defect"])],
            "cls", [image], [helper.make_tensor_value_info("p_defect", TensorProto.FLOAT, ["N"])],
            consts),
    }
    for kind, graph in graphs.items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        helper.set_model_props(model, {
            "format_version": "1", "kind": kind, "version": "t1", "created": "2026-01-01",
            "preprocess": spec.to_json(), "localize": json.dumps(LocalizeParams().to_dict()),
            "align": json.dumps(AlignParams().to_dict()),
            "threshold": "0.5" if kind == "autoencoder" else "0.999",
            "score_normalization": json.dumps({"method": "ratio"})})
        onnx.save(model, str(folder / f"{kind}.onnx"))


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Path:
    """Models and a folder of rendered parts, made once for the module."""
    from station.sim import render_part

    root = tmp_path_factory.mktemp("gui_assets")
    _tiny_models(root)
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        part = render_part(rng, (120, 200), defect="scratch" if i == 2 else None)
        cv2.imwrite(str(frames / f"{i:02d}.png"), part.image)
    return root


def write_recipe(folder: Path, assets: Path, name: str = "line", *, ae: float = 1.0,
                 pin_hash: str = "", product: str = "gui-test") -> Path:
    """A recipe: folder camera (every image a part), loop:// reject port, records here."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = folder / "frames"
    if not frames.exists():
        shutil.copytree(assets / "frames", frames)
    for kind in ("autoencoder", "classifier"):
        shutil.copy(assets / f"{kind}.onnx", folder / f"{kind}.onnx")
    path = folder / f"{name}.toml"
    path.write_text(f'''# test recipe
[product]
name = "{product}"
[camera]
source = "folder"
device = "frames"
fps = 20
loop = true
[models]
autoencoder = "autoencoder.onnx"
classifier = "classifier.onnx"
provider = "cpu"
threads = 1
[decision]
rule = "either"
autoencoder_threshold = {ae}   # normalized
classifier_threshold = 1.0
[trigger]
mode = "hardware"
[reject]
enabled = true
port = "loop://"
mode = "message"
delay_ms = 300
[records]
database = "records/records.sqlite"
images_dir = "records/images"
[engineer]
pin_hash = "{pin_hash}"
''', encoding="utf-8")
    return path


def activate(qtbot, window) -> None:
    """Make ``window`` the active window (shortcuts need one).

    Once a test has run ``run_app`` (``app.exec()`` then ``quit()``), Qt no longer activates
    a window on request in this process; ``setActiveWindow`` still does.
    """
    window.activateWindow()
    try:
        qtbot.waitUntil(window.isActiveWindow, timeout=1500)
    except TimeoutError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            QApplication.setActiveWindow(window)
        qtbot.waitUntil(window.isActiveWindow, timeout=3000)


@pytest.fixture()
def make_window(qtbot):
    windows: list[MainWindow] = []

    def make(recipe_path: Path) -> MainWindow:
        window = MainWindow(make_engine(load_recipe(recipe_path)))
        qtbot.addWidget(window)
        window.show()
        activate(qtbot, window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()


def test_start_and_stop_with_the_button_and_f5(qtbot, assets, tmp_path, make_window):
    window = make_window(write_recipe(tmp_path, assets))
    assert not window.engine.running and window.start_button.text() == "START"
    assert not window.trigger_button.isEnabled()
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    assert window.engine.running and window.start_button.text() == "STOP"
    qtbot.waitUntil(lambda: window.live.frames_shown >= 5, timeout=5000)  # the preview runs
    qtbot.keyClick(window, Qt.Key.Key_F5)
    assert not window.engine.running and window.start_button.text() == "START"
    qtbot.wait(100)
    shown = window.live.frames_shown
    qtbot.wait(300)
    assert window.live.frames_shown == shown  # stopped: the picture stands still


def test_a_reject_shows_the_verdict_and_counts_up(qtbot, assets, tmp_path, make_window):
    # threshold far below every part's score: each part is a REJECT
    window = make_window(write_recipe(tmp_path, assets, ae=0.05))
    window.toggle_running()
    qtbot.waitUntil(lambda: window.verdict.verdict == "REJECT", timeout=5000)
    assert window.verdict.word.text() == "REJECT"
    assert "part #" in window.verdict.detail.text()
    assert window.part_view.image.pixmap() is not None  # crop + heatmap drawn
    assert float(window.part_view.ae_value.text()) >= 0.05
    qtbot.waitUntil(lambda: int(window.counts.values["rejected"].text()) >= 2, timeout=5000)
    window.toggle_running()
    qtbot.waitUntil(lambda: window.counts.counts == window.engine.counts(), timeout=3000)
    counts = window.engine.counts()
    assert counts["rejected"] == counts["inspected"] >= 2
    assert window.counts.values["yield"].text() == "0.0 %"
    window.trends.redraw()
    assert len(window.trends.ae_curve.getData()[0]) == counts["inspected"]

    # the rejects browser shows them from the records, with their stored images
    window.show_rejects()
    browser = window.rejects_dialog
    assert browser.table.rowCount() == counts["rejected"]
    assert browser.crop.pixmap() is not None and not browser.crop.pixmap().isNull()
    assert "part #" in browser.detail.text()

    # reset asks first: Cancel keeps the counts, Yes starts a new shift
    window.counts.confirm_reset()
    window.counts._confirm.button(QMessageBox.StandardButton.Cancel).click()
    assert window.engine.counts()["inspected"] == counts["inspected"]
    window.counts.confirm_reset()
    window.counts._confirm.button(QMessageBox.StandardButton.Yes).click()
    assert window.engine.counts()["inspected"] == 0
    assert window.counts.values["inspected"].text() == "0"


def test_counts_survive_a_restart_of_the_window(qtbot, assets, tmp_path, make_window):
    path = write_recipe(tmp_path, assets)
    first = make_window(path)
    first.toggle_running()
    qtbot.waitUntil(lambda: first.engine.stats().parts >= 2, timeout=5000)
    first.shutdown()
    second = make_window(path)
    assert int(second.counts.values["inspected"].text()) >= 2


def test_an_alarm_appears_when_the_camera_dies_and_is_acknowledged(qtbot, assets, tmp_path,
                                                                  make_window):
    path = write_recipe(tmp_path, assets)
    window = make_window(path)
    window.toggle_running()
    qtbot.waitUntil(lambda: window.live.frames_shown >= 2, timeout=5000)
    assert not window.alarms.isVisible()
    (tmp_path / "frames").rename(tmp_path / "unplugged")  # the camera goes away
    qtbot.waitUntil(lambda: window.alarms.isVisible() and bool(window.alarms.rows), timeout=8000)
    (row,) = window.alarms.rows.values()
    assert row.title.text() == "CAMERA LOST"
    assert "frames" in row.message.text()
    qtbot.mouseClick(row.ack, Qt.MouseButton.LeftButton)
    assert window.alarms.isVisible() and not row.ack.isVisible()  # still lost: quieter, kept
    recorded = window.engine.records.alarms()
    assert any(a["kind"] == "camera_lost" and a["acknowledged_by"] == "operator"
               for a in recorded)


def test_engineer_mode_refuses_a_wrong_pin_and_applies_a_threshold(qtbot, assets, tmp_path,
                                                                   make_window):
    path = write_recipe(tmp_path, assets, pin_hash=hash_pin("2468"))
    window = make_window(path)
    assert not window.engineer_dock.isVisible() and not window.engineer.isEnabled()
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    dialog = window.pin_dialog
    assert dialog is not None and not dialog.set_new
    dialog.first.setText("1111")
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and "wrong PIN" in dialog.error.text()
    assert not window.engineer_unlocked and not window.engineer_dock.isVisible()
    dialog.first.setText("2468")
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert window.engineer_unlocked and window.engineer_dock.isVisible()

    window.engineer.ae_threshold.widget.setValue(1.7)
    window.engineer.rule.widget.setCurrentText("autoencoder")
    qtbot.mouseClick(window.engineer.apply_decision_button, Qt.MouseButton.LeftButton)
    decision = window.engine.inspector.decision
    assert (decision.rule, decision.ae_threshold) == ("autoencoder", pytest.approx(1.7))
    saved = load_recipe(path)
    assert saved.decision.rule == "autoencoder"
    assert saved.decision.autoencoder_threshold == pytest.approx(1.7)
    assert "# test recipe" in path.read_text()  # comments kept
    assert list(tmp_path.glob("line.*.bak.toml"))  # backup left
    events = {e["key"]: e for e in window.engine.records.events()}
    assert events["decision.autoencoder_threshold"]["who"] == "engineer"
    assert window.trends.ae_line.value() == pytest.approx(1.7)

    # settings that need a restart: written, recorded, and the new engine runs on them
    editors = window.engineer.editors
    sim_fps = editors["camera.simulated.fps"].widget
    assert not window.engineer.forms["camera.simulated.fps"].isRowVisible(sim_fps)  # folder cam
    editors["reject.delay_ms"].widget.setValue(40)
    for spin, value in zip(window.engineer.roi, (4, 6, 190, 110), strict=True):
        spin.setValue(value)
    assert window.live.pending_roi == (4, 6, 190, 110)  # drawn on the live view while edited
    assert window.engineer.save_and_restart()
    assert load_recipe(path).reject.delay_ms == 40
    assert load_recipe(path).localize.roi == (4, 6, 190, 110)
    assert window.engine.recipe.reject.delay_ms == 40 and window.engineer_unlocked
    assert any(e["key"] == "reject.delay_ms" for e in window.engine.records.events())

    window.lock_engineer()
    assert not window.engineer.isEnabled() and not window.engineer_dock.isVisible()
    assert not window.unlock_engineer("0000") and not window.engineer_unlocked


def test_a_recipe_without_a_pin_keeps_engineer_mode_locked(qtbot, assets, tmp_path,
                                                            make_window):
    # was: the first person to press Ctrl+E chose the PIN (the shipped recipes have none)
    path = write_recipe(tmp_path, assets)
    window = make_window(path)
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    qtbot.mouseClick(window.engineer_button, Qt.MouseButton.LeftButton)
    assert window.pin_dialog is None and not window.engineer_unlocked
    assert window.ask_pin(set_new=True) is None  # nobody chooses the first PIN here
    # the message line elides; its full text is on hover
    assert f"station set-pin --recipe {path}" in window.message.toolTip()
    assert "No engineer PIN is set" in window.message.text()
    for pin in ("", "0000"):
        assert not window.unlock_engineer(pin) and not window.engineer_unlocked
    assert "station set-pin" in window.message.toolTip()
    assert load_recipe(path).engineer.pin_hash == ""


def test_change_pin_in_engineer_mode_stores_only_a_hash(qtbot, assets, tmp_path, make_window):
    path = write_recipe(tmp_path, assets, pin_hash=hash_pin("2468"))
    window = make_window(path)
    assert window.unlock_engineer("2468")
    window.engineer.change_pin_requested.emit()
    dialog = window.pin_dialog
    assert dialog.set_new
    dialog.first.setText("9753")
    dialog.second.setText("9999")
    dialog.try_accept()
    assert "differ" in dialog.error.text()
    dialog.first.setText("975")
    dialog.try_accept()
    assert "at least 4" in dialog.error.text()
    dialog.first.setText("9753")
    dialog.second.setText("9753")
    dialog.try_accept()
    text = path.read_text()
    stored = load_recipe(path).engineer.pin_hash
    assert "9753" not in text.replace(stored, "")  # only the hash (its hex may hold any digits)
    assert check_pin("9753", stored)
    assert any(e["key"] == "engineer.pin_hash" and e["who"] == "engineer"
               for e in window.engine.records.events())
    window.lock_engineer()
    assert not window.unlock_engineer("2468") and window.unlock_engineer("9753")


def test_a_bad_recipe_leaves_the_running_line_alone_and_a_good_one_switches(
        qtbot, assets, tmp_path, make_window):
    path = write_recipe(tmp_path, assets)
    window = make_window(path)
    window.toggle_running()
    engine = window.engine
    bad = tmp_path / "broken.toml"
    bad.write_text(path.read_text().replace("delay_ms = 300", "delay_ms = -5"), encoding="utf-8")
    assert not window.switch_recipe(bad)
    assert window.engine is engine and engine.running
    assert "broken.toml" in window.last_error and "reject.delay_ms" in window.last_error
    assert window.recipes.currentData() == str(path.resolve())
    window._error_box.close()
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    refused = tmp_path / "refused.toml"
    refused.write_text(path.read_text().replace('"autoencoder.onnx"', '"garbage.onnx"'),
                       encoding="utf-8")
    assert not window.switch_recipe(refused)  # the model is refused before the line stops
    assert window.engine is engine and engine.running
    assert "garbage.onnx" in window.last_error
    window._error_box.close()
    # one model for rule "either": refused with the key, not a TypeError
    refused.write_text(path.read_text().replace('classifier = "classifier.onnx"\n', ""),
                       encoding="utf-8")
    assert not window.switch_recipe(refused)
    assert "refused.toml:" in window.last_error
    assert 'decision.rule = "either": expected both models' in window.last_error
    window._error_box.close()
    refused.unlink()

    other = write_recipe(tmp_path, assets, name="other", product="other-product")
    assert [p.name for p in list_recipes(tmp_path)] == ["broken.toml", "line.toml", "other.toml"]
    # (choosing it from the list, in engineer mode, with a confirmation: test_window_keys)
    assert window.switch_recipe(other)
    assert window.engine is not engine and window.engine.running
    assert not engine.running
    assert window.product.text() == "other-product"
    assert window.recipes.currentText() == "other-product"
    assert window.engine.recipe.path == other.resolve()


def test_run_app_opens_the_window_and_quits_after_seconds(qtbot, assets, tmp_path, capsys):
    from station.ui.app import run_app

    shot = tmp_path / "shot.png"
    assert run_app(write_recipe(tmp_path, assets), seconds=1.5, screenshot=shot) == 0
    out = capsys.readouterr().out
    assert "preview" in out and "camera" in out
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] >= 800


def test_run_app_refuses_a_bad_recipe_with_exit_code_2(qtbot, tmp_path, capsys):
    from station.ui.app import run_app

    bad = tmp_path / "bad.toml"
    bad.write_text('[product]\nname = "x"\n[reject]\npulse_ms = -5\n', encoding="utf-8")
    assert run_app(bad, seconds=0.1) == 2
    assert "reject.pulse_ms" in capsys.readouterr().err
