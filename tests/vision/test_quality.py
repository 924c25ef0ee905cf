"""Image-quality reference and monitor: blur, darkness and over-exposure are flagged; good passes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.check import build_reference
from station.cli import main
from station.config import QualitySection, RecipeError, load_recipe
from station.vision.quality import (
    QualityError,
    QualityMonitor,
    QualityReference,
    measure,
)

ROI = (40, 30, 240, 180)


def scene(seed: int = 0) -> np.ndarray:
    """A lit background with a threaded, screw-like part: edges for focus, a grey range for contrast."""
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    img = 170 + 20 * (xx / w) + rng.normal(0, 1.0, (h, w))
    body = (np.abs(yy - 120) < 18) & (xx > 70) & (xx < 230)
    img[body] = 60 + 25 * ((xx[body] // 6) % 2)  # thread
    cv2.circle(img, (240, 120), 30, 45, -1)  # head
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def monitor() -> QualityMonitor:
    frames = [scene(s) for s in range(4)]
    return QualityMonitor(build_reference(frames, ROI), QualitySection())


def metrics_of(issues) -> set[str]:
    return {i.metric for i in issues}


def test_reference_frame_and_mild_noise_pass(monitor):
    ref = scene(0)
    assert monitor.check(ref) == []
    noisy = np.clip(ref + np.random.default_rng(9).normal(0, 3.0, ref.shape), 0, 255).astype(np.uint8)
    assert monitor.check(noisy) == []
    assert monitor.check(cv2.cvtColor(ref, cv2.COLOR_GRAY2BGR)) == []  # colour frames too


def test_blur_darkness_and_overexposure_are_flagged(monitor):
    ref = scene(0)
    blurred = cv2.GaussianBlur(ref, (0, 0), 2.5)
    issues = monitor.check(blurred)
    assert "focus" in metrics_of(issues)
    assert "lens focus" in next(i.message for i in issues if i.metric == "focus")

    dark = (ref * 0.55).astype(np.uint8)
    issues = monitor.check(dark)
    assert "brightness" in metrics_of(issues)
    assert "darker" in next(i.message for i in issues if i.metric == "brightness")

    bright = np.clip(ref.astype(float) * 1.7, 0, 255).astype(np.uint8)
    found = metrics_of(monitor.check(bright))
    assert {"glare", "brightness"} <= found


def test_wrong_frame_size_is_reported(monitor):
    issues = monitor.check(np.zeros((100, 100), np.uint8))
    assert [i.metric for i in issues] == ["size"] and "320x240" in issues[0].message


def test_a_reference_of_nan_is_refused_not_a_check_that_never_alarms(tmp_path: Path, monitor):
    """NaN compares false with every limit: a reference of NaN switched the check off, and
    blurred, dark frames raised no alarm."""
    import json

    data = monitor.reference.to_json()
    data["metrics"]["focus"] = float("nan")
    (tmp_path / "q.json").write_text(json.dumps(data))  # json writes NaN, and reads it back
    with pytest.raises(QualityError, match="q.json: metrics focus must be finite numbers"):
        QualityReference.load(tmp_path / "q.json")


def test_measure_and_reference_round_trip(tmp_path: Path, monitor):
    m = measure(scene(0), ROI)
    assert m.focus > 0 and 0 < m.brightness < 255 and m.contrast > 50 and m.glare == 0.0
    path = monitor.reference.save(tmp_path / "q.json")
    again = QualityReference.load(path)
    assert again.metrics == monitor.reference.metrics and again.roi == ROI
    (tmp_path / "bad.json").write_text('{"format": 1, "metrics": {"focus": 1}}')
    with pytest.raises(QualityError, match="bad.json: missing or bad field"):
        QualityReference.load(tmp_path / "bad.json")
    bad = tmp_path / "bad_limits.toml"  # the limits' one schema is the recipe's [quality]
    bad.write_text('[product]\nname = "p"\n\n[quality]\nfocus_drop = 1.5\n')
    with pytest.raises(RecipeError, match=r"bad_limits.toml:5: quality.focus_drop = 1.5: .*between 0 and 1"):
        load_recipe(bad)
    with pytest.raises(QualityError, match="leaves less than 8x8"):
        measure(scene(0), (315, 235, 50, 50))


def test_check_step_writes_reference_recipe_and_backup(tmp_path: Path, capsys):
    frames = tmp_path / "good"
    frames.mkdir()
    for s in range(3):
        cv2.imwrite(str(frames / f"f{s}.png"), scene(s))
    recipe_path = tmp_path / "line1.toml"
    recipe_path.write_text('[product]\nname = "p"\n[models]\nautoencoder = "ae.onnx"\n'
                           f'[localize]\nroi = {list(ROI)}\n', encoding="utf-8")
    rc = main(["calibrate", "check", "--recipe", str(recipe_path), "--images", str(frames),
               "--report", str(tmp_path / "rep")])
    assert rc == 0, capsys.readouterr().err
    recipe = load_recipe(recipe_path, check_files=False)
    assert recipe.quality.enabled
    ref_path = Path(recipe.quality.reference)
    assert ref_path == tmp_path / "line1.quality.json"
    assert json.loads(ref_path.read_text())["roi"] == list(ROI)
    assert list(tmp_path.glob("line1.*.bak.toml"))
    assert "all reference frames pass" in (tmp_path / "rep" / "report.txt").read_text()
    assert (tmp_path / "rep" / "region.png").is_file()
    mon = QualityMonitor.from_recipe_params(recipe.quality, recipe.path)
    assert mon is not None and mon.check(scene(1)) == []
    assert "focus" in metrics_of(mon.check(cv2.GaussianBlur(scene(1), (0, 0), 3)))


def test_periodic_check_runs_at_start_and_every_interval(monitor):
    periodic = QualityMonitor(monitor.reference, monitor.limits, interval_s=60.0)
    blurred = cv2.GaussianBlur(scene(0), (0, 0), 3)
    assert periodic.check_if_due(scene(0), now=1000.0) == []  # start-up
    assert periodic.check_if_due(blurred, now=1030.0) is None  # not due yet
    assert "focus" in metrics_of(periodic.check_if_due(blurred, now=1060.0))
    once = QualityMonitor(monitor.reference, monitor.limits, interval_s=0.0)
    assert once.check_if_due(scene(0), now=0.0) == [] and once.check_if_due(blurred, now=1e6) is None
