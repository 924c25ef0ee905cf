"""Property-based tests of the recipe loader (hypothesis).

Whatever the file holds (random text, random bytes, or a TOML document built from the schema's
own keys with arbitrary values), loading it gives a valid Recipe or a RecipeError whose every
line is ``<file>:<line>: ...`` with a line inside the file: never another exception, never a
slow load. A change the write-back refuses leaves the file as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

import tomlkit  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from station.config import (  # noqa: E402
    Recipe,
    RecipeError,
    field_info,
    load_recipe,
    update_recipe,
)

# RECIPE_FUZZ_EXAMPLES=5000 searches harder (a few minutes); the default keeps CI quick
N = int(os.environ.get("RECIPE_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(deadline=dt.timedelta(seconds=3), max_examples=N,
                    suppress_health_check=[HealthCheck.too_slow])


def schema(cls: type = Recipe, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every dotted key of the recipe schema (tables and leaves), as tuples of parts."""
    keys: list[tuple[str, ...]] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        key = (*prefix, f.name)
        keys.append(key)
        if is_dataclass(hints[f.name]):
            keys.extend(schema(hints[f.name], key))
    return keys


KEYS = schema()

# values a careless or hostile engineer types: edges of ranges, templates, ports, paths
NASTY_STRINGS = [
    "", " ", "loop://", "/dev/ttyUSB0", "COM3", "socket://127.0.0.1:9", "spy://loop://?file=x",
    "{part_id:>99999999999}", "{seq:.99999999999f}", "{part_id}", "{x}", "{", "}", "{0}",
    "{part_id.__class__}", "REJECT {part_id}\n", "either", "both", "autoencoder", "classifier",
    "free_run", "serial", "folder", "video", "genicam", "opencv", "simulated", "dark_on_light",
    "pbkdf2_sha256$1$ab$" + "0" * 64, "pbkdf2_sha256$1000000000000$" + "ab" * 16 + "$" + "0" * 64,
    "pbkdf2_sha256$200000$" + "ab" * 16 + "a$" + "0" * 64, "../../etc/passwd", "~", "~nobody/x",
    "/proc/self/mem", "/dev/zero", "x.cti", "/" * 300, "a" * 5000, "\ufeff", "\u2028", "é\x7f",
    "'''", '"""', "\\", "nan",
]
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, -1, 2, 3, 4, 5, 64, 65, 10**12, 2**63, 20000, 20001, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 0.5, 1e-300, 1e300, -0.0, 0.999, 1.0000001]),
    st.text(max_size=30),
    st.sampled_from(NASTY_STRINGS),
    st.dates(), st.times(), st.datetimes(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=12,
)
matrices = st.lists(st.lists(st.one_of(st.integers(-5, 1000), st.floats(-1e3, 1e3)),
                             min_size=0, max_size=4), min_size=0, max_size=4)


def plausible(key: tuple[str, ...]) -> st.SearchStrategy:
    """Values of the right type, mostly inside the field's range or choices, so that documents
    get past the per-field checks to the rules between keys."""
    tp, meta = field_info(".".join(key))
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = args[0]
    if is_dataclass(tp):
        return st.fixed_dictionaries({})
    if typing.get_origin(tp) in (tuple, list):
        inner = typing.get_args(tp)[0]
        if typing.get_origin(inner) in (tuple, list):
            return matrices
        if meta.get("choices"):
            return st.lists(st.sampled_from(meta["choices"]), max_size=3)
        number = st.integers(0, 2000) if inner is int else st.floats(-2.0, 2000.0)
        return st.lists(number, min_size=0, max_size=5)
    if meta.get("choices"):
        return st.sampled_from(meta["choices"])
    if tp is bool:
        return st.booleans()
    lo = meta.get("min", meta.get("gt", 0))
    hi = meta.get("max", 10**6)
    if tp is int:
        return st.integers(int(lo), int(hi))
    if tp is float:
        return st.floats(float(lo), float(hi)) | st.sampled_from([float(lo), float(hi)])
    return st.sampled_from(NASTY_STRINGS) | st.text(max_size=20)


def set_key(doc: dict, key: tuple[str, ...], value: object) -> None:
    """doc[a][b][c] = value, making tables on the way; a key under a non-table is dropped."""
    table = doc
    for part in key[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            return
    table[key[-1]] = value


@st.composite
def documents(draw) -> str:
    """A recipe built from the schema's keys (and a few unknown ones) with arbitrary values."""
    doc: dict = {"product": {"name": "widget"}} if draw(st.booleans()) else {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=8)):
        value = draw(plausible(key) if draw(st.integers(0, 3)) else toml_values)
        set_key(doc, key, value)
    for key in draw(st.lists(st.text(min_size=1, max_size=10), max_size=2)):
        set_key(doc, (draw(st.sampled_from(KEYS))[0], key), draw(scalars))
    try:
        return tomlkit.dumps(doc)
    except Exception:  # a value tomlkit cannot spell: the loader still gets a document
        return tomlkit.dumps({"product": {"name": "widget"}})


FRAGMENTS = ["[product]", 'name = "x"', "[camera]", "[[camera]]", "[reject.x]", "a = [", "]",
             "{", "}", '"""', "'''", "'", '"', "#", "=", "\ufeff", "\x00", "x = " + "[" * 40,
             "description = \"it'''s\"", 'port = "socket://h:1"', "[engineer]",
             'pin_hash = "pbkdf2_sha256$1$ab$cd"', "\r\n", "\\", "roi = [0, 0, 0, 1]"]
texts = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=25).map(
        "\n".join),
)


def assert_loads_or_refuses_with_lines(path: Path, check_files: bool = True) -> None:
    """The property: a Recipe, or a RecipeError of ``file:line: `` lines inside the file."""
    raw = path.read_bytes()
    n_lines = raw.count(b"\n") + 1
    try:
        recipe = load_recipe(path, check_files=check_files)
    except RecipeError as err:
        lines = str(err).split("\n")
        assert lines and len(lines) == len(err.issues)
        for line in lines:
            found = re.match(rf"^{re.escape(str(path))}:([0-9]+): \S", line)
            assert found, line
            assert 1 <= int(found.group(1)) <= n_lines, (line, n_lines)
        return
    assert isinstance(recipe, Recipe) and recipe.product.name.strip()


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory(prefix="recipe-props-") as folder:
        yield Path(folder)


@SETTINGS
@given(text=texts)
def test_any_text_loads_or_is_refused_line_by_line(scratch, text):
    path = scratch / "text.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_loads_or_refuses_with_lines(path)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_bytes_load_or_are_refused_line_by_line(scratch, raw):
    path = scratch / "bytes.toml"
    path.write_bytes(raw)
    assert_loads_or_refuses_with_lines(path)


@settings(SETTINGS, max_examples=2 * N)
@given(text=documents(), check_files=st.booleans())
def test_schema_documents_load_or_are_refused_line_by_line(scratch, text, check_files):
    path = scratch / "doc.toml"
    path.write_text(text, encoding="utf-8")
    assert_loads_or_refuses_with_lines(path, check_files)


VALID = '# comment kept\n[product]\nname = "widget"\n[reject]\nport = "loop://"\n'


@settings(SETTINGS, max_examples=max(N // 2, 1))
@given(key=st.sampled_from(KEYS), value=toml_values)
def test_a_refused_change_leaves_the_file_untouched(scratch, key, value):
    path = scratch / "edit.toml"
    path.write_text(VALID, encoding="utf-8")
    for stale in scratch.glob("edit.*.bak.toml"):
        stale.unlink()
    try:
        update_recipe(path, {".".join(key): value}, check_files=False)
    except RecipeError as err:
        assert all(re.match(rf"^{re.escape(str(path))}:[0-9]+: ", line)
                   for line in str(err).split("\n")), str(err)
        assert path.read_text(encoding="utf-8") == VALID
        assert not list(scratch.glob("edit.*.bak.toml"))
        return
    assert "# comment kept" in path.read_text(encoding="utf-8")
    assert isinstance(load_recipe(path, check_files=False), Recipe)
