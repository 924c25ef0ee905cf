"""ROI proposal from frames with parts, the explicit ROI, and the Qt ROI dialog (offscreen)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.report import CalibrationError
from calibration.roi import parse_roi, propose_roi
from station.cli import main
from station.config import load_recipe
from station.sim import PartPose, render_part

FRAME = (240, 360)  # h, w


def frames(n: int = 4, seed: int = 5) -> list[tuple[str, np.ndarray]]:
    """Parts at different places and angles of the frame, as a belt carries them past."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pose = PartPose(center=(100.0 + 40 * i, 80.0 + 15 * i), angle_deg=10.0 - 12 * i, length=90.0)
        out.append((f"f{i}.png", render_part(rng, FRAME, pose=pose).image))
    return out


def test_proposal_contains_every_part_with_margin():
    imgs = frames()
    prop = propose_roi(imgs, margin_frac=0.1)
    x, y, w, h = prop.roi
    assert len(prop.found) == len(imgs) and not prop.missed
    for loc in prop.found.values():
        bx, by, bw, bh = loc.box
        assert x <= bx and y <= by and bx + bw <= x + w and by + bh <= y + h
    assert x + w <= FRAME[1] and y + h <= FRAME[0]
    assert w < FRAME[1] or h < FRAME[0]  # tighter than the whole frame
    text = "\n".join(prop.report_lines())
    assert "part length:" in text and "crop scale" in text


def test_blank_frames_and_bad_roi_text_are_clear_errors():
    blank = np.full(FRAME, 200, np.uint8)
    with pytest.raises(CalibrationError, match="no part found in any of the 2 images"):
        propose_roi([("a.png", blank), ("b.png", blank)])
    with pytest.raises(CalibrationError, match="x,y,w,h"):
        parse_roi("10,20,30")


def write_recipe(folder: Path) -> Path:
    path = folder / "r.toml"
    path.write_text('[product]\nname = "p"\n[models]\nautoencoder = "ae.onnx"\n', encoding="utf-8")
    return path


def test_roi_step_proposes_and_writes_recipe(tmp_path: Path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, img in frames():
        cv2.imwrite(str(folder / name), img)
    recipe_path = write_recipe(tmp_path)
    rc = main(["calibrate", "roi", "--recipe", str(recipe_path), "--images", str(folder),
               "--report", str(tmp_path / "rep")])
    assert rc == 0, capsys.readouterr().err
    roi = load_recipe(recipe_path, check_files=False).localize.roi
    assert roi != (0, 0, 0, 0)
    assert (tmp_path / "rep" / "roi.png").is_file()
    assert "WARNING: inside the ROI" not in (tmp_path / "rep" / "report.txt").read_text()
    assert len(list(tmp_path.glob("r.*.bak.toml"))) == 1

    rc = main(["calibrate", "roi", "--recipe", str(recipe_path), "--roi", "5,6,200,150"])
    assert rc == 0
    (default_report,) = (tmp_path / "calibration").glob("roi-*")  # default: beside the recipe
    assert "ROI set explicitly: (5, 6, 200, 150)" in (default_report / "report.txt").read_text()
    assert load_recipe(recipe_path, check_files=False).localize.roi == (5, 6, 200, 150)
    assert len(list(tmp_path.glob("r.*.bak.toml"))) == 2


def test_roi_dialog_updates_the_crop_preview(qtbot):
    from calibration._qt_roi import RoiDialog

    name, image = frames(1)[0]
    dialog = RoiDialog(image, (0, 0, FRAME[1], FRAME[0]), crop_size=64)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.last_status.startswith("ok") and dialog.last_crop is not None
    first = dialog.last_crop.copy()
    assert not dialog.preview.pixmap().isNull()

    # a rectangle around the part only: still found, same size crop
    with qtbot.waitSignal(dialog.roiChanged, timeout=1000) as blocker:
        dialog.set_roi((20, 15, 180, 130))
    assert blocker.args == [(20, 15, 180, 130)]
    assert dialog.spins["w"].value() == 180
    assert dialog.last_status.startswith("ok")

    # dragging the rectangle off the part: the preview says why there is no crop
    dialog.rect_item.setPos(250, 150)  # clamped: the rectangle stays inside the frame
    assert dialog.roi()[:2] == (FRAME[1] - 180, FRAME[0] - 130)
    assert dialog.spins["x"].value() == FRAME[1] - 180
    assert dialog.last_crop is None and not dialog.last_status.startswith("ok")
    assert dialog.preview.text() == "no crop"

    # typing numbers moves the rectangle back; the crop returns and follows the ROI
    dialog.spins["x"].setValue(0)
    dialog.spins["y"].setValue(0)
    assert dialog.roi()[:2] == (0, 0)
    assert dialog.last_crop is not None and dialog.last_crop.shape[:2] == first.shape[:2]

    # the rectangle cannot leave the image
    dialog.rect_item.setPos(10_000, 10_000)
    x, y, w, h = dialog.roi()
    assert x + w <= FRAME[1] and y + h <= FRAME[0]


def test_roi_dialog_resizes_by_dragging_the_corner(qtbot):
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    from calibration._qt_roi import RoiDialog

    _, image = frames(1)[0]
    dialog = RoiDialog(image, (10, 10, 200, 150), crop_size=64)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    view, item = dialog.view, dialog.rect_item
    corner = view.mapFromScene(item.mapToScene(197, 147))  # inside the corner handle
    target = view.mapFromScene(item.mapToScene(150, 120))
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=corner)
    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(target), QPointF(view.viewport().mapToGlobal(target)),
                       Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), move)
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=target)
    x, y, w, h = dialog.roi()
    assert (x, y) == (10, 10)  # the corner resizes, it does not move the rectangle
    assert abs(w - 150) <= 1 and abs(h - 120) <= 1
    assert (dialog.spins["w"].value(), dialog.spins["h"].value()) == (w, h)


def test_an_roi_the_recipe_refuses_is_refused_by_a_dry_run_too(tmp_path: Path, capsys):
    recipe_path = write_recipe(tmp_path)
    before = recipe_path.read_text()
    rc = main(["calibrate", "roi", "--recipe", str(recipe_path), "--roi", "0,0,99999999,5",
               "--dry-run", "--report", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert rc == 2 and "localize.roi" in err and "would set" not in err
    assert len(err.strip().splitlines()) == 1
    assert recipe_path.read_text() == before


def test_an_roi_is_held_to_the_frame_size_the_recipe_asks_the_camera_for(tmp_path: Path, capsys):
    recipe_path = tmp_path / "r.toml"
    camera = '[camera]\nsource = "opencv"\n'
    recipe_path.write_text('[product]\nname = "p"\n' + camera + 'width = 640\nheight = 480\n',
                           encoding="utf-8")
    args = ["calibrate", "roi", "--recipe", str(recipe_path), "--report", str(tmp_path / "rep")]
    assert main([*args, "--roi", "600,0,100,100"]) == 2
    assert "inside the 640x480 frame" in capsys.readouterr().err
    assert load_recipe(recipe_path, check_files=False).localize.roi == (0, 0, 0, 0)

    # no size asked for and no frame given: written, and the report says it was not checked
    recipe_path.write_text('[product]\nname = "p"\n' + camera, encoding="utf-8")
    assert main([*args, "--roi", "600,0,100,100"]) == 0, capsys.readouterr().err
    assert "not checked against a frame" in (tmp_path / "rep" / "report.txt").read_text()
    assert load_recipe(recipe_path, check_files=False).localize.roi == (600, 0, 100, 100)
