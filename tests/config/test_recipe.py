"""Recipes: validation names file, line and key; write-back keeps comments and backs up."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomlkit

from station.config import (
    Recipe,
    RecipeError,
    check_pin,
    field_help,
    hash_pin,
    list_recipes,
    load_recipe,
    recipe_to_dict,
    update_recipe,
)

REPO = Path(__file__).resolve().parents[2]

BASE = """\
# test recipe
[product]
name = "widget"

[models]
autoencoder = "models/ae.onnx"   # relative to this file
classifier = "models/cls.onnx"

[decision]
rule = "either"
autoencoder_threshold = 1.0

[reject]
enabled = true
port = "loop://"
pulse_ms = 50
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ae.onnx").write_bytes(b"onnx")
    (tmp_path / "models" / "cls.onnx").write_bytes(b"onnx")
    return tmp_path


def write(folder: Path, text: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line containing ``fragment``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(fragment)


def refused(path: Path, **kwargs) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, **kwargs)
    return info.value


def test_base_recipe_loads_with_defaults_and_resolved_paths(folder, monkeypatch):
    path = write(folder, BASE)
    monkeypatch.chdir("/")  # relative paths follow the recipe file, not the working folder
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.path == path.resolve() and recipe.folder == folder.resolve()
    assert recipe.product.name == "widget"
    assert recipe.models.autoencoder == str((folder / "models" / "ae.onnx").resolve())
    assert recipe.camera.source == "simulated" and recipe.camera.gain_db is None
    assert recipe.reject.pulse_ms == 50 and recipe.reject.message == "REJECT {part_id}\n"
    assert recipe.records.database == str((folder / "records" / "records.sqlite").resolve())
    assert recipe.localize.polarity and recipe.align.crop_scale > 0


def test_out_of_range_message_names_file_line_key_and_expectation(folder, monkeypatch):
    text = BASE.replace("pulse_ms = 50", "pulse_ms = -5")
    path = write(folder, text)
    monkeypatch.chdir(folder)
    err = refused(path)
    line = line_of(text, "pulse_ms")
    assert str(err) == f"recipe.toml:{line}: reject.pulse_ms = -5: expected an integer between 1 and 10000"
    assert err.line == line and err.key == "reject.pulse_ms"


@pytest.mark.parametrize(
    ("append", "fragment", "key", "expected"),
    [
        ("[camera]\nsourse = \"opencv\"\n", "sourse", "camera.sourse",
         "unknown key in [camera]; expected one of: source, device"),
        ("[camera]\nwidth = \"wide\"\n", "width", "camera.width",
         'camera.width = "wide": expected an integer between 0 and 20000'),
        ("[camera]\nwidth = 640.0\n", "width", "camera.width", "expected an integer"),
        ("[camera]\nloop = 1\n", "loop = 1", "camera.loop", "camera.loop = 1: expected true or false"),
        ("[camera]\nsource = \"webcam\"\n", "webcam", "camera.source",
         'camera.source = "webcam": expected one of "simulated", "opencv", "video", "folder", "genicam"'),
        ("[camera.simulated]\ndefect_rate = 1.5\n", "defect_rate", "camera.simulated.defect_rate",
         "camera.simulated.defect_rate = 1.5: expected a number between 0 and 1"),
        ("[camera.simulated]\ndefects = [\"scratch\", \"dent\"]\n", "defects",
         "camera.simulated.defects", 'expected a list of strings, each one of "scratch", '),
        ("[camera]\nsimulated.seed = -1\n", "seed", "camera.simulated.seed",
         "camera.simulated.seed = -1: expected an integer of 0 or more"),
        ("[trigger]\nline_frac = nan\n", "line_frac", "trigger.line_frac", "expected a number"),
        ("[localize]\nroi = [0, 0, 10]\n", "roi", "localize.roi",
         "localize.roi = [0, 0, 10]: expected a list of 4 integers each 0 or more"),
        ("[align]\nhead_side = \"up\"\n", "head_side", "align.head_side",
         'expected one of "left", "right"'),
        ("[align]\norientation = \"pattern\"\n", "orientation", "align.pattern",
         'align.pattern is missing: expected the product\'s pattern because align.orientation'),
        ("[align]\norientation = \"axis_pattern\"\npattern = [1, 2, 3]\n", "pattern =",
         "align.pattern", "align.pattern has 3 values: expected 216 (3 rings of 72)"),
        ("[align]\norientation = \"pattern\"\npattern = [\n" + "0, " * 216 + "\n]\n",
         "pattern =", "align.pattern", "align.pattern is all zeros"),
        ("[align]\npattern = [1.5]\n", "pattern =", "align.pattern",
         "expected a list of integers"),
        ("[align]\nregistration = \"ecc\"\n", "registration", "align.registration",
         'expected one of "template", "none"'),
        # the template is learned by station train and carried by the models, never set
        ("[align]\ntemplate = [1, 2]\n", "template", "align.template",
         "align.template: unknown key in [align]"),
        ("[quality]\nenabled = true\nreference = \"ref.json\"\n", "reference", "quality.reference",
         'quality.reference = "ref.json": expected an existing file (not found:'),
        ("[camera]\nsource = \"folder\"\ndevice = \"no_such_dir\"\n", "device", "camera.device",
         'camera.device = "no_such_dir": expected an existing folder (not found:'),
        ("[engineer]\npin_hash = \"1234\"\n", "pin_hash", "engineer.pin_hash",
         "expected \"pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>\""),
        ("[undistort]\nenabled = true\ncamera_matrix = [[1, 0, 0], [0, 1, 0]]\n"
         "dist_coeffs = [0, 0, 0, 0, 0]\nimage_size = [640, 480]\n", "camera_matrix",
         "undistort.camera_matrix", "expected a 3x3 matrix"),
        ("[decision.extra]\nx = 1\n", "[decision.extra]", "decision.extra",
         "decision.extra: unknown key in [decision]"),
        ("[scale]\nmm_per_px = [1]\n", "mm_per_px", "scale.mm_per_px",
         "scale.mm_per_px = [1]: expected a number between 0 and 1000"),
    ],
)
def test_each_error_class_names_its_line(folder, append, fragment, key, expected):
    text = BASE + "\n" + append
    path = write(folder, text)
    err = refused(path)
    assert len(err.issues) == 1, str(err)
    assert err.key == key
    assert err.line == line_of(text, fragment)
    assert str(err).startswith(f"{path}:{err.line}: ") or str(err).startswith(
        f"recipe.toml:{err.line}: ")
    assert expected in str(err)


def test_a_classifier_threshold_can_loosen_as_far_as_its_odds_need(folder):
    # the classifier's scale is an odds ratio: loosening p = 0.02 to p = 0.96 is 1,176
    loose = BASE.replace("autoencoder_threshold = 1.0",
                         "autoencoder_threshold = 1.0\nclassifier_threshold = 1176.0")
    assert load_recipe(write(folder, loose), check_files=False).decision.cls_threshold == 1176.0
    text = BASE.replace("autoencoder_threshold = 1.0", "autoencoder_threshold = 1176.0")
    err = refused(write(folder, text), check_files=False)
    assert err.key == "decision.autoencoder_threshold" and "1000" in str(err)


def test_missing_model_file_names_key_and_resolved_path(folder):
    (folder / "models" / "cls.onnx").unlink()
    path = write(folder, BASE)
    err = refused(path)
    assert err.key == "models.classifier" and err.line == line_of(BASE, "classifier =")
    assert str(folder / "models" / "cls.onnx") in str(err)
    # Tools that create the models load the recipe without file checks.
    assert load_recipe(path, check_files=False).models.classifier.endswith("cls.onnx")


def test_toml_syntax_error_becomes_recipe_error_with_line(folder):
    text = BASE.replace('port = "loop://"', "port = loop://")
    path = write(folder, text)
    err = refused(path)
    assert err.line == line_of(text, "port = loop")
    assert "TOML syntax error" in str(err) and f":{err.line}:" in str(err)
    dup_text = BASE + "\n[reject]\npulse_ms = 5\n"
    dup = write(folder, dup_text, "dup.toml")
    assert refused(dup).line == len(dup_text.splitlines()) - 1  # the second [reject] header


def test_missing_product_and_empty_name(folder):
    err = refused(write(folder, "[camera]\nsource = \"simulated\"\n"))
    assert err.key == "product" and "missing" in str(err) and err.line == 1
    err = refused(write(folder, '[product]\nname = "  "\n'))
    assert err.key == "product.name" and err.line == 2 and "non-empty" in str(err)


def test_every_problem_is_reported_in_line_order(folder):
    text = BASE + '\n[camera]\nfps = -1\nbackend = "dshow"\n'
    text = text.replace("pulse_ms = 50", "pulse_ms = 0")
    err = refused(write(folder, text))
    assert [i.key for i in err.issues] == ["reject.pulse_ms", "camera.fps", "camera.backend"]
    assert [i.line for i in err.issues] == sorted(i.line for i in err.issues)


def test_lines_after_multiline_arrays_and_strings_are_right(folder):
    text = BASE + (
        '\n[camera]\ndescription_like = """\nname = x\n[fake]\n"""\n'
        "[undistort]\ncamera_matrix = [\n  [800.0, 0.0, 320.0],\n  [0.0, 800.0, 240.0],\n"
        "  [0.0, 0.0, 1.0]\n]\ndist_coeffs = [0.0, 0.0, 0.0, 0.0]\nimage_size = [640, 0]\n"
    )
    err = refused(write(folder, text))
    keys = {i.key: i.line for i in err.issues}
    assert keys["camera.description_like"] == line_of(text, "description_like")
    assert keys["undistort.image_size"] == line_of(text, "image_size")
    assert "expected a list of integers each at least 1" in str(err)


def test_reject_template_fields_are_checked(folder):
    text = BASE + '\n[reject.x]\n'
    assert refused(write(folder, text)).key == "reject.x"
    bad = BASE.replace('port = "loop://"', 'port = "loop://"\nmessage = "REJECT {part}\\n"')
    err = refused(write(folder, bad))
    assert err.key == "reject.message" and "unknown field {part}" in str(err)
    good = BASE.replace('port = "loop://"',
                        'port = "loop://"\nmode = "message"\nmessage = "R {seq:05d} {verdict}\\n"')
    assert load_recipe(write(folder, good)).reject.message == "R {seq:05d} {verdict}\n"


def test_cross_field_rules(folder):
    text = BASE.replace('rule = "either"', 'rule = "both"').replace(
        'classifier = "models/cls.onnx"', 'classifier = ""')
    err = refused(write(folder, text))
    assert err.key == "models.classifier" and 'decision.rule = "both"' in str(err)
    err = refused(write(folder, BASE.replace('port = "loop://"', 'port = ""')))
    assert err.key == "reject.port" and err.line == line_of(BASE, "port =")
    serial = BASE.replace('port = "loop://"', 'port = ""').replace(
        "enabled = true", "enabled = false") + '\n[trigger]\nmode = "serial"\n'
    err = refused(write(folder, serial))
    assert err.key == "trigger.mode" and "reject.port" in str(err)
    # a classifier too narrow for station train to build is refused at its line, not after
    # the data set was cropped
    narrow = BASE.replace('classifier = "models/cls.onnx"',
                          'classifier = "models/cls.onnx"\nclassifier_width = 0.01')
    err = refused(write(folder, narrow))
    assert (err.key, err.line) == ("models.classifier_width", line_of(narrow, "classifier_width"))
    assert "expected 0 (station train's default) or 0.03 to 1" in str(err)
    # No models at all is a valid set-up recipe (before training).
    assert load_recipe(write(folder, '[product]\nname = "new"\n')).models.autoencoder == ""


def test_folder_source_device_is_resolved(folder):
    (folder / "frames").mkdir()
    text = BASE + '\n[camera]\nsource = "folder"\ndevice = "frames"\n'
    recipe = load_recipe(write(folder, text))
    assert recipe.camera.device == str((folder / "frames").resolve())


def test_shipped_recipes_load():
    paths = list_recipes(REPO / "recipes")
    names = {p.name for p in paths}
    assert {"demo.toml", "mvtec_screw.toml"} <= names
    for path in paths:
        recipe = load_recipe(path, check_files=False)
        assert recipe.product.name
    demo = load_recipe(REPO / "recipes" / "demo.toml", check_files=False)
    assert demo.camera.source == "simulated" and demo.reject.port == "loop://"
    assert Path(demo.models.autoencoder) == REPO / "models" / "demo" / "autoencoder.onnx"
    screw = load_recipe(REPO / "recipes" / "mvtec_screw.toml", check_files=False)
    assert screw.camera.source == "folder"
    assert Path(screw.models.classifier).parent == REPO / "models" / "screw"


def test_update_keeps_comments_and_leaves_a_backup(folder):
    path = write(folder, BASE)
    matrix = np.array([[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]])
    backup = update_recipe(path, {
        "decision.autoencoder_threshold": 1.25,
        "undistort.camera_matrix": matrix,
        "undistort.dist_coeffs": np.zeros(5),
        "undistort.image_size": (640, 480),
        "undistort.enabled": True,
        "camera.simulated.seed": 3,
    })
    assert backup is not None and backup.parent == path.parent
    assert re.fullmatch(r"recipe\.\d{8}-\d{6}\.bak\.toml", backup.name)
    assert backup.read_text() == BASE
    text = path.read_text()
    assert "# test recipe" in text and "# relative to this file" in text
    recipe = load_recipe(path)
    assert recipe.decision.autoencoder_threshold == 1.25
    assert recipe.undistort.camera_matrix[0] == (800.0, 0.0, 320.0)
    assert recipe.undistort.image_size == (640, 480) and recipe.camera.simulated.seed == 3
    # A second update in the same second gets its own backup; backups are not recipes.
    second = update_recipe(path, {"undistort.enabled": None})
    assert second != backup and second.exists()
    assert load_recipe(path).undistort.enabled is False
    assert list_recipes(folder) == [path]
    assert update_recipe(path, {"scale.mm_per_px": 0.1}, backup=False) is None


def test_update_refuses_invalid_change_without_touching_the_file(folder):
    path = write(folder, BASE)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    with pytest.raises(RecipeError) as info:
        update_recipe(path, {"reject.pulse_ms": -5})
    assert "reject.pulse_ms = -5: expected an integer between 1 and 10000" in str(info.value)
    with pytest.raises(RecipeError) as info:
        update_recipe(path, {"reject.pulse_width": 5})
    assert "unknown key" in str(info.value)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["recipe.toml"]


def test_recipe_to_dict_round_trips(folder):
    recipe = load_recipe(write(folder, BASE))
    data = recipe_to_dict(recipe)
    assert "path" not in data and data["reject"]["pulse_ms"] == 50
    again = load_recipe(write(folder, tomlkit.dumps(data), "again.toml"))
    assert recipe_to_dict(again) == data
    assert field_help("reject.pulse_ms") == "pulse width (ms)"


def test_pin_hash_round_trip_and_recipe_field(folder):
    stored = hash_pin("2468", iterations=100_000)
    assert stored.startswith("pbkdf2_sha256$100000$")  # 100000: the lowest accepted
    assert check_pin("2468", stored) and not check_pin("2469", stored)
    assert not check_pin("2468", "") and not check_pin("2468", "garbage")
    assert hash_pin("2468", iterations=100_000) != stored  # salted
    full = hash_pin("135790")
    assert check_pin("135790", full)
    with pytest.raises(ValueError):
        hash_pin("12")
    path = write(folder, BASE)
    update_recipe(path, {"engineer.pin_hash": stored}, backup=False)
    recipe = load_recipe(path)
    assert recipe.engineer.pin_required and check_pin("2468", recipe.engineer.pin_hash)


def test_update_of_the_shipped_demo_keeps_its_layout(tmp_path):
    path = tmp_path / "demo.toml"
    shutil.copy(REPO / "recipes" / "demo.toml", path)
    original = path.read_text()
    update_recipe(path, {"camera.simulated.seed": 11, "localize.roi": [10, 20, 300, 200]},
                  check_files=False)
    text = path.read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), text.splitlines(), strict=True)
               if a != b]
    assert len(changed) == 2, changed  # only the two lines, comments kept on them
    assert all("#" in b for a, b in changed if "#" in a)
    recipe = load_recipe(path, check_files=False)
    assert recipe.camera.simulated.seed == 11 and recipe.localize.roi == (10, 20, 300, 200)
    # Example from the docs: the message names file, line, key and expectation.
    path.write_text(text.replace("pulse_ms = 50", "pulse_ms = -5"))
    err = refused(path, check_files=False)
    assert str(err).endswith(
        f"demo.toml:{line_of(text, 'pulse_ms')}: reject.pulse_ms = -5: "
        "expected an integer between 1 and 10000")
