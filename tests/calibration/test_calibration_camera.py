"""Camera calibration recovers a KNOWN camera from rendered checkerboards; undistortion undoes it.

Checkerboards are rendered through a known camera matrix and distortion: the board texture
is warped into the ideal pinhole image (homography K [r1 r2 t]) and then distorted per pixel
by inverse mapping (each distorted pixel looks up where ``cv2.undistortPoints`` says it came
from). Tolerances: fx, fy within 1 %, cx, cy within 2 px, k1 within 0.02, k2 within 0.03.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.camera import calibrate_camera, parse_pattern
from calibration.report import CalibrationError
from station.cli import main
from station.config import load_recipe
from station.vision.undistort import Undistorter, UndistortError

W, H = 640, 480
K_TRUE = np.array([[600.0, 0.0, 322.0], [0.0, 605.0, 236.0], [0.0, 0.0, 1.0]])
D_TRUE = np.array([-0.28, 0.09, 0.0, 0.0, 0.0])
PATTERN = (9, 6)
SQUARE_MM = 20.0
# (rx, ry, rz) radians, (tx, ty, tz) mm: tilted views spread over the whole field of view
POSES = [
    (0, 0, 0, -80, -50, 400), (0.3, 0, 0.1, -230, -160, 480), (-0.3, 0.2, 0, 60, -160, 480),
    (0.2, -0.3, -0.1, -230, 40, 480), (-0.25, -0.25, 0.05, 60, 40, 460), (0.1, 0.4, 0, -90, -60, 520),
    (0.4, 0.1, 0.2, -80, -70, 450), (-0.2, 0.3, -0.2, -200, -40, 500), (0.0, -0.4, 0.1, 20, -140, 470),
    (0.35, -0.2, 0, -120, 60, 430), (-0.3, -0.1, 0.3, -60, -160, 500), (0.15, 0.25, -0.3, -240, -80, 520),
]


def distort_maps(k: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the distorted image, where it sits in the ideal (undistorted) image."""
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    pts = np.stack([xs.ravel(), ys.ravel()], 1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-6)
    und = cv2.undistortPoints(pts, k, d, P=k, criteria=crit).reshape(H, W, 2)
    return und[..., 0].copy(), und[..., 1].copy()


def render_ideal(pose, px: int = 20) -> np.ndarray:
    """The board seen by the distortion-free camera K_TRUE at ``pose``."""
    cols, rows = PATTERN[0] + 1, PATTERN[1] + 1
    tex = np.full(((rows + 2) * px, (cols + 2) * px), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                tex[(r + 1) * px:(r + 2) * px, (c + 1) * px:(c + 2) * px] = 0
    rot, _ = cv2.Rodrigues(np.asarray(pose[:3], float))
    # texture pixel -> board mm (first inner corner at the origin) -> image
    a = np.array([[SQUARE_MM / px, 0, -2 * SQUARE_MM], [0, SQUARE_MM / px, -2 * SQUARE_MM], [0, 0, 1]])
    hom = K_TRUE @ np.column_stack([rot[:, 0], rot[:, 1], np.asarray(pose[3:], float)]) @ a
    return cv2.warpPerspective(tex, hom, (W, H), flags=cv2.INTER_AREA, borderValue=128)


@pytest.fixture(scope="module")
def views() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, distorted view, ideal view) for every pose."""
    mx, my = distort_maps(K_TRUE, D_TRUE)
    out = []
    for i, pose in enumerate(POSES):
        ideal = render_ideal(pose)
        out.append((f"view{i:02d}.png", cv2.remap(ideal, mx, my, cv2.INTER_LINEAR, borderValue=128), ideal))
    return out


def test_recovers_known_intrinsics_and_distortion(views):
    calib = calibrate_camera([(n, img) for n, img, _ in views], PATTERN, SQUARE_MM)
    k, d = calib.camera_matrix, calib.dist_coeffs
    assert len(calib.used) == len(POSES) and not calib.rejected
    assert abs(k[0, 0] / K_TRUE[0, 0] - 1) < 0.01  # fx within 1 %
    assert abs(k[1, 1] / K_TRUE[1, 1] - 1) < 0.01  # fy within 1 %
    assert abs(k[0, 2] - K_TRUE[0, 2]) < 2.0  # cx within 2 px
    assert abs(k[1, 2] - K_TRUE[1, 2]) < 2.0  # cy within 2 px
    assert abs(d[0] - D_TRUE[0]) < 0.02  # k1
    assert abs(d[1] - D_TRUE[1]) < 0.03  # k2
    assert calib.rms < 0.3
    assert set(calib.per_image_error) == {n for n, _, _ in views}
    assert calib.coverage.all() and not calib.warnings


def test_poor_coverage_and_few_views_are_called_out(views):
    # only the views whose board sits in the upper-left part of the frame
    few = [(n, img) for n, img, _ in views[1:2]] + [(n, img) for n, img, _ in views[11:12]]
    few += [(views[7][0], views[7][1])]
    calib = calibrate_camera(few, PATTERN, SQUARE_MM)
    text = "\n".join(calib.report_lines())
    assert "only 3 usable views" in text
    assert "poor field-of-view coverage" in text
    assert "bottom-right" in calib.uncovered_regions()


def test_board_not_found_is_a_clear_error():
    blank = np.full((H, W), 128, np.uint8)
    with pytest.raises(CalibrationError, match="found the 9x6 board in only 0 of 2 images"):
        calibrate_camera([("a.png", blank), ("b.png", blank)], PATTERN, SQUARE_MM)
    with pytest.raises(CalibrationError, match="COLSxROWS"):
        parse_pattern("nine by six")


def test_undistortion_matches_the_undistorted_render(views):
    und = Undistorter.from_intrinsics(K_TRUE, D_TRUE, (W, H))
    name, distorted, ideal = views[0]
    restored = und.apply(distorted)
    # compare where the distorted frame had content (the undistorted corners fall outside it)
    valid = und.apply(np.full((H, W), 255, np.uint8)) == 255
    valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    err = np.abs(restored.astype(float) - ideal.astype(float))[valid]
    before = np.abs(distorted.astype(float) - ideal.astype(float))[valid]
    assert valid.mean() > 0.8
    assert err.mean() < 2.5, f"mean abs error {err.mean():.2f} grey levels"
    assert before.mean() > 4 * err.mean()  # the distortion was real and is gone
    with pytest.raises(UndistortError, match="calibrated at 640x480"):
        und.apply(np.zeros((100, 100), np.uint8))


def test_undistorter_from_recipe_section_and_bad_values():
    class Section:
        enabled = True
        camera_matrix = K_TRUE.tolist()
        dist_coeffs = D_TRUE.tolist()
        image_size = (W, H)

    assert Undistorter.from_recipe(Section()).image_size == (W, H)
    Section.enabled = False
    assert Undistorter.from_recipe(Section()) is None
    with pytest.raises(UndistortError, match="dist_coeffs"):
        Undistorter.from_intrinsics(K_TRUE, [0.1, 0.2], (W, H))
    with pytest.raises(UndistortError, match="camera_matrix"):
        Undistorter.from_intrinsics(np.eye(2), D_TRUE, (W, H))


def write_recipe(folder: Path) -> Path:
    path = folder / "product.toml"
    path.write_text('# product recipe\n[product]\nname = "screw"  # shown to the operator\n\n'
                    '[models]\nautoencoder = "ae.onnx"\n', encoding="utf-8")
    return path


def test_camera_step_writes_recipe_backup_and_report(views, tmp_path, capsys):
    images = tmp_path / "boards"
    images.mkdir()
    for name, img, _ in views:
        cv2.imwrite(str(images / name), img)
    recipe_path = write_recipe(tmp_path)
    report = tmp_path / "report"
    rc = main(["calibrate", "camera", "--recipe", str(recipe_path), "--images", str(images),
               "--pattern", "9x6", "--square-mm", str(SQUARE_MM), "--report", str(report)])
    assert rc == 0, capsys.readouterr().err
    recipe = load_recipe(recipe_path, check_files=False)
    assert recipe.undistort.enabled
    assert abs(recipe.undistort.camera_matrix[0][0] / K_TRUE[0, 0] - 1) < 0.01
    assert abs(recipe.undistort.dist_coeffs[0] - D_TRUE[0]) < 0.02
    assert tuple(recipe.undistort.image_size) == (W, H)
    assert Undistorter.from_recipe(recipe).image_size == (W, H)  # the station can use it as stored
    assert "# product recipe" in recipe_path.read_text()  # comments kept
    assert len(list(tmp_path.glob("product.*.bak.toml"))) == 1
    text = (report / "report.txt").read_text()
    assert "RMS reprojection error" in text and "view00.png" in text
    assert (report / "coverage.png").is_file() and (report / "undistorted.png").is_file()
