"""The PLC handshake on a real engine: Trigger, Ready/Busy, ResultValid/ResultAck, the
Reject bit through the reject scheduler, and every verdict of the simulated line."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from station.config import load_recipe
from station.plant import PlcHandshake, PlcState, StationHost
from tests.e2e.test_engine import simulated_line, wait_for, write_recipe
from tests.plant.plc_recipes import folder_recipe

CODES = {"PASS": 1, "REJECT": 2, "ERROR": 3}


def test_plc_triggers_each_part_and_acknowledges_each_result(tiny_models: Path,
                                                             tmp_path: Path) -> None:
    delay_ms, pulse_ms = 80.0, 30
    recipe = folder_recipe(tmp_path, tiny_models, name="alpha", reject=(
        f'enabled = true\noutput = "plc"\ndelay_ms = {delay_ms}\npulse_ms = {pulse_ms}'))
    host = StationHost(load_recipe(recipe))
    plc = PlcHandshake(host)
    edges: list[tuple[float, bool]] = []
    # a rise at the time the bit rose (the listener may run a few ms later on a busy machine)
    host.pulse.changed.connect(lambda active: edges.append(
        (host.pulse.last_at if active else time.monotonic(), active)))
    seen = []
    try:
        assert plc.state == PlcState.IDLE
        assert plc.trigger() == (False, "not ready: idle (station stopped)")
        host.start()
        assert wait_for(lambda: plc.ready, 20.0)
        for _ in range(8):
            assert wait_for(lambda: plc.ready, 20.0), plc.state_and_why()
            ok, part_id = plc.trigger()
            assert ok, part_id
            again = plc.trigger()  # the PLC triggers again before the result: refused
            assert not again[0] and again[1].startswith("not ready: busy")
            assert wait_for(lambda: plc.result_valid, 20.0)
            result = plc.current_result()
            assert result is not None and result.part_id == part_id
            assert result.code == CODES[result.verdict]
            assert plc.set_ack(True)[0]
            assert not plc.result_valid and plc.current_result() is None
            assert plc.set_ack(False)[0]
            seen.append(result)
        assert plc.acknowledge() == (False, "no result to acknowledge")
        engine = host.engine
        engine.stop()
        time.sleep(delay_ms / 1000 + pulse_ms / 1000 + 0.2)
        results = {r.part_id: r for r in engine.results()}
        outcomes = {pid: engine.scheduler.outcome(pid) for pid in results}
        timing = engine.scheduler.timing_stats()
    finally:
        plc.close()
        host.close()
    assert [r.seq for r in seen] == list(range(1, 9))
    assert [r.part_id for r in seen] == list(results)
    for r in seen:
        assert r.verdict == results[r.part_id].verdict
        assert r.cls_score == results[r.part_id].cls_score
        assert r.model_versions and r.recipe == "alpha"
    rejected = [pid for pid, r in results.items() if r.verdict != "PASS"]
    fired = [pid for pid, o in outcomes.items() if o is not None and o.action == "reject"]
    assert sorted(fired) == sorted(rejected), "the Reject bit pulses for REJECT/ERROR only"
    rises = [t for t, active in edges if active]
    assert len(rises) == len(rejected) == timing["count"] == host.pulse.pulses
    for pid in rejected:
        error = outcomes[pid].timing_error_ms
        assert error is not None and -1.0 <= error <= 50.0, f"part {pid}: {error:.1f} ms off"
    for (t_up, up), (t_down, down) in zip(edges[::2], edges[1::2], strict=False):
        assert up and not down and pulse_ms - 5 <= (t_down - t_up) * 1000 <= pulse_ms + 80
    db = sqlite3.connect(tmp_path / "records" / "station.sqlite")
    assert [r[0] for r in db.execute("SELECT part_id FROM parts ORDER BY rowid")] == list(results)


def test_results_queue_behind_the_ack_and_show_counts(tiny_models: Path, tmp_path: Path) -> None:
    """Nobody acknowledges: results wait in order up to the queue's size (Busy), then the
    oldest are dropped and counted; every part is still counted and recorded."""
    recipe = folder_recipe(tmp_path, tiny_models, name="alpha", trigger="hardware")
    host = StationHost(load_recipe(recipe))
    plc = PlcHandshake(host, queue_size=4)
    try:
        host.start()
        assert wait_for(lambda: plc.results_waiting >= 4, 30.0)
        assert plc.state == PlcState.BUSY  # the queue is full: no PLC trigger is accepted
        assert wait_for(lambda: plc.overruns >= 1, 30.0), "a self-triggering line goes on"
        host.engine.stop()
        assert plc.results_waiting == 4
        presented = plc.current_result()
        assert presented is not None
        assert presented.seq == plc.overruns + 1, "the oldest kept result is presented"
        assert plc.acknowledge(seq=presented.seq + 1)[0] is False
        seqs = []
        while (current := plc.current_result()) is not None:
            assert plc.acknowledge(seq=current.seq) == (True, current.part_id)
            seqs.append(current.seq)
        assert seqs == list(range(plc.overruns + 1, plc.overruns + 5)), "in order, none lost"
        assert plc.results_waiting == 0 and not plc.result_valid
        counts = host.engine.counts()
        assert plc.counts == counts and counts["inspected"] == len(host.engine.results())
        assert plc.overruns + 4 == counts["inspected"]
        assert plc.trigger()[1].startswith('trigger.mode = "hardware": the station triggers')
    finally:
        plc.close()
        host.close()


def test_handshake_on_the_simulated_line_matches_the_conveyor(line_models: Path,
                                                              line_defects: tuple,
                                                              tmp_path: Path) -> None:
    """Free-run trigger on the simulated conveyor; a PLC thread does ResultValid/ResultAck
    for every part and gets every verdict, in order, matching the conveyor's truth."""
    path = write_recipe(tmp_path, line_models, rule="classifier", camera=simulated_line(line_defects), trigger='mode = "free_run"\nline_frac = 0.5')
    host = StationHost(load_recipe(path))
    plc = PlcHandshake(host)
    got = []
    stop = threading.Event()

    def the_plc() -> None:
        while not stop.is_set() or plc.result_valid:
            if plc.result_valid:
                got.append(plc.current_result())
                plc.set_ack(True)
                plc.set_ack(False)
            else:
                time.sleep(0.005)

    peer = threading.Thread(target=the_plc)
    try:
        host.start()
        peer.start()
        time.sleep(8.0)
        host.engine.stop()
        stop.set()
        peer.join(10.0)
        results = host.engine.results()
    finally:
        stop.set()
        plc.close()
        host.close()
    assert len(results) >= 18
    assert [r.part_id for r in got] == [r.part_id for r in results]
    for seen, r in zip(got, results, strict=True):
        assert seen.verdict == r.verdict
        truth = r.truth
        assert truth is not None
        assert seen.verdict == ("REJECT" if truth.label else "PASS"), \
            f"part {r.part_id}: {seen.reason}, truth {truth.defect}"


def test_reject_bit_goes_through_the_scheduler_with_its_fail_safe() -> None:
    """reject.output = "plc": the one reject scheduler drives the Reject bit, the fail-safe
    included (no verdict at the reject point = reject), and times every pulse."""
    from station.config import RejectSection
    from station.plant import RejectPulse
    from station.reject import RejectScheduler

    pulse = RejectPulse()
    edges: list[tuple[float, bool]] = []
    pulse.changed.connect(lambda active: edges.append((time.monotonic(), active)))
    fired: list[tuple[str, str]] = []
    section = RejectSection(enabled=True, output="plc", delay_ms=40, pulse_ms=20)
    sched = RejectScheduler(pulse, section, lambda pid, action, *_: fired.append((pid, action)))
    try:
        t0 = time.monotonic()
        for pid in ("1", "2", "3"):
            sched.register(pid, t0)
        sched.set_verdict("1", "PASS")
        sched.set_verdict("2", "REJECT")  # part 3 gets no verdict in time: fail-safe
        assert wait_for(lambda: len(fired) == 3 and len(edges) == 2, 10.0), (fired, edges)
        assert sched.set_verdict("3", "PASS") == "late"
    finally:
        sched.close()
        pulse.close()
    assert sorted(fired) == [("1", "pass"), ("2", "reject"), ("3", "reject")]
    assert sched.fail_safe_count == 1 and "fail-safe reject" in sched.outcome("3").reason
    assert pulse.pulses == 2 and sched.timing_stats()["count"] == 2
    assert [active for _, active in edges] == [True, False], "two pulses at once: one held bit"
    assert 40 - 1 <= (edges[0][0] - t0) * 1000 <= 40 + 50


def test_reject_bit_edges_alternate_when_pulses_come_as_the_last_one_falls() -> None:
    """A PLC counts rises: whether the falling-edge timer runs before or after the next pulse
    (a busy machine runs it late), every rise has its fall and the bit ends low."""
    import random

    from station.plant import RejectPulse

    pulse = RejectPulse()
    edges: list[bool] = []
    pulse.changed.connect(edges.append)
    rng = random.Random(0)
    try:
        for _ in range(300):
            assert pulse.pulse_async("reject", 1.0).result(1.0).ok
            time.sleep(rng.uniform(0.0, 0.002))
        assert wait_for(lambda: not pulse.active and edges[-1:] == [False], 5.0), edges[-4:]
    finally:
        pulse.close()
    assert all(a != b for a, b in zip(edges, edges[1:], strict=False)), "two rises, no fall"
    assert edges[0] is True and edges[-1] is False
    assert 1 <= edges.count(True) <= pulse.pulses == 300
