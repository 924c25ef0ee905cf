"""The MQTT outbox: a real SQLite file, FIFO, bounded, surviving a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from station.plant.outbox import Outbox, OutboxError

REPO = Path(__file__).resolve().parents[2]


def results(n: int, start: int = 0) -> list[tuple[str, str, dict]]:
    return [("result", "station/p/l/s/result", {"part_id": f"{i:06d}"})
            for i in range(start, start + n)]


def alarm(kind: str) -> tuple[str, str, dict]:
    return ("alarm", "station/p/l/s/alarm", {"kind": kind, "raised": True})


def test_messages_come_out_in_order_and_results_are_numbered(tmp_path: Path) -> None:
    box = Outbox(tmp_path, max_messages=100)
    ids = box.add(results(3) + [alarm("camera_lost")] + results(2, start=3))
    assert ids == sorted(ids) and len(ids) == 6
    batch = box.next_batch(0, 100)
    assert [m.id for m in batch] == ids
    pending = box.pending()
    assert [p.get("part_id") for p in pending] == ["000000", "000001", "000002", None,
                                                   "000003", "000004"]
    assert [p.get("seq") for p in pending if "part_id" in p] == [1, 2, 3, 4, 5]
    assert "seq" not in pending[3], "alarms are not numbered: results' seq has no gaps"
    assert [m.id for m in box.next_batch(ids[2], 2)] == ids[3:5]
    box.remove(ids[:4])
    assert len(box) == 2
    assert [p["part_id"] for p in box.pending()] == ["000003", "000004"]
    box.close()


def test_full_outbox_drops_the_oldest_results_and_keeps_alarms(tmp_path: Path) -> None:
    box = Outbox(tmp_path, max_messages=10)
    box.add([alarm("camera_lost")] + results(5))
    box.add([alarm("mqtt")] + results(15, start=5))
    assert len(box) == 10
    assert box.dropped == 12
    pending = box.pending()
    assert [p["kind"] for p in pending if "kind" in p] == ["camera_lost", "mqtt"]
    kept = [p["part_id"] for p in pending if "part_id" in p]
    assert kept == [f"{i:06d}" for i in range(12, 20)], "the newest results stay, in order"
    box.close()
    again = Outbox(tmp_path, max_messages=10)
    assert again.dropped == 12, "the drop count is kept with the messages"
    again.close()


def test_seq_goes_on_after_a_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path, max_messages=100)
    ids = box.add(results(4))
    box.remove(ids)
    box.close()
    box = Outbox(tmp_path, max_messages=100)
    box.add(results(2, start=4))
    assert [p["seq"] for p in box.pending()] == [5, 6]
    box.close()


def test_buffered_messages_survive_a_killed_process(tmp_path: Path) -> None:
    code = (f"import os, signal, sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from station.plant.outbox import Outbox\n"
            f"box = Outbox({str(tmp_path)!r}, 1000)\n"
            "for i in range(50):\n"
            "    box.add([('result', 't/result', {'part_id': str(i)})])\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    box = Outbox(tmp_path, max_messages=1000)
    pending = box.pending()
    assert [p["part_id"] for p in pending] == [str(i) for i in range(50)]
    assert [p["seq"] for p in pending] == list(range(1, 51))
    box.close()


def test_an_unusable_buffer_folder_is_one_line_naming_the_key(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutboxError) as info:
        Outbox(blocker, max_messages=10)
    assert str(info.value).startswith("mqtt.buffer_dir: ")
    assert "\n" not in str(info.value)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(OutboxError):
            Outbox(ro / "sub", max_messages=10)
