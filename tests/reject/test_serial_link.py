"""The serial link against a real PLC peer on a pseudo-terminal pair, and pyserial's loop://."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import tty
from pathlib import Path

import pytest

from station.reject.serial_link import SerialLink, SerialLinkError


class PlcPeer:
    """The PLC side of a pty pair: timestamps each line it receives, answers acks if asked."""

    def __init__(self, ack_template: str | None = None) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        self.slave_path = os.ttyname(slave)
        os.close(slave)  # the link opens the slave by path, like a real device node
        self.ack_template = ack_template
        self.lines: list[tuple[float, bytes]] = []
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 1024)
            except OSError:  # EIO while no one holds the slave open (before the link opens it)
                time.sleep(0.005)
                continue
            now = time.monotonic()
            self._buf += data
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                self.lines.append((now, line))
                words = line.split(b" ")
                if self.ack_template and len(words) >= 2:  # "<COMMAND> <part_id> ..."
                    part = words[1].decode()
                    os.write(self.master, self.ack_template.format(part_id=part).encode())

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait_lines(self, n: int, timeout: float = 2.0) -> list[tuple[float, bytes]]:
        end = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < end:
            time.sleep(0.005)
        return list(self.lines)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        with contextlib.suppress(OSError):
            os.close(self.master)


def wait_for(predicate, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def peer():
    p = PlcPeer(ack_template="ACK {part_id}\n")
    yield p
    p.close()


def test_messages_reach_the_plc_and_acks_are_matched(peer):
    with SerialLink(peer.slave_path, 115200) as link:
        assert link.state == "connected"
        started, results = [], []
        for i in range(3):
            started.append(time.monotonic())
            results.append(link.send(f"REJECT {i}\n", f"ACK {i}\n", 500))
        lines = peer.wait_lines(3)
    assert [line for _, line in lines] == [b"REJECT 0", b"REJECT 1", b"REJECT 2"]
    for (t_peer, _), r, t0 in zip(lines, results, started, strict=True):
        assert r.ok and r.acked and r.error == ""
        # the PLC saw it as it was written: sent_at is stamped once write() returns, and on
        # a busy machine the peer's thread may read the bytes before the writer runs again
        assert t0 <= t_peer and t_peer - r.sent_at < 0.1
        assert 0 <= r.ack_latency_ms < 500
    assert link.stats.acks_received == 3 and link.stats.acks_missed == 0


def test_a_missing_ack_times_out_and_is_reported():
    silent = PlcPeer(ack_template=None)
    try:
        with SerialLink(silent.slave_path, 115200) as link:
            t0 = time.monotonic()
            r = link.send(b"REJECT 9\n", b"ACK 9\n", 80)
            waited = time.monotonic() - t0
            assert silent.wait_lines(1)[0][1] == b"REJECT 9"  # it was written...
    finally:
        silent.close()
    assert not r.ok and r.acked is False  # ...but not acknowledged
    assert "no acknowledgement" in r.error and "ACK 9" in r.error
    assert 0.07 <= waited < 0.5
    assert link.stats.acks_missed == 1 and link.stats.outputs_failed == 1


def test_trigger_bytes_from_the_plc_reach_the_listener(peer):
    with SerialLink(peer.slave_path, 115200, trigger_message="TRIG\n") as link:
        got: list[float] = []
        link.add_trigger_listener(got.append)
        before = time.monotonic()
        peer.write(b"TR")  # a message split across reads, then noise, then two at once
        time.sleep(0.03)
        peer.write(b"IG\nxx\r\n")  # noise is a line of its own: "xxTRIG" is no trigger
        peer.write(b"TRIG\nTRIG\n")
        assert wait_for(lambda: len(got) == 3)
        time.sleep(0.05)
    assert len(got) == 3 and all(before <= t <= time.monotonic() for t in got)
    assert got == sorted(got)
    assert link.stats.triggers == 3


def test_only_whole_trigger_lines_fire(peer):
    """A substring is no trigger: RETRIG, NOTRIG, TRIGGER, padded or prefixed lines never
    fire; TRIG ended by LF, CR LF or CR does, each once."""
    with SerialLink(peer.slave_path, 115200, trigger_message="TRIG\n") as link:
        got: list[float] = []
        link.add_trigger_listener(got.append)
        peer.write(b"RETRIG\nNOTRIG\nTRIGGER\n TRIG\nTRIG \nxxTRIG\nTRI\nRIG\n")
        peer.write(b"TRIG\r\nTRIG\rTRIG\n")
        assert wait_for(lambda: len(got) >= 3)
        time.sleep(0.1)
    assert len(got) == 3 and link.stats.triggers == 3


def test_a_port_missing_at_start_is_told_to_a_listener_that_comes_later(tmp_path: Path):
    """The first open fails in the constructor, before anyone listens, and every retry ends
    in the same state: a listener added afterwards still hears that the port is missing."""
    missing = tmp_path / "ttyUSB7"
    with SerialLink(str(missing), 9600, reconnect_min_s=0.01, reconnect_max_s=0.02) as link:
        time.sleep(0.1)  # several retries, each ending as the first did
        states: list[tuple[str, str]] = []
        link.add_state_listener(lambda s, m: states.append((s, m)))
        assert states and states[0][0] == "disconnected"
        assert "could not open" in states[0][1] and str(missing) in states[0][1]
        time.sleep(0.1)
        assert len(states) == 1, "a retry with the same outcome is not a new state"
    with SerialLink("loop://") as link:  # a link that works tells a new listener nothing
        quiet: list[tuple[str, str]] = []
        link.add_state_listener(lambda s, m: quiet.append((s, m)))
        assert quiet == []


def test_heartbeat_is_sent_every_period(peer):
    with SerialLink(peer.slave_path, 115200, heartbeat_s=0.05, heartbeat_message="HB\n") as link:
        lines = peer.wait_lines(4, timeout=2.0)
    beats = [t for t, line in lines if line == b"HB"]
    assert len(beats) >= 4
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert all(0.03 < g < 0.2 for g in gaps)
    assert link.stats.heartbeats_sent >= 4


def test_peer_gone_means_disconnected_then_reconnect_when_the_port_returns(tmp_path: Path):
    # a by-id style symlink, as udev recreates for a USB adapter that is plugged back in
    device = tmp_path / "ttyPLC"
    first = PlcPeer()
    device.symlink_to(first.slave_path)
    states: list[tuple[str, str]] = []
    link = SerialLink(str(device), 115200, reconnect_min_s=0.02, reconnect_max_s=0.1)
    link.add_state_listener(lambda s, m: states.append((s, m)))
    second = None
    try:
        assert link.send(b"REJECT 1\n").ok
        first.close()  # the PLC side vanishes
        assert wait_for(lambda: link.state == "disconnected")
        assert "serial link lost" in states[0][1]
        r = link.send(b"REJECT 2\n")
        assert not r.ok and "serial link down" in r.error
        assert link.stats.failed_while_down >= 1
        # the port comes back under the same name
        second = PlcPeer()
        tmp = tmp_path / "ttyPLC.new"
        tmp.symlink_to(second.slave_path)
        os.replace(tmp, device)
        assert wait_for(lambda: link.state == "connected")
        assert link.send(b"REJECT 3\n").ok
        assert [line for _, line in second.wait_lines(1)] == [b"REJECT 3"]
        assert link.stats.reconnects >= 1 and link.stats.disconnects == 1
    finally:
        link.close()
        if second is not None:
            second.close()
    assert states[-1] == ("disconnected", "closed")


def test_a_pty_has_no_modem_lines_and_says_use_message_mode(peer):
    with SerialLink(peer.slave_path, 115200) as link:
        r = link.pulse("DTR", 5)
        assert not r.ok
        assert "no modem lines" in r.error and "Errno 25" in r.error
        assert "mode=message" in r.error
        assert link.state == "error" and "mode=message" in link.state_message
        with pytest.raises(SerialLinkError, match="use mode=message"):
            link.check_modem_lines()
        assert link.send(b"REJECT 5\n").ok  # byte messages still work on this port
    assert peer.wait_lines(1)[0][1] == b"REJECT 5"


def test_line_pulses_on_loop_drive_the_looped_back_status_lines():
    # pyserial's loop:// models RTS -> CTS and DTR -> DSR (CD reads always on, RI always off)
    with SerialLink("loop://", trigger_line="DSR") as link:
        edges: list[float] = []
        link.add_trigger_listener(edges.append)
        assert link.input_lines()["DSR"] is False  # opened with DTR low: no stray reject
        r = link.pulse("DTR", 60)
        assert r.ok
        assert link.input_lines()["DSR"] is True
        assert wait_for(lambda: not link.input_lines()["DSR"], 1.0)
        released = time.monotonic()
        assert 0.05 <= released - r.sent_at < 0.25  # the pulse lasted about its width
        assert wait_for(lambda: len(edges) == 1)
        assert 0 <= edges[0] - r.sent_at < 0.05  # the edge was seen as a trigger input
        r2 = link.pulse("RTS", 10)
        assert r2.ok and link.input_lines()["CTS"] is True
        assert wait_for(lambda: not link.input_lines()["CTS"], 1.0)
        time.sleep(0.02)
    assert len(edges) == 1  # RTS/CTS is not the watched line


def test_bad_settings_are_refused_with_a_clear_message():
    with pytest.raises(SerialLinkError, match="trigger line 'XYZ'.*CTS, DSR, CD, RI"):
        SerialLink("loop://", trigger_line="XYZ")
    with pytest.raises(SerialLinkError, match="heartbeat_message"):
        SerialLink("loop://", heartbeat_s=1.0)
    with SerialLink("loop://") as link, pytest.raises(SerialLinkError, match="'CTS'.*DTR, RTS"):
        link.pulse("CTS", 5)


def test_a_missing_port_keeps_retrying_without_crashing(tmp_path: Path):
    missing = tmp_path / "ttyUSB9"
    with SerialLink(str(missing), 9600, reconnect_min_s=0.02, reconnect_max_s=0.05) as link:
        assert link.state == "disconnected" and "could not open" in link.state_message
        r = link.send(b"REJECT 1\n")
        assert not r.ok and str(missing) in r.error
        peer = PlcPeer()
        try:
            missing.symlink_to(peer.slave_path)
            assert link.wait_connected(2.0)
            assert link.send(b"REJECT 2\n").ok
            assert peer.wait_lines(1)[0][1] == b"REJECT 2"
        finally:
            peer.close()
