"""Reject scheduling through a real serial link: time and count modes, fail-safe, late verdicts."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from station.config import RecipeError, RejectSection, load_recipe
from station.decision import ERROR, PASS, REJECT
from station.reject import RejectScheduler
from station.reject.serial_link import SerialLink, SerialLinkError
from tests.reject.test_serial_link import PlcPeer, wait_for


def settings(**kw) -> RejectSection:
    """The recipe's [reject] section with the output enabled (the scheduler's own defaults
    are the recipe's)."""
    return RejectSection(enabled=True, **kw)


class Fired:
    """Collects on_fired calls, thread-safely."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, float | None, str]] = []
        self._lock = threading.Lock()

    def __call__(self, part_id, action, scheduled, actual, reason) -> None:
        with self._lock:
            self.calls.append((part_id, action, scheduled, actual, reason))

    def by_part(self) -> dict[str, list[tuple]]:
        out: dict[str, list[tuple]] = {}
        with self._lock:
            for c in self.calls:
                out.setdefault(c[0], []).append(c)
        return out


@pytest.fixture
def loop_link():
    link = SerialLink("loop://", trigger_line="CTS")  # loop:// echoes RTS onto CTS
    yield link
    link.close()


def test_time_mode_fires_rejects_at_trigger_plus_delay(loop_link):
    fired = Fired()
    edges: list[float] = []
    loop_link.add_trigger_listener(edges.append)
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=40, pulse_ms=5),
                            fired)
    triggers = {}
    for i in range(12):
        pid = f"P{i}"
        triggers[pid] = time.monotonic()
        sched.register(pid, triggers[pid])
        assert sched.set_verdict(pid, REJECT if i % 3 == 0 else PASS) == "scheduled"
        time.sleep(0.015)
    assert wait_for(lambda: len(fired.calls) == 12)
    time.sleep(0.05)
    sched.close()
    by_part = fired.by_part()
    assert all(len(v) == 1 for v in by_part.values()) and len(by_part) == 12
    for pid, [(_, action, scheduled, actual, reason)] in by_part.items():
        assert scheduled == pytest.approx(triggers[pid] + 0.040, abs=1e-9)
        if int(pid[1:]) % 3 == 0:
            assert action == "reject" and reason == "verdict REJECT"
            assert 0 <= actual - scheduled < 0.030  # generous; p50 is well under 1 ms
        else:
            assert action == "pass" and actual is None
    # the line really moved: one CTS edge per reject, each near its deadline
    rejects = sorted(c[2] for c in fired.calls if c[1] == "reject")
    assert len(edges) == 4
    for scheduled, edge in zip(rejects, sorted(edges), strict=True):
        assert 0 <= edge - scheduled < 0.030
    stats = sched.timing_stats()
    assert stats["count"] == 4 and 0 <= stats["p50"] <= stats["p99"] <= stats["max"] < 30


def test_message_mode_reaches_the_plc_on_time_with_acks():
    peer = PlcPeer(ack_template="ACK {part_id}\n")
    link = SerialLink(peer.slave_path, 115200)
    fired = Fired()
    section = settings(mode="message", message="REJECT {part_id}\n", ack="ACK {part_id}\n",
                       ack_timeout_ms=200, delay_ms=30)
    sched = RejectScheduler(link, section, fired)
    try:
        t0 = time.monotonic()
        for i in range(3):
            sched.register(f"m{i}", t0 + 0.01 * i)
            sched.set_verdict(f"m{i}", REJECT)
        lines = peer.wait_lines(3)
        assert wait_for(lambda: len(fired.calls) == 3)
    finally:
        sched.close()
        link.close()
        peer.close()
    assert [line for _, line in lines] == [b"REJECT m0", b"REJECT m1", b"REJECT m2"]
    for i, (t_plc, _) in enumerate(lines):
        assert 0 <= t_plc - (t0 + 0.01 * i + 0.030) < 0.030  # the PLC got it at the deadline
    assert all(c[1] == "reject" for c in fired.calls)


def test_count_mode_fires_after_exactly_n_further_parts(loop_link):
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="DTR",
                                                      delay_mode="count", delay_parts=3), fired)
    sched.register("a")
    sched.set_verdict("a", REJECT)
    sched.register("b")
    sched.set_verdict("b", PASS)
    t_c = time.monotonic()
    sched.register("c", t_c)
    time.sleep(0.05)
    assert fired.calls == []  # two further parts: "a" is not at the reject point yet
    t_d = time.monotonic()
    sched.register("d", t_d)  # the third further part pushes "a" to the reject point
    assert wait_for(lambda: len(fired.calls) == 1)
    (pid, action, scheduled, actual, _), = fired.calls
    assert (pid, action, scheduled) == ("a", "reject", t_d)
    assert 0 <= actual - t_d < 0.030
    sched.register("e")
    assert wait_for(lambda: len(fired.calls) == 2)
    assert fired.calls[1][:2] == ("b", "pass")
    assert sched.pending == 3  # c, d, e still on the belt
    assert sched.close() == 3


def test_fail_safe_rejects_a_part_without_verdict_once_and_logs_the_late_verdict(loop_link, caplog):
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=20,
                                                      pulse_ms=5), fired)
    sched.register("slow")
    assert wait_for(lambda: len(fired.calls) == 1)
    with caplog.at_level(logging.WARNING, logger="station.reject.scheduler"):
        assert sched.set_verdict("slow", PASS) == "late"
    time.sleep(0.05)
    sched.close()
    assert len(fired.calls) == 1  # exactly one action, never two
    pid, action, _, actual, reason = fired.calls[0]
    assert (pid, action) == ("slow", "reject") and actual is not None
    assert reason.startswith("fail-safe reject")
    assert sched.fail_safe_count == 1
    assert sched.late_verdicts == [("slow", "PASS", "reject")]
    assert "late verdict PASS for part slow" in caplog.text
    assert sched.outcome("slow").verdict is None


def test_fail_safe_pass_and_errors_that_pass(loop_link):
    fired = Fired()
    section = settings(mode="line", line="RTS", delay_ms=10, fail_safe="pass")
    sched = RejectScheduler(loop_link, section, fired, reject_on_error=False)
    sched.register("nov")
    sched.register("err")
    sched.set_verdict("err", ERROR)
    assert wait_for(lambda: len(fired.calls) == 2)
    sched.close()
    got = {c[0]: c for c in fired.calls}
    assert got["nov"][1] == "pass" and got["nov"][4].startswith("fail-safe pass")
    assert got["err"][1] == "pass" and "ERROR" in got["err"][4]
    assert loop_link.stats.outputs_sent == 0


def test_error_verdicts_reject_by_default_and_duplicates_are_ignored(loop_link):
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=10),
                            fired)
    sched.register("e1")
    assert sched.set_verdict("e1", ERROR) == "scheduled"
    assert sched.set_verdict("e1", PASS) == "duplicate"
    assert sched.set_verdict("nobody", PASS) == "unknown"
    with pytest.raises(ValueError, match="registered twice"):
        sched.register("e1")
    with pytest.raises(ValueError, match="verdict 'OK'"):
        sched.set_verdict("e1", "OK")
    assert wait_for(lambda: len(fired.calls) == 1)
    sched.close()
    assert fired.calls[0][1] == "reject" and "ERROR" in fired.calls[0][4]


def test_a_reject_while_the_link_is_down_is_reported_as_failed(tmp_path):
    link = SerialLink(str(tmp_path / "ttyUSB0"), 9600, reconnect_min_s=1.0)
    fired = Fired()
    sched = RejectScheduler(link, settings(mode="message", delay_ms=5), fired)
    try:
        sched.register("x")
        sched.set_verdict("x", REJECT)
        assert wait_for(lambda: len(fired.calls) == 1)
    finally:
        sched.close()
        link.close()
    pid, action, _, actual, reason = fired.calls[0]
    assert action == "reject_failed" and actual is None
    assert "serial link down" in reason and "ttyUSB0" in reason
    assert link.stats.failed_while_down == 1


def test_line_mode_on_a_port_without_modem_lines_is_refused_at_start():
    peer = PlcPeer()
    link = SerialLink(peer.slave_path, 115200)
    try:
        with pytest.raises(SerialLinkError, match="use mode=message"):
            RejectScheduler(link, settings(mode="line", line="DTR"))
    finally:
        link.close()
        peer.close()


def test_settings_are_validated_with_the_key_named(tmp_path):
    """The section's rules are the recipe loader's: each refused with its key named."""

    def refused(reject_table: str) -> str:
        path = tmp_path / "r.toml"
        path.write_text(f'[product]\nname = "p"\n\n[reject]\n{reject_table}\n')
        with pytest.raises(RecipeError) as err:
            load_recipe(path, check_files=False)
        return str(err.value)

    assert re.search(r'reject.mode = "pulse": expected one of "line", "message"',
                     refused('mode = "pulse"'))
    assert re.search(r"reject.delay_parts = 0: expected an integer between 1 and",
                     refused('delay_mode = "count"\ndelay_parts = 0'))
    assert re.search(r"reject.message = .*\{part_id\}",
                     refused('mode = "message"\nmessage = "REJECT {part}\\n"'))
    assert re.search(r'reject.line = "CTS": expected one of "DTR", "RTS"',
                     refused('mode = "line"\nline = "CTS"'))


def test_close_lets_parts_on_the_belt_get_their_action(loop_link):
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=60),
                            fired)
    sched.register("last")
    sched.set_verdict("last", REJECT)
    assert sched.close() == 0  # it waited for the part to reach the reject point
    assert [c[:2] for c in fired.calls] == [("last", "reject")]


def test_parts_to_push_off_still_short_of_the_reject_point_at_close_are_said_unfired(
        loop_link):
    """A part waiting for its reject point when the station stops was never pushed off:
    its record and the operator must say so (it was left with no outcome at all); a good
    part on the belt needs no output and gets none."""
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=60_000),
                            fired)
    for part, verdict in (("bad", REJECT), ("unjudged", None), ("good", PASS)):
        sched.register(part)
        if verdict is not None:
            sched.set_verdict(part, verdict)
    assert sched.close(timeout=0.2) == 3  # the three are still on the belt
    calls = fired.by_part()
    assert sorted(calls) == ["bad", "unjudged"]  # the fail-safe would reject the unjudged
    for part in ("bad", "unjudged"):
        [(_, action, _, actual, reason)] = calls[part]
        assert action == "reject_failed" and actual is None
        assert reason.startswith("not fired: the station stopped before the part reached")
    # an ERROR the recipe lets pass (on_error = "pass") is no part to push off
    quiet = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=60_000),
                            quiet, reject_on_error=False)
    sched.register("unreadable")
    sched.set_verdict("unreadable", ERROR)
    assert sched.close(timeout=0.2) == 1 and quiet.calls == []


def test_built_from_a_recipe_file(tmp_path):
    peer = PlcPeer(ack_template="OK {part_id}\n")
    recipe_path = tmp_path / "screw.toml"
    recipe_path.write_text(
        '[product]\nname = "screw"\n\n'
        '[trigger]\nmode = "serial"\nserial_message = "GO\\n"\n\n'
        f'[reject]\nenabled = true\nport = "{peer.slave_path}"\nmode = "message"\n'
        'message = "KICK {part_id} {seq}\\n"\nack = "OK {part_id}\\n"\nack_timeout_ms = 300\n'
        'delay_mode = "count"\ndelay_parts = 1\n')
    recipe = load_recipe(recipe_path, check_files=False)
    link = SerialLink.from_recipe(recipe)
    fired = Fired()
    sched = RejectScheduler.from_recipe(recipe, link, fired)
    triggers: list[float] = []
    link.add_trigger_listener(triggers.append)
    try:
        peer.write(b"GO\n")
        assert wait_for(lambda: len(triggers) == 1)
        sched.register("s1", triggers[0])
        sched.set_verdict("s1", REJECT)
        sched.register("s2")  # one further part: s1 is at the reject point
        assert wait_for(lambda: len(fired.calls) == 1)
    finally:
        sched.close()
        link.close()
        peer.close()
    assert peer.lines[0][1] == b"KICK s1 1"
    assert fired.calls[0][:2] == ("s1", "reject")  # acknowledged by the PLC


def test_a_shed_part_gets_the_fail_safe_with_its_reason(loop_link):
    """Under overload the station sheds a part (no verdict will come): at its reject point
    the fail-safe acts, not the ERROR rule, and the record says why."""
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=10,
                                                      pulse_ms=5), fired)
    sched.register("shed")
    assert sched.shed("shed", "overload: shed (inspection queue full)")
    assert not sched.shed("nobody", "overload: shed")
    assert wait_for(lambda: len(fired.calls) == 1)
    assert not sched.shed("shed", "too late: it already reached the reject point")
    sched.close()
    pid, action, _, actual, reason = fired.calls[0]
    assert (pid, action) == ("shed", "reject") and actual is not None
    assert reason == "fail-safe reject: overload: shed (inspection queue full)"
    assert sched.fail_safe_count == 1

    # fail_safe = pass passes a shed part even where errors are rejected
    fired = Fired()
    sched = RejectScheduler(loop_link, settings(mode="line", line="RTS", delay_ms=10,
                                                fail_safe="pass"), fired, reject_on_error=True)
    sched.register("shed2")
    sched.shed("shed2", "overload: shed")
    assert wait_for(lambda: len(fired.calls) == 1)
    sched.close()
    assert fired.calls[0][1] == "pass" and fired.calls[0][4] == "fail-safe pass: overload: shed"


def test_the_message_carries_the_verdict_as_plain_text():
    """Verdicts are an enum inside the station; on the wire a template sees the text, even
    through a ``!r`` conversion."""
    peer = PlcPeer()
    link = SerialLink(peer.slave_path, 115200)
    fired = Fired()
    sched = RejectScheduler(link, settings(mode="message", message="{verdict!r} {part_id}\n",
                                           delay_ms=5), fired)
    try:
        sched.register("v1")
        sched.set_verdict("v1", REJECT)
        lines = peer.wait_lines(1)
        assert wait_for(lambda: len(fired.calls) == 1)
    finally:
        sched.close()
        link.close()
        peer.close()
    assert lines[0][1] == b"'REJECT' v1"
