"""Output files are checked before a command starts: a replay, an evaluation or a bench
that cannot write its JSON says so in one line at once, not after its minutes of work."""

from __future__ import annotations

import argparse
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


def test_checking_a_name_creates_nothing(tmp_path):
    """Parsing the arguments makes no folder and touches no file: a command refused for
    another option leaves nothing behind, and a dangling link is not followed."""
    check = station.cli.outputs.output_file
    new = tmp_path / "sub" / "deep" / "new.json"
    assert check(str(new)) == new and not (tmp_path / "sub").exists()
    old = tmp_path / "old.json"
    old.write_text("kept")
    before = old.stat().st_mtime_ns
    check(str(old))
    assert old.read_text() == "kept" and old.stat().st_mtime_ns == before
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "target.json")
    check(str(link))
    assert not (tmp_path / "target.json").exists() and link.is_symlink()


def test_a_file_in_the_way_or_a_name_too_long_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "file").write_text("x")
    for text, says in ((str(tmp_path / "file" / "e.json"), "is a file, not a folder"),
                       ("a" * 300 + "/x.json", "too long")):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            station.cli.outputs.output_file(text)
