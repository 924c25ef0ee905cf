"""Pixel scale from rendered targets of known size (checkerboard and disc).

Targets are drawn 8x supersampled and area-averaged, so edges are grey like a real camera's.
Tolerance: the true mm/px within 0.3 % (checkerboard) and 0.5 % (circle), and within three
times the reported uncertainty.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.report import CalibrationError
from calibration.scale import scale_from_checkerboard, scale_from_circle
from station.cli import main
from station.config import load_recipe

SS = 8
H, W = 300, 400


def render_board(square_px: float, pattern=(9, 6), origin=(40.3, 30.6)) -> np.ndarray:
    big = np.full((H * SS, W * SS), 235, np.uint8)
    x0, y0 = origin
    for r in range(pattern[1] + 1):
        for c in range(pattern[0] + 1):
            if (r + c) % 2 == 0:
                ys, xs = int((y0 + r * square_px) * SS), int((x0 + c * square_px) * SS)
                big[ys:int((y0 + (r + 1) * square_px) * SS), xs:int((x0 + (c + 1) * square_px) * SS)] = 20
    img = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(img, (0, 0), 0.6)  # a real lens's blur


def render_disc(diameter_px: float, centre=(201.3, 148.7), dark=True) -> np.ndarray:
    big = np.full((H * SS, W * SS), 220 if dark else 30, np.uint8)
    c = (int(round(centre[0] * SS)), int(round(centre[1] * SS)))
    cv2.circle(big, c, int(round(diameter_px / 2 * SS)), 40 if dark else 200, -1, lineType=cv2.LINE_AA)
    img = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(1).normal(0, 2.0, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("square_px", [23.5, 31.25])
def test_checkerboard_scale(square_px):
    est = scale_from_checkerboard(render_board(square_px, origin=(20.3, 15.6)), (9, 6), 5.0)
    truth = 5.0 / square_px
    assert abs(est.mm_per_px / truth - 1) < 0.003
    assert abs(est.mm_per_px - truth) < 3 * est.uncertainty + 1e-9
    assert est.n_measurements == 9 * 6


@pytest.mark.parametrize("dark", [True, False])
def test_circle_scale(dark):
    est = scale_from_circle(render_disc(180.0, dark=dark), 18.0)
    truth = 18.0 / 180.0
    assert abs(est.mm_per_px / truth - 1) < 0.005
    assert abs(est.mm_per_px - truth) < 3 * est.uncertainty
    assert 0 < est.relative_uncertainty < 0.01


def test_missing_targets_are_clear_errors():
    flat = np.full((H, W), 128, np.uint8)
    with pytest.raises(CalibrationError, match="no 9x6 checkerboard"):
        scale_from_checkerboard(flat, (9, 6), 5.0)
    with pytest.raises(CalibrationError, match="no round target"):
        scale_from_circle(flat, 10.0)
    with pytest.raises(CalibrationError, match="--size-mm"):
        scale_from_circle(flat, 0.0)


def test_scale_step_writes_recipe_and_backup(tmp_path: Path, capsys):
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text('[product]\nname = "p"\n[models]\nautoencoder = "ae.onnx"\n', encoding="utf-8")
    image = tmp_path / "disc.png"
    cv2.imwrite(str(image), render_disc(150.0))
    rc = main(["calibrate", "scale", "--recipe", str(recipe_path), "--image", str(image),
               "--target", "circle", "--size-mm", "12", "--report", str(tmp_path / "rep")])
    assert rc == 0, capsys.readouterr().err
    assert abs(load_recipe(recipe_path, check_files=False).scale.mm_per_px - 12 / 150) < 0.0005
    assert list(tmp_path.glob("r.*.bak.toml"))
    assert "mm per pixel" in (tmp_path / "rep" / "report.txt").read_text()
    assert (tmp_path / "rep" / "target.png").is_file()
    rc = main(["calibrate", "scale", "--recipe", str(recipe_path), "--image", str(tmp_path / "nope.png"),
               "--target", "circle", "--size-mm", "12"])
    assert rc == 2 and "nope.png" in capsys.readouterr().err
