"""What an interrupted run's probes did after its controller was gone (controller/aftermath.py): a
real interrupted run directory (recovery.recover on a marker of a process that ended), the events a
probe sends after its hello held unless the run already had them, then placed on the run's time in
trace.jsonl, counted in run.json, and the film rendered again."""

import asyncio
import json

from controller import recovery
from controller.aftermath import MAX_HELD, Aftermath, boot_id
from controller.clock import ClockEstimate
from controller.trace import load
from tests.unit.test_recovery import _ended_process, _run_dir

START_NS = 5_000_000_000  # the marker's (tests.unit.test_recovery._run_dir)
SESSION = "a" * 32


def interrupted(tmp_path):
    runs = tmp_path / "runs"
    pid, identity = _ended_process()
    run_dir = _run_dir(runs, "20261201-150000-cut", pid, identity)
    (run_dir / ".received").write_text(f"thinkpad {SESSION} 3\nraspberrypi - 0\nthinkpad {SESSION} 7\n")
    return run_dir, recovery.recover(runs)


def deadman(t_s: float) -> dict:
    return {"kind": "deadman", "t_ns": START_NS + round(t_s * 1e9), "silent_s": 5.0, "cleared": ["nc pid 7"]}


def test_recover_keeps_each_hosts_interrupted_run_with_what_its_trace_holds(tmp_path):
    run_dir, runs = interrupted(tmp_path)
    assert runs["thinkpad"] is runs["raspberrypi"]
    run = runs["thinkpad"]
    assert (run.dir, run.start_ns, run.boot) == (run_dir, START_NS, boot_id())
    assert run.received == {"thinkpad": (SESSION, 7), "raspberrypi": (None, 0)}  # the last line of each
    assert not (run_dir / ".received").exists()  # gone with the marker


def test_only_events_the_run_lacks_are_held_and_they_land_in_its_trace(tmp_path):
    run_dir, runs = interrupted(tmp_path)
    after = Aftermath(runs)
    state = {"kind": "state", "t_ns": START_NS + 40_000_000, "local": "0.0.0.0:9090", "remote": "0.0.0.0:*",
             "from": "LISTEN", "to": "CLOSED", "source": "tracepoint"}
    after.hold("thinkpad", SESSION, [(6, {"kind": "console", "t_ns": 1, "text": "x", "stream": "stdout"}),
                                     (7, state | {"to": "SYN_SENT"}),  # both already in the trace
                                     (8, state), (9, deadman(6.0))])
    after.hold("raspberrypi", "b" * 32, [(1, deadman(5.5))])  # a new session of the probe: all new
    after.hold("ghost", SESSION, [(1, deadman(1.0))])  # not a host of an interrupted run
    assert [len(after.held[h]) for h in ("thinkpad", "raspberrypi")] == [2, 1] and "ghost" not in after.held

    async def go():
        return [await after.complete(h, ClockEstimate()) for h in ("thinkpad", "raspberrypi", "ghost")]
    assert asyncio.run(go()) == [2, 1, None]

    recs = load(run_dir / "trace.jsonl")
    assert [r["t"] for r in recs] == sorted(r["t"] for r in recs)
    late = [(r["host"], r["kind"], r["t"]) for r in recs if r["t"] > 0.03]
    assert late == [("thinkpad", "state", 0.04), ("raspberrypi", "deadman", 5.5), ("thinkpad", "deadman", 6.0)]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed"  # still the interrupted run, with what came after
    assert info["hosts"]["thinkpad"]["after_controller_lost"] == {"records": 2, "kinds": {"state": 1, "deadman": 1}}
    summary = (run_dir / "summary.txt").read_text()
    assert "6.000 s  thinkpad: its controller silent 5 s, it undid by itself: nc pid 7" in summary
    assert "thinkpad: 2 record(s) came after the controller was lost and were added when it was back " \
           "(1 deadman, 1 state)" in summary


def test_a_run_of_another_boot_is_not_placed_and_the_held_events_are_bounded(tmp_path):
    run_dir, runs = interrupted(tmp_path)
    run = runs["thinkpad"]
    after = Aftermath({"thinkpad": recovery.Interrupted(run.dir, run.start_ns, "another-boot", run.received)})
    after.hold("thinkpad", "c" * 32, [(i, deadman(1.0)) for i in range(MAX_HELD + 10)])
    assert len(after.held["thinkpad"]) == MAX_HELD
    before = (run_dir / "trace.jsonl").read_text()
    assert asyncio.run(after.complete("thinkpad", ClockEstimate())) == 0
    assert (run_dir / "trace.jsonl").read_text() == before and "thinkpad" not in after.held
