"""Numbers on the command line: a value outside its range is one line that names the
command and the option, and nothing starts (no training, no line, no bench)."""

from __future__ import annotations

import doctest

import pytest

import station.cli.numbers
from station.cli import main


def test_numbers_doctests_hold():
    result = doctest.testmod(station.cli.numbers)
    assert result.attempted and not result.failed


@pytest.mark.parametrize(("argv", "says"), [
    # a budget that trained at the smallest budget without a word
    (["train", "--minutes", "-1"], "--minutes: '-1': expected a finite number, above 0"),
    (["train", "--minutes", "nan"], "--minutes: 'nan': expected a finite number, above 0"),
    (["train", "--epochs", "0"], "--epochs: '0': expected a whole number 1 or more"),
    # a crop that ran out of memory as an "internal error"
    (["train", "--cls-size", "100000"], "--cls-size: '100000': expected a whole number from 32 to 4096"),
    (["train", "--seed", "-1"], "--seed: '-1': expected a whole number 0 or more"),
    (["train", "--classifier-members", "0"], "--classifier-members: '0': expected a whole number 1"),
    (["evaluate", "--threads", "-1"], "--threads: '-1': expected a whole number 0 or more"),
    (["crops", "--size", "7"], "--size: '7': expected a whole number from 8 to 4096"),
    # a bench that never finished, and one that stopped on a Python message
    (["bench", "--min-seconds", "inf"], "--min-seconds: 'inf': expected a finite number, 0 or more"),
    (["bench", "--plant-seconds", "-1"], "--plant-seconds: '-1': expected a finite number, 0"),
    # a demo that ran forever
    (["demo", "--headless", "--seconds", "nan"], "--seconds: 'nan': expected a finite number, above 0"),
    (["run", "--headless", "--seconds", "-5"], "--seconds: '-5': expected a finite number, above 0"),
    (["calibrate", "threshold", "--frr", "2"], "--frr: '2': expected a finite number, above 0 and under 1"),
])
def test_a_number_out_of_range_is_one_line_and_nothing_starts(tmp_path, capsys, argv, says):
    out = tmp_path / "out"
    extra = {"train": ["--data", str(tmp_path), "--out", str(out)],
             "evaluate": ["--models", str(tmp_path), "--data", str(tmp_path), "--json",
                          str(out / "e.json")],
             "crops": ["--data", str(tmp_path), "--out", str(out)],
             "bench": ["--json", str(out / "b.json")]}.get(argv[0], [])
    rc = main([*argv, *extra])
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    command = " ".join(argv[:2] if argv[0] == "calibrate" else argv[:1])
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"station {command}: argument ") and says in err[0], err[0]
    assert f"(see station {command} --help)" in err[0]
    assert not out.exists() and not captured.out


def test_help_still_exits_cleanly(capsys):
    assert main(["train", "--help"]) == 0
    assert "--minutes" in capsys.readouterr().out
