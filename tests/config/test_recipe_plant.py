"""The plant's recipe keys: [product] number, trigger.mode = "plc", reject.output, [modbus],
[opcua]: defaults, and bad values refused as ``file:line: key = value: expected ...``."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.config import hash_pin, load_recipe
from tests.config.test_recipe import BASE, folder, line_of, refused, write  # noqa: F401


def test_plant_keys_default_off_and_load(folder):  # noqa: F811
    recipe = load_recipe(write(folder, BASE))
    assert recipe.product.number == 0
    assert recipe.reject.output == "serial"
    assert not recipe.modbus.enabled and recipe.modbus.host == "127.0.0.1"
    assert (recipe.modbus.port, recipe.modbus.unit) == (5020, 1)
    assert not recipe.opcua.enabled and recipe.opcua.security == "none"
    assert recipe.opcua.endpoint == "opc.tcp://127.0.0.1:4840/station"
    text = BASE.replace('name = "widget"', 'name = "widget"\nnumber = 12').replace(
        'port = "loop://"', 'output = "plc"') + (
        '\n[trigger]\nmode = "plc"\n\n[modbus]\nenabled = true\nhost = "0.0.0.0"\nport = 1502'
        f'\n\n[opcua]\nenabled = true\nusername = "plc"\npassword_hash = "{hash_pin("s3cret")}"\n')
    recipe = load_recipe(write(folder, text))
    assert recipe.product.number == 12 and recipe.trigger.mode == "plc"
    assert recipe.reject.output == "plc" and recipe.reject.port == ""
    assert (recipe.modbus.host, recipe.modbus.port) == ("0.0.0.0", 1502)
    assert recipe.opcua.username == "plc"


@pytest.mark.parametrize(
    ("append", "fragment", "key", "expected"),
    [
        ("[trigger]\nmode = \"modbus\"\n", "modbus", "trigger.mode",
         'trigger.mode = "modbus": expected one of "free_run", "serial", "software", '
         '"hardware", "plc"'),
        ("[modbus]\nport = 70000\n", "70000", "modbus.port",
         "modbus.port = 70000: expected an integer between 1 and 65535"),
        ("[modbus]\nunit = 0\n", "unit", "modbus.unit",
         "modbus.unit = 0: expected an integer between 1 and 247"),
        ("[modbus]\nhost = \"\"\n", "host", "modbus.host",
         'modbus.host = "": expected a non-empty string'),
        ("[opcua]\nendpoint = \"http://127.0.0.1:4840\"\n", "endpoint", "opcua.endpoint",
         'opcua.endpoint = "http://127.0.0.1:4840": expected opc.tcp://HOST:PORT/PATH'),
        ("[opcua]\nsecurity = \"Basic128\"\n", "security", "opcua.security",
         'opcua.security = "Basic128": expected one of "none", "Basic256Sha256"'),
        ("[opcua]\nsecurity = \"Basic256Sha256\"\nprivate_key = \"models/ae.onnx\"\n",
         "[opcua]", "opcua.certificate",
         'opcua.certificate = "": expected a file, because opcua.security = "Basic256Sha256"'),
        ("[opcua]\nusername = \"plc\"\npassword_hash = \"s3cret\"\n", "password_hash",
         "opcua.password_hash", 'opcua.password_hash = "s3cret": expected "pbkdf2_sha256$'),
        ("[opcua]\nusername = \"plc\"\n", "[opcua]", "opcua.password_hash",
         'opcua.password_hash = "": expected both opcua.username and opcua.password_hash'),
    ],
)
def test_bad_plant_values_name_their_line(folder, append, fragment, key, expected):  # noqa: F811
    text = BASE + "\n" + append
    path = write(folder, text)
    err = refused(path)
    assert len(err.issues) == 1, str(err)
    assert err.key == key
    assert err.line == line_of(text, fragment)
    assert str(err).startswith(f"{path}:{err.line}: ")
    assert expected in str(err)


def test_bad_number_and_output_name_their_line(folder: Path) -> None:  # noqa: F811
    text = BASE.replace('name = "widget"', 'name = "widget"\nnumber = -1').replace(
        "pulse_ms = 50", 'pulse_ms = 50\noutput = "fieldbus"')
    err = refused(write(folder, text))
    lines = str(err).splitlines()
    assert lines[0].endswith(f":{line_of(text, 'number')}: product.number = -1: expected an "
                             "integer between 0 and 65535")
    assert lines[1].endswith(f":{line_of(text, 'fieldbus')}: reject.output = \"fieldbus\": "
                             'expected one of "serial", "plc"')
