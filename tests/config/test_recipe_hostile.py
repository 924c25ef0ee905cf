"""Hostile and broken recipes (issue 10, section 2): each refused at load with one line that
names the file, the line and the key, never a traceback, a hang or a line that inspects
nothing. Every case here was accepted (or crashed the loader) before."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from station.config import (
    PIN_ITERATIONS,
    PIN_MAX_ITERATIONS,
    PIN_MIN_ITERATIONS,
    RecipeError,
    check_pin,
    field_help,
    field_info,
    hash_pin,
    load_recipe,
    port_problem,
    set_pin,
    update_recipe,
)
from station.sources.base import SourceError
from station.sources.genicam import GenICamSource, bundled_producer, producer_problem
from station.trigger import make_trigger
from station.vision.undistort import Undistorter, UndistortError

REPO = Path(__file__).resolve().parents[2]

BASE = """\
# hostile-input test recipe
[product]
name = "widget"
"""


def write(folder: Path, text: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str) -> int:
    for number, line in enumerate(text.split("\n"), start=1):
        if fragment in line:
            return number
    raise AssertionError(fragment)


def refused(path: Path, **kwargs) -> RecipeError:
    """The RecipeError of a refused recipe, checked to be one ``file:line: `` line per issue."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path, **kwargs)
    for line in str(info.value).split("\n"):
        assert re.match(rf"^{re.escape(str(path))}:[1-9][0-9]*: \S", line), line
    return info.value


def refused_at(tmp_path: Path, append: str, fragment: str, key: str, expected: str) -> None:
    text = BASE + append
    err = refused(write(tmp_path, text), check_files=False)
    assert len(err.issues) == 1, str(err)
    assert err.key == key and err.line == line_of(text, fragment), str(err)
    assert expected in str(err)


# --- 5: a bad region means a line with no inspection -------------------------------------

def test_min_area_above_max_area_is_refused(tmp_path):
    refused_at(tmp_path, "[localize]\nmin_area_frac = 0.7\nmax_area_frac = 0.5\n",
               "min_area_frac", "localize.min_area_frac",
               "localize.min_area_frac = 0.7: expected less than localize.max_area_frac = 0.5")


@pytest.mark.parametrize("value", ["0", "1", "0.0", "1.0", "-0.1", "1.5"])
def test_line_frac_at_or_beyond_the_roi_edge_is_refused(tmp_path, value):
    refused_at(tmp_path, f"[trigger]\nmode = \"free_run\"\nline_frac = {value}\n", "line_frac",
               "trigger.line_frac", "expected a number greater than 0 and less than 1")


@pytest.mark.parametrize("value", [0.001, 0.5, 0.999])
def test_every_line_frac_the_loader_accepts_the_free_run_trigger_accepts(tmp_path, value):
    recipe = load_recipe(write(tmp_path, BASE + f"[trigger]\nline_frac = {value}\n"),
                         check_files=False)
    trigger = make_trigger(recipe.trigger, localize=recipe.localize)
    assert trigger.line_frac == value


@pytest.mark.parametrize("roi", ["[10, 10, 0, 50]", "[10, 10, 50, 0]", "[5, 5, 0, 0]"])
def test_roi_without_size_is_refused(tmp_path, roi):
    refused_at(tmp_path, f"[localize]\nroi = {roi}\n", "roi", "localize.roi",
               "expected a width w and height h above 0 ([0, 0, 0, 0] = the whole frame)")


def test_roi_outside_a_known_frame_is_refused_and_inside_loads(tmp_path):
    sim = "[camera.simulated]\nwidth = 320\nheight = 240\n"
    refused_at(tmp_path, sim + "[localize]\nroi = [300, 0, 100, 100]\n", "roi", "localize.roi",
               "expected a region inside the 320x240 frame")
    recipe = load_recipe(write(tmp_path, BASE + sim + "[localize]\nroi = [220, 0, 100, 240]\n"))
    assert recipe.localize.roi == (220, 0, 100, 240)


# --- 6: tracebacks instead of one clear line ---------------------------------------------

@pytest.mark.parametrize("template", [
    "{part_id:>99999999999}",  # MemoryError in the loader before
    "{seq:.99999999999f}",
    "{seq:065d}",
    "{part_id:{seq}}",         # a nested field in the spec
    "{part_id.__class__}",
    "{part_id[0]}",
    "{0}",
    "{seq:q}",
])
@pytest.mark.parametrize("key", ["message", "ack"])
def test_unsafe_reject_templates_are_refused_quickly(tmp_path, template, key):
    start = time.monotonic()
    refused_at(tmp_path, f'[reject]\n{key} = "{template}"\n', key, f"reject.{key}",
               "expected a template using only {part_id}, {verdict}, {seq}")
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("template", ["REJECT {part_id}\\n", "{seq:08d}|{verdict!r}|",
                                      "{part_id:>64}", "{seq:,.3f}", "{{literal}} {seq:x}"])
def test_ordinary_reject_templates_still_load(tmp_path, template):
    recipe = load_recipe(write(tmp_path, BASE + f'[reject]\nmessage = "{template}"\n'))
    assert recipe.reject.message == template.replace("\\n", "\n")


def test_array_nested_5000_deep_is_one_line_with_its_line_number(tmp_path):
    text = BASE + "[camera]\nsource = \"simulated\"\n" + "x = " + "[" * 5000 + "]" * 5000 + "\n"
    err = refused(write(tmp_path, text))
    assert len(err.issues) == 1 and err.line == line_of(text, "x = ")
    assert "nested more than 32 deep" in str(err)
    with pytest.raises(RecipeError, match="nested more than"):  # write-back refuses it too
        update_recipe(tmp_path / "recipe.toml", {"product.name": "y"})


SINGULAR = [
    "[[800, 0, 320], [0, 800, 240], [0, 0, 0]]",
    "[[1, 0, 0], [0, 1, 0], [0, 0, 0]]",
    "[[800, 0, 320], [800, 800, 240], [0, 0, 1]]",
    "[[1e-200, 0, 0], [0, 1e-200, 0], [0, 0, 1]]",
    "[[1e300, 0, 0], [0, 1e300, 0], [0, 0, 1]]",
    "[[0, 0, 320], [0, 800, 240], [0, 0, 1]]",
]


@pytest.mark.parametrize("matrix", SINGULAR)
def test_singular_or_malformed_camera_matrix_is_refused_at_load(tmp_path, matrix):
    text = (BASE + f"[undistort]\nenabled = true\ncamera_matrix = {matrix}\n"
            "dist_coeffs = [0, 0, 0, 0, 0]\nimage_size = [640, 480]\n")
    err = refused(write(tmp_path, text))
    assert err.key == "undistort.camera_matrix" and err.line == line_of(text, "camera_matrix")
    with pytest.raises(UndistortError, match="undistort.camera_matrix"):
        Undistorter.from_intrinsics(eval(matrix), [0.0] * 5, (640, 480))


def test_a_valid_camera_matrix_loads_and_undistorts(tmp_path):
    text = (BASE + "[undistort]\nenabled = true\ncamera_matrix = [[500, 0, 32], [0, 500, 24], "
            "[0, 0, 1]]\ndist_coeffs = [0.1, 0, 0, 0]\nimage_size = [64, 48]\n")
    recipe = load_recipe(write(tmp_path, text))
    und = Undistorter.from_recipe(recipe)
    assert und is not None and und.map1.shape[:2] == (48, 64)


def test_undistort_image_size_beyond_any_camera_is_refused(tmp_path):
    refused_at(tmp_path, "[undistort]\nimage_size = [640, 10000000]\n", "image_size",
               "undistort.image_size", "each at most 20000")


@pytest.mark.parametrize("rule", ["either", "both"])
@pytest.mark.parametrize("present", ["autoencoder", "classifier"])
def test_a_rule_fusing_two_models_with_one_configured_is_refused(tmp_path, rule, present):
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    text = BASE + f'[models]\n{present} = "m.onnx"\n[decision]\nrule = "{rule}"\n'
    err = refused(write(tmp_path, text))
    assert len(err.issues) == 1, str(err)
    assert err.key in ("decision.rule", "models.autoencoder", "models.classifier")
    assert f'"{rule}"' in str(err) and "expected" in str(err)
    one_model = load_recipe(write(tmp_path, text.replace(f'"{rule}"', f'"{present}"')))
    assert one_model.decision.rule == present


def test_no_models_at_all_stays_valid_for_set_up_before_training(tmp_path):
    assert load_recipe(write(tmp_path, BASE + '[decision]\nrule = "either"\n')).models.classifier == ""


# --- 8: the engineer PIN ------------------------------------------------------------------

SALT = "ab" * 16
DIGEST = "0" * 64
BAD_HASHES = [
    f"pbkdf2_sha256$0${SALT}${DIGEST}",
    f"pbkdf2_sha256$1${SALT}${DIGEST}",
    f"pbkdf2_sha256$1000000000000${SALT}${DIGEST}",  # 10^12 iterations: stalled check_pin
    f"pbkdf2_sha256${PIN_MIN_ITERATIONS - 1}${SALT}${DIGEST}",
    f"pbkdf2_sha256${PIN_MAX_ITERATIONS + 1}${SALT}${DIGEST}",
    f"pbkdf2_sha256$200000${SALT}a${DIGEST}",         # odd-length salt: crashed check_pin
    f"pbkdf2_sha256$200000${'ab' * 15}${DIGEST}",       # 15-byte salt
    f"pbkdf2_sha256$200000${SALT.upper()}${DIGEST}",
    f"pbkdf2_sha256$200000${SALT}${DIGEST}0",
    f"pbkdf2_sha256$0200000${SALT}${DIGEST}",
    f"pbkdf2_sha256$200000${SALT}${DIGEST}\n",
]


@pytest.mark.parametrize("stored", BAD_HASHES)
def test_out_of_bounds_pin_hashes_are_refused_and_never_crash_or_stall_check_pin(tmp_path, stored):
    err = refused(write(tmp_path, BASE + f"[engineer]\npin_hash = {json.dumps(stored)}\n"))
    assert err.key == "engineer.pin_hash"
    assert "station set-pin" in str(err) or "without control characters" in str(err)
    start = time.monotonic()
    assert check_pin("1234", stored) is False
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("pin, stored", [("1234", None), (None, hash_pin("1234")), ("\ud800x", ""),
                                         (b"1234", "x"), ("1234", 12345), ("x" * 10**6, "")])
def test_check_pin_never_raises(pin, stored):
    assert check_pin(pin, stored) is False


def test_hash_pin_bounds_and_default_inside_them():
    assert PIN_MIN_ITERATIONS <= PIN_ITERATIONS <= PIN_MAX_ITERATIONS
    for iterations in (1, PIN_MIN_ITERATIONS - 1, PIN_MAX_ITERATIONS + 1):
        with pytest.raises(ValueError, match="iterations"):
            hash_pin("2468", iterations=iterations)
    stored = hash_pin("\ud800pin")  # a lone surrogate from a broken keyboard layer: no crash
    assert check_pin("\ud800pin", stored) and not check_pin("2468", stored)


def test_shipped_recipes_lock_engineer_mode_until_set_pin(tmp_path):
    for shipped in sorted((REPO / "recipes").glob("*.toml")):
        text = shipped.read_text(encoding="utf-8")
        assert 'pin_hash = ""' in text and "station set-pin --recipe" in text, shipped.name
        recipe = load_recipe(shipped, check_files=False)
        assert recipe.engineer.locked and not recipe.engineer.pin_set, shipped.name
    assert "LOCKED" in field_help("engineer.pin_hash")
    assert "station set-pin" in field_help("engineer.pin_hash")
    copy = tmp_path / "demo.toml"
    shutil.copy(REPO / "recipes" / "demo.toml", copy)  # its models need not exist to set a PIN
    backup = set_pin(copy, "8642")
    assert backup is not None and backup.exists()
    recipe = load_recipe(copy, check_files=False)
    assert recipe.engineer.pin_set and not recipe.engineer.locked
    assert check_pin("8642", recipe.engineer.pin_hash)
    assert "# loopback: nothing is wired" in copy.read_text(encoding="utf-8")  # comments kept


# --- 9: recipe values that reach too far --------------------------------------------------

@pytest.mark.parametrize("port", [
    "spy://loop://?file=/tmp/owned.txt", "socket://203.0.113.1:4000", "rfc2217://h:1",
    "hwgrid://x", "alt://loop://", "/tmp/ttyFAKE", "/dev/../tmp/x", "/dev/serial/../../etc/x",
    "/dev/sda", "loop://?logging=debug", "COM0", "com3 ",
])
def test_reject_port_urls_and_non_device_paths_are_refused(tmp_path, port):
    refused_at(tmp_path, f'[reject]\nenabled = true\nport = "{port}"\n', "port", "reject.port",
               "expected a serial device")


@pytest.mark.parametrize("port", ["/dev/ttyUSB0", "/dev/ttyACM1", "/dev/ttyS0", "/dev/pts/7",
                                  "/dev/serial/by-id/usb-FTDI_FT232R_A1-if00-port0",
                                  "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
                                  "/dev/cu.usbserial-1420", "COM3", "COM12", "\\\\.\\COM10",
                                  "loop://"])
def test_real_serial_devices_and_loop_are_accepted(port):
    assert port_problem(port) is None


def test_url_ports_only_behind_the_explicit_test_option(tmp_path):
    text = BASE + '[reject]\nenabled = true\nport = "socket://127.0.0.1:9"\nallow_url_ports = true\n'
    assert load_recipe(write(tmp_path, text)).reject.port == "socket://127.0.0.1:9"
    assert "tests only" in field_help("reject.allow_url_ports")


def test_engineer_write_back_of_a_url_port_is_refused_and_leaves_the_file(tmp_path):
    path = write(tmp_path, BASE + '[reject]\nenabled = true\nport = "loop://"\n')
    before = path.read_text(encoding="utf-8")
    with pytest.raises(RecipeError, match="reject.port"):
        update_recipe(path, {"reject.port": "spy://loop://?file=/tmp/owned"})
    assert path.read_text(encoding="utf-8") == before
    assert list(tmp_path.glob("*.bak.toml")) == []


def test_serial_trigger_port_is_checked_the_same_way(tmp_path):
    refused_at(tmp_path, '[trigger]\nmode = "serial"\n[reject]\nport = "socket://h:1"\n',
               "port", "reject.port", "expected a serial device")


@pytest.fixture()
def producer(tmp_path: Path) -> Path:
    """A .cti file outside every trusted folder (its content is never loaded)."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    cti = folder / "evil.cti"
    cti.write_bytes(b"\x7fELF not really")
    return cti


def test_cti_outside_trusted_folders_is_refused_at_load_and_at_open(tmp_path, producer, monkeypatch):
    monkeypatch.delenv("STATION_GENTL_PATH", raising=False)
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    text = BASE + f'[camera]\nsource = "genicam"\ncti = "{producer}"\n'
    err = refused(write(tmp_path, text))
    assert err.key == "camera.cti" and err.line == line_of(text, "cti =")
    assert "STATION_GENTL_PATH" in str(err) and "GENICAM_GENTL64_PATH" in str(err)
    with pytest.raises(SourceError, match="refused"):
        GenICamSource(producer).open()  # never handed to harvesters
    sneaky = producer.parent.parent / "trusted"
    sneaky.mkdir()
    monkeypatch.setenv("STATION_GENTL_PATH", str(sneaky))
    assert producer_problem(sneaky / ".." / "downloads" / "evil.cti") is not None


def test_cti_in_a_folder_the_station_documents_loads(tmp_path, producer, monkeypatch):
    monkeypatch.setenv("STATION_GENTL_PATH", str(producer.parent))
    text = BASE + f'[camera]\nsource = "genicam"\ncti = "{producer}"\n'
    assert load_recipe(write(tmp_path, text)).camera.cti == str(producer)
    monkeypatch.delenv("STATION_GENTL_PATH")
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(producer.parent))
    assert producer_problem(producer) is None


def test_keys_that_reach_native_code_urls_or_the_pin_are_marked_file_only():
    for key in ("camera.cti", "reject.allow_url_ports", "engineer.pin_hash"):
        assert field_info(key)[1].get("file_only") is True, key
    assert not field_info("reject.port")[1].get("file_only")  # validated, so editable


@pytest.mark.skipif(bundled_producer() is None, reason="no genicam wheel")
def test_the_genicam_wheels_own_producer_is_trusted():
    assert producer_problem(bundled_producer()) is None


# --- 11c: BOM, binary files, ''' inside a string -------------------------------------------

def test_utf8_bom_recipe_loads_and_write_back_keeps_it(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (BASE + "[reject]\npulse_ms = 40\n").encode())
    assert load_recipe(path).reject.pulse_ms == 40
    update_recipe(path, {"reject.pulse_ms": 60}, backup=False)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf[product]") or path.read_bytes().startswith(
        b"\xef\xbb\xbf# hostile")
    assert load_recipe(path).reject.pulse_ms == 60


@pytest.mark.parametrize("raw, line, byte", [
    (BASE.encode() + b"x = 1\x00\x01\x02", 4, len(BASE) + 5),
    (b"\x89PNG\r\n\x1a\n\x00\x00", 1, 0),
    (BASE.encode() + b'description = "caf\xe9"\n', 4, len(BASE) + 18),
])
def test_binary_or_non_utf8_file_is_refused_as_not_text(tmp_path, raw, line, byte):
    path = tmp_path / "recipe.toml"
    path.write_bytes(raw)
    err = refused(path)
    assert str(err).startswith(f"{path}:{line}: not a text TOML file (byte {byte}")


def test_triple_quote_inside_a_one_line_string_keeps_later_line_numbers(tmp_path):
    text = BASE + "description = \"it'''s\"\n[camera]\nsourse = \"opencv\"\n"
    err = refused(write(tmp_path, text))
    assert err.key == "camera.sourse" and err.line == line_of(text, "sourse")
    assert "did you mean source?" in str(err)


def test_multiline_strings_and_arrays_do_not_hide_keys(tmp_path):
    text = BASE + ('description = """a\n\'\'\'\nb"""""\n[camera]\nx = \'\'\'\n"""[\n\'\'\'\n'
                   'y = [1,\n  "]]]",\n  2]\nz = 1\n')
    err = refused(write(tmp_path, text))
    assert {i.key: i.line for i in err.issues} == {
        "camera.x": line_of(text, "x = "), "camera.y": line_of(text, "y = "),
        "camera.z": line_of(text, "z = 1")}


def test_toml_syntax_errors_keep_their_line(tmp_path):
    text = BASE + "[reject]\npulse_ms = 50\nmessage = \"unterminated\nack = \"\"\n"
    err = refused(write(tmp_path, text))
    assert err.line == line_of(text, "unterminated") and "TOML syntax error" in str(err)


def test_a_key_holding_a_newline_is_still_one_line_per_issue(tmp_path):
    err = refused(write(tmp_path, BASE + '"a\\nb\\u2028c" = 1\n'))
    assert len(str(err).split("\n")) == 1 and "a\\nb" in str(err)


@pytest.mark.parametrize("present", ["autoencoder", "classifier"])
def test_a_rule_left_out_follows_the_one_model_configured(tmp_path, present):
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    recipe = load_recipe(write(tmp_path, BASE + f'[models]\n{present} = "m.onnx"\n'))
    assert recipe.decision.rule == present


def test_a_huge_file_or_an_endless_device_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_bytes(BASE.encode() + b"# " + b"x" * (2 << 20) + b"\n")
    start = time.monotonic()
    assert "expected a recipe of at most" in str(refused(path))
    with pytest.raises(RecipeError, match="at most"):
        load_recipe("/dev/zero")
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("line, says", [
    ('[product]\nname = "a\\u0000b"\n', "without control characters"),
    ('[product]\nname = "line one\\nline two"\n', "without control characters"),
    ('[product]\nname = "' + "x" * 121 + '"\n', "at most 120 characters"),
    ('[product]\nname = "p"\ndescription = "' + "y" * 5000 + '"\n', "at most 4096 characters"),
])
def test_names_with_control_characters_or_absurd_lengths_are_refused(tmp_path, line, says):
    """A product name reaches the operator's screen, every record and the CSV export: a NUL,
    a line break or 100,000 characters there is a mistake (or worse), named at its line."""
    err = refused(write(tmp_path, line))
    assert says in str(err) and f":{line.count(chr(10))}: " in str(err)


def test_a_multi_line_description_and_wire_bytes_keep_their_line_breaks(tmp_path):
    path = write(tmp_path, '[product]\nname = "p"\ndescription = "two\\nlines"\n\n[reject]\n'
                           'message = "REJECT {part_id}\\r\\n"\n')
    recipe = load_recipe(path)
    assert recipe.product.description == "two\nlines"
    assert recipe.reject.message == "REJECT {part_id}\r\n"


@pytest.mark.parametrize("value, says", [("/dev/zero", "is a device"), (".", "is a folder")])
def test_a_model_path_that_is_no_regular_file_says_what_it_is(tmp_path, value, says):
    err = refused(write(tmp_path, f'[product]\nname = "p"\n\n[models]\nautoencoder = "{value}"\n'
                                  'classifier = ""\n\n[decision]\nrule = "autoencoder"\n'))
    assert err.key == "models.autoencoder" and says in str(err)


def test_an_images_folder_that_is_a_file_is_refused_at_load(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    err = refused(write(tmp_path, '[product]\nname = "p"\n\n[records]\nimages_dir = "taken"\n'))
    assert err.key == "records.images_dir" and "is a file" in str(err)
