"""Output files are checked before a command starts: a replay, an evaluation or a bench
that cannot write its JSON says so in one line at once, not after its minutes of work."""

from __future__ import annotations

import doctest

import pytest

import station.cli.outputs
from station.cli import main


def test_outputs_doctests_hold():
    result = doctest.testmod(station.cli.outputs)
    assert result.attempted and not result.failed


@pytest.mark.parametrize("argv", [
    ["replay", "--recipe", "r.toml", "--data", "d", "--json"],
    ["evaluate", "--models", "m", "--data", "d", "--json"],
    ["bench", "--json"]])
def test_a_json_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, argv):
    for target, says in (("/proc/station/x.json", "cannot write there"),
                         (str(tmp_path), "a folder; expected a file name")):
        assert main([*argv, target]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"argument --json: '{target}': {says}" in err[0], err


def test_a_file_that_can_be_written_is_left_as_it_was(tmp_path):
    new = tmp_path / "sub" / "new.json"
    assert station.cli.outputs.output_file(str(new)) == new and not new.exists()
    assert new.parent.is_dir()  # its folder is made, as the command would make it
    old = tmp_path / "old.json"
    old.write_text("kept")
    station.cli.outputs.output_file(str(old))
    assert old.read_text() == "kept"
