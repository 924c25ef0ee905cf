"""Progress bars: a terminal sees the bar move, a log gets a few lines instead of thousands."""

from __future__ import annotations

import io
import os
import time

import pytest

from station import progress


def _run(stream, seconds: float = 1.0, steps: int = 50) -> float:
    """Seconds a bar of ``steps`` took, at least ``seconds``."""
    start = time.monotonic()
    bar = progress.progress_bar(total=steps, desc="train", file=stream)
    for _ in range(steps):
        time.sleep(seconds / steps)
        bar.update(1)
    bar.close()
    return time.monotonic() - start


def test_a_log_gets_a_redraw_per_interval_and_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redirected to a file, a second of 50 steps with the interval at 0.4 s is drawn at the
    start, once per interval and at the end, not once per step; the end state is there."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.4)
    log = io.StringIO()
    took = _run(log)
    draws = log.getvalue().count("train:")
    assert 2 <= draws <= 2 + took / 0.4, (took, log.getvalue())
    assert "50/50" in log.getvalue().rsplit("\r", 1)[-1]


def test_a_terminal_sees_the_bar_move() -> None:
    """On a terminal (a pty) the bar keeps tqdm's own pace: many redraws in a second."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as term:
            assert term.isatty()
            _run(term)
        os.set_blocking(master, False)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        os.close(slave)
    assert seen.count(b"train:") >= 5, seen
