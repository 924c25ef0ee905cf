"""``station set-pin``: the only way to give a recipe its first engineer PIN (audit #8).

Through the real command line: typed twice at a real terminal (a pty, so ``getpass`` turns
echo off as it would for a person) or one line on stdin with ``--pin-stdin``.
"""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.config import check_pin, load_recipe

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
RECIPE = '''# the line's recipe
[product]
name = "pins"   # product name
[records]
database = "records/records.sqlite"
[engineer]
pin_hash = ""
'''


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "line.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def _set_pin(recipe: Path, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "station", "set-pin", "--recipe", str(recipe),
                           "--pin-stdin"], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def _events(recipe: Path) -> list[tuple[str, str, str | None, str | None]]:
    database = load_recipe(recipe, check_files=False).records.database
    with sqlite3.connect(database) as db:
        return db.execute("SELECT who, key, old, new FROM events").fetchall()


def test_pin_from_stdin_is_stored_hashed_with_a_backup_and_recorded(recipe: Path):
    proc = _set_pin(recipe, "2468\n")
    assert proc.returncode == 0, proc.stderr
    assert "engineer PIN set" in proc.stdout and "2468" not in proc.stdout + proc.stderr
    text = recipe.read_text(encoding="utf-8")
    stored = load_recipe(recipe).engineer.pin_hash
    # hashed (the random hex of the hash may hold "2468" by chance: look outside it)
    assert "2468" not in text.replace(stored, "") and "# product name" in text  # comments kept
    assert check_pin("2468", stored)
    (backup,) = recipe.parent.glob("line.*.bak.toml")
    assert 'pin_hash = ""' in backup.read_text(encoding="utf-8")
    ((who, key, old, new),) = _events(recipe)
    assert who.startswith("set-pin") and (key, old, new) == ("engineer.pin_hash", "", "changed")
    # changing it again records that a PIN was set before
    assert _set_pin(recipe, "13579\n").returncode == 0
    assert check_pin("13579", load_recipe(recipe).engineer.pin_hash)
    assert _events(recipe)[-1][2] == "set"


@pytest.mark.parametrize("stdin, reason", [("12\n", "at least 4 characters"),
                                           ("", "nothing on stdin"),
                                           (" 2468\n", "must not start or end with a space")])
def test_an_unusable_pin_changes_nothing(recipe: Path, stdin: str, reason: str):
    proc = _set_pin(recipe, stdin)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("station set-pin: ") and reason in lines[0]
    assert recipe.read_text(encoding="utf-8") == RECIPE


def test_a_broken_recipe_is_refused_naming_file_and_line(tmp_path: Path):
    path = tmp_path / "broken.toml"
    text = '[product]\nname = "x"\n[reject]\npulse_ms = -5\n'
    path.write_text(text, encoding="utf-8")
    proc = _set_pin(path, "2468\n")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "broken.toml:4" in proc.stderr and "reject.pulse_ms" in proc.stderr
    assert path.read_text(encoding="utf-8") == text


def test_a_malformed_pin_hash_is_repaired(recipe: Path):
    recipe.write_text(RECIPE.replace('pin_hash = ""', 'pin_hash = "pbkdf2_sha256$1$00$ab"'),
                      encoding="utf-8")
    proc = _set_pin(recipe, "2468\n")
    assert proc.returncode == 0, proc.stderr
    assert check_pin("2468", load_recipe(recipe).engineer.pin_hash)
    assert _events(recipe)[-1][2:] == ("set", "changed")


def _at_terminal(recipe: Path, answers: list[str]) -> tuple[int, str]:
    """Run set-pin with a pty as its controlling terminal, answering each prompt; returns
    the exit code and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the station, its terminal the pty
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "station", "set-pin",
                                  "--recipe", str(recipe)])
    shown = b""
    deadline = time.monotonic() + 60
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                prompts = shown.count(b"PIN: ") + shown.count(b"again: ")
                while pending and len(answers) - len(pending) < prompts:
                    os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_pin_typed_twice_at_the_terminal_is_not_echoed(recipe: Path):
    code, shown = _at_terminal(recipe, ["8642", "8642"])
    assert code == 0, shown
    assert "New engineer PIN:" in shown and "again" in shown
    assert "8642" not in shown  # no echo
    assert check_pin("8642", load_recipe(recipe).engineer.pin_hash)


def test_two_different_entries_change_nothing(recipe: Path):
    code, shown = _at_terminal(recipe, ["8642", "8643"])
    assert code == 2 and "differ" in shown
    assert recipe.read_text(encoding="utf-8") == RECIPE
