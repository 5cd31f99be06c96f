"""Runs a killed controller left: the marker of a real process that ended (a real child, reaped) is
marked failed with its reason from what the partial trace holds; a live controller's run is left alone."""

import json
import os
import subprocess
import sys

from controller import recovery
from controller.trace import load

SCN = {"name": "cut", "port": 9090, "delay": 0.3, "steps": [
    {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
    {"action": "connect", "host": "raspberrypi", "to": "thinkpad", "expect": ["raspberrypi ESTABLISHED"]}]}
HOSTS = {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}


def _ended_process() -> tuple[int, str]:
    """The pid and identity of a real process, taken while it ran; it has ended (and been reaped) since."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    identity = recovery.process_identity(child.pid)
    child.communicate(b"")
    return child.pid, identity


def _run_dir(runs, name: str, pid: int, identity: str | None) -> object:
    d = runs / name
    d.mkdir(parents=True)
    (d / recovery.MARKER).write_text(json.dumps({"pid": pid, "process": identity, "started_unix": 1.0e9,
                                                 "start_ns": 5_000_000_000,
                                                 "scenario": SCN, "delay_s": 0.3, "port": 9090, "hosts": HOSTS}))
    lines = [{"t": 0.001, "host": "controller", "kind": "step", "index": 1, "action": "listen", "target": "thinkpad",
              "status": "start"},
             {"t": 0.02, "host": "thinkpad", "kind": "state", "local": "10.90.0.1:9090", "remote": "0.0.0.0:*",
              "from": "CLOSED", "to": "LISTEN", "source": "inet_diag"},
             {"t": 0.01, "host": "controller", "kind": "step", "index": 1, "action": "listen", "target": "thinkpad",
              "status": "ok"},
             {"t": 0.03, "host": "controller", "kind": "step", "index": 2, "action": "connect",
              "target": "raspberrypi", "status": "start"}]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"t": 0.04, "host": "thin'  # cut mid-write
    (d / "trace.partial.jsonl").write_text(text)
    return d


def test_a_run_whose_controller_ended_is_marked_failed_and_a_live_ones_is_not(tmp_path):
    runs = tmp_path / "runs"
    pid, identity = _ended_process()
    assert identity and recovery.process_identity(pid) is None
    cut = _run_dir(runs, "20261201-150000-cut", pid, identity)
    live = _run_dir(runs, "20261201-150100-live", os.getpid(), recovery.process_identity(os.getpid()))

    assert set(recovery.recover(runs)) == {"thinkpad", "raspberrypi"}

    info = json.loads((cut / "run.json").read_text())
    assert info["status"] == "failed" and info["ok"] is False
    assert info["error"] == f"the controller ended during the run (pid {pid})"
    assert info["failed_step"] == 2 and info["scenario"]["name"] == "cut"
    assert info["hosts"]["thinkpad"]["lab_ip"] == "10.90.0.1"
    recs = load(cut / "trace.jsonl")  # the partial file's whole records, in the trace's order
    assert [r["t"] for r in recs] == [0.001, 0.01, 0.02, 0.03]
    assert not (cut / "trace.partial.jsonl").exists() and not (cut / recovery.MARKER).exists()
    assert "error: the controller ended during the run" in (cut / "summary.txt").read_text()

    assert (live / recovery.MARKER).exists() and not (live / "run.json").exists()  # its controller runs
    assert recovery.recover(runs) == {}  # once: the recovered run has no marker any more


def test_a_partial_trace_that_cannot_be_read_is_kept(tmp_path):
    runs = tmp_path / "runs"
    pid, identity = _ended_process()
    cut = _run_dir(runs, "20261201-150000-cut", pid, identity)
    (cut / "trace.partial.jsonl").write_text('not json\n{"t": 0.01}\n')  # a torn disk block
    assert set(recovery.recover(runs)) == {"thinkpad", "raspberrypi"}
    assert json.loads((cut / "run.json").read_text())["status"] == "failed"
    assert (cut / "trace.partial.jsonl").exists()  # the evidence stays beside the empty trace
    assert not (cut / recovery.MARKER).exists()


def test_a_finished_run_leaves_no_marker(tmp_path):
    recovery.mark_started(tmp_path, {"scenario": SCN, "hosts": HOSTS})
    facts = json.loads((tmp_path / recovery.MARKER).read_text())
    assert facts["pid"] == os.getpid() and facts["process"] == recovery.process_identity(os.getpid())
    recovery.mark_finished(tmp_path)
    assert not (tmp_path / recovery.MARKER).exists()
