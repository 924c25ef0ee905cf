"""Start-up faults a user can make are one line on stderr and exit code 2, never a traceback.

Audit defect #6: a classifier file in the autoencoder slot, no model at all and rule
``either`` with one model raised TypeError (``ModelRefused`` built with one argument);
``models.provider = "cuda"`` without CUDA, and a records database that is a folder, under
/proc or in a read-only folder went through ``station run`` as tracebacks. Each case runs
through the real command line in a subprocess, on real (tiny) ONNX models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from station.cli import OneLineFormatter, main, report_error
from station.config import RecipeError, load_recipe
from station.models.metadata import ModelRefused
from station.pipeline.inspector import Inspector
from tests.ui.test_gui import _tiny_models, write_recipe

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The GUI tests' tiny models and two rendered parts."""
    import cv2
    import numpy as np

    from station.sim import render_part

    folder = tmp_path_factory.mktemp("startup_assets")
    _tiny_models(folder)
    (folder / "frames").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(folder / "frames" / f"{i}.png"), render_part(rng, (120, 200)).image)
    return folder


def _recipe(tmp_path: Path, assets: Path, *changes: tuple[str, str]) -> Path:
    """The GUI tests' working recipe (folder camera, loop:// port), with text replaced."""
    path = write_recipe(tmp_path, assets)
    text = path.read_text(encoding="utf-8")
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def _station(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})}
    full_env.pop("STATION_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "station", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=full_env)


def _one_line(proc: subprocess.CompletedProcess, command: str = "run") -> str:
    """The single line on stderr; fails with the whole stderr otherwise."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"station {command}: "), proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    return lines[0]


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in. Root ignores file modes: then /sys when
    it is mounted read-only (as in many containers), else the case is skipped."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    folder.chmod(0o755)
    if os.statvfs("/sys").f_flag & os.ST_RDONLY:
        return Path("/sys")
    pytest.skip("no read-only folder available to this user")


MODEL_CASES = {
    "classifier in the autoencoder slot": (
        [('autoencoder = "autoencoder.onnx"', 'autoencoder = "classifier.onnx"')],
        ["models.autoencoder", "classifier.onnx", "kind = 'classifier'"]),
    "no model at all": (
        [('autoencoder = "autoencoder.onnx"\n', ""), ('classifier = "classifier.onnx"\n', "")],
        ["models", "neither"]),
    "rule either with one model": (
        [('classifier = "classifier.onnx"\n', "")],
        ['decision.rule = "either"', "models.classifier"]),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_recipe_whose_models_cannot_serve_it_is_one_line(case, assets, tmp_path):
    changes, expected = MODEL_CASES[case]
    path = _recipe(tmp_path, assets, *changes)
    if case == "rule either with one model":  # the loader refuses it first, at its line
        with pytest.raises(RecipeError, match=r'\.toml:\d+: decision\.rule = "either"'):
            load_recipe(path)
        recipe = load_recipe(_recipe(tmp_path / "both", assets))  # Inspector's own backstop
        recipe = dataclasses.replace(recipe, models=dataclasses.replace(recipe.models,
                                                                        classifier=""))
    else:
        recipe = load_recipe(path)
    with pytest.raises(ModelRefused) as refused:  # was TypeError
        Inspector.from_recipe(recipe)
    assert refused.value.reason and refused.value.key
    line = _one_line(_station("run", "--recipe", str(path), "--headless", "--seconds", "1"))
    assert str(path) in line
    for text in expected:
        assert text in line, line


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="this onnxruntime has CUDA")
@pytest.mark.parametrize("how", ["headless", "window", "replay"])
def test_cuda_provider_without_cuda_is_one_line(how, assets, tmp_path):
    path = _recipe(tmp_path, assets, ('provider = "cpu"', 'provider = "cuda"'))
    if how == "replay":
        shutil.copytree(assets / "frames", tmp_path / "data" / "good")
        args = ["replay", "--recipe", str(path), "--data", str(tmp_path / "data")]
    else:
        args = ["run", "--recipe", str(path), "--seconds", "1"] + (
            ["--headless"] if how == "headless" else [])
    line = _one_line(_station(*args), args[0])
    assert f'{path}: models.provider = "cuda": ' in line
    assert "no CUDA" in line and "'cpu'" in line


def _database_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "a-folder.sqlite").mkdir()
    return {"a folder": ("a-folder.sqlite", "is a folder"),  # relative to the recipe
            "under /proc": ("/proc/station-records.sqlite", "cannot be opened or created")}


@pytest.mark.parametrize("case", ["a folder", "under /proc", "a read-only folder"])
def test_a_records_database_that_cannot_be_written_is_one_line(case, assets, tmp_path):
    if case == "a read-only folder":
        database, reason = str(_read_only_folder(tmp_path) / "records.sqlite"), "read-only"
    else:
        database, reason = _database_cases(tmp_path)[case]
    path = _recipe(tmp_path, assets, ('database = "records/records.sqlite"',
                                      f'database = "{database}"'))
    line = _one_line(_station("run", "--recipe", str(path), "--headless", "--seconds", "1"))
    assert f'{path}: records.database = "{database}": ' in line
    assert reason in line, line


def test_a_good_recipe_still_runs(assets, tmp_path):
    path = _recipe(tmp_path, assets)
    proc = _station("run", "--recipe", str(path), "--headless", "--seconds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "inspected" in proc.stdout


def test_a_run_that_ends_with_the_reject_output_down_exits_3(assets, tmp_path):
    """A headless line whose reject port never opened protected nothing: its supervisor
    (systemd, a script) sees exit code 3 and the reason, not a clean 0."""
    path = _recipe(tmp_path, assets, ('port = "loop://"', 'port = "/dev/ttyUSB_gone"'))
    proc = _station("run", "--recipe", str(path), "--headless", "--seconds", "1", "--quiet")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ended while not inspecting: serial_lost" in proc.stderr


def test_a_bug_is_one_line_and_its_traceback_only_on_request(capsys, monkeypatch):
    def bug() -> None:
        raise KeyError("an engine invariant")

    for debug, traceback_shown in (("", False), ("1", True)):
        monkeypatch.setenv("STATION_DEBUG", debug)
        try:
            bug()
        except KeyError as exc:
            assert report_error("run", exc) == 1
        err = capsys.readouterr().err
        assert ("Traceback" in err) == traceback_shown
        assert err.strip().splitlines()[-1].startswith("station run: internal error: KeyError")


def test_logged_exceptions_are_one_line_unless_debugging(monkeypatch):
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        record = logging.LogRecord("station.x", logging.ERROR, __file__, 1, "trigger %s failed",
                                   ("free-run",), sys.exc_info())
    monkeypatch.delenv("STATION_DEBUG", raising=False)
    assert formatter.format(record) == ("ERROR station.x: trigger free-run failed: "
                                        "ZeroDivisionError: division by zero")
    monkeypatch.setenv("STATION_DEBUG", "1")
    assert "Traceback" in formatter.format(record)


def test_the_window_saves_a_screenshot_and_a_flag_it_cannot_honour_is_one_line(assets, tmp_path):
    """``--screenshot`` is for manuals and support requests: the window of a timed run is
    saved as a PNG; asked without a window or without an end, it says so before starting."""
    import cv2

    path = _recipe(tmp_path, assets)
    shot = tmp_path / "shots" / "window.png"
    proc = _station("run", "--recipe", str(path), "--seconds", "1.5", "--screenshot", str(shot))
    assert proc.returncode == 0, proc.stderr
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] >= 800
    for extra, said in ((["--headless", "--seconds", "1"], "--headless has none"),
                        ([], "needs --seconds"),
                        (["--seconds", "1"], "expected a .png file")):
        target = str(tmp_path / ("w.jpg" if said.startswith("expected") else "w.png"))
        proc = _station("run", "--recipe", str(path), *extra, "--screenshot", target)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and said in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [
    ["init-recipe", "--data", "{data}", "--out", "{file}/sub/recipe.toml"],
    ["crops", "--data", "{data}", "--out", "{file}/crops", "--size", "64"],
])
def test_a_file_where_a_folder_must_be_made_is_named(command, tmp_path, capsys):
    """``--out a/b`` with ``a`` a file: the file is named, not "[Errno 17] File exists"."""
    from tests.vision.products import write_parts

    data = write_parts(tmp_path / "parts", 3)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    argv = [a.format(data=data, file=blocker) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"station {command[0]}: {blocker}: a file is where a folder is needed"]
