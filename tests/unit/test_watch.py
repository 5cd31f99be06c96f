"""``tcplab watch`` (controller/film/watch.py) following a run being written, from a real trace.

A thread plays the controller: it makes a run directory, appends the records of
tests/data/seed-0.3s.trace.jsonl to its trace.partial.jsonl (flushed, in batches, a little out of
order as the probes' events arrive), then writes trace.jsonl and removes the partial file.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from controller.film import watch
from controller.film.tracefile import PartialTrace, open_run, ordered
from controller.trace import load

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "data" / "seed-0.3s.trace.jsonl"
RUN = "20261123-224913-seed"


def arrival_order(records: list[dict]) -> list[dict]:
    """The trace as it arrives: each host's records in order, interleaved a little late."""
    out = list(records)
    for i in range(0, len(out) - 1, 7):  # swap a few neighbours of different hosts
        if out[i]["host"] != out[i + 1]["host"]:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def controller(runs: Path, records: list[dict], delay: float = 0.5, fail: bool = False) -> threading.Thread:
    def write():
        time.sleep(delay)
        run_dir = runs / RUN
        run_dir.mkdir()
        final = [dict(r) for r in records]
        if fail:
            step = next(r for r in final if r["kind"] == "step" and r["status"] == "ok" and r["index"] == 4)
            step.update(status="failed", error="step 4 send on thinkpad: raspberrypi did not print Hello")
        with open(run_dir / "trace.partial.jsonl", "a", encoding="utf-8") as f:
            for n, rec in enumerate(arrival_order(final)):
                f.write(json.dumps(rec) + "\n")
                if n % 10 == 9:
                    f.flush()
                    time.sleep(0.02)
        (run_dir / "trace.jsonl.tmp").write_text("".join(json.dumps(r) + "\n" for r in final))
        (run_dir / "trace.jsonl.tmp").replace(run_dir / "trace.jsonl")
        (run_dir / "trace.partial.jsonl").unlink()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def tcplab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    (d / "20261123-203835-seed").mkdir()        # an older run: not the one to follow
    (d / "20261123-203835-seed" / "trace.jsonl").write_text(SEED.read_text())
    return d


def watch_a_new_run(runs: Path, records: list[dict], *args: str, fail: bool = False) -> subprocess.CompletedProcess:
    """``tcplab watch --since-now`` and a run that starts once it waits: a run started before the
    watch took its snapshot is an older run to it (seen on a loaded machine: a fixed head start
    of 0.5 s was not always enough, and the watch then waited for its full timeout)."""
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "watch", "--runs", str(runs), "--since-now", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("waiting for a run"), first
        writer = controller(runs, records, delay=0, fail=fail)
        out, err = proc.communicate(timeout=60)
        writer.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def test_follows_a_new_run_and_exits_0_when_trace_jsonl_appears(runs):
    res = watch_a_new_run(runs, load(SEED), "--scenario", str(REPO / "scenarios" / "seed.yml"))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "\x1b" not in out                    # not a terminal: plain lines
    assert "thinkpad FIN_WAIT2 -> TIME_WAIT" in out and "raspberrypi prints 'Hello'" in out
    assert "[4/9] send on thinkpad" in out      # the scenario file gave the number of steps
    assert out.rstrip().endswith(f"{RUN}: finished")


def test_a_failed_step_exits_1(runs):
    res = watch_a_new_run(runs, load(SEED), fail=True)
    assert res.returncode == 1
    assert res.stdout.rstrip().endswith(f"{RUN}: step 4 failed")


def test_gives_up_when_the_process_ends_before_a_run(runs):
    sleeper = subprocess.Popen(["sleep", "0.5"])
    try:
        started = time.monotonic()
        res = tcplab("watch", "--runs", str(runs), "--since-now", "--until-pid", str(sleeper.pid), timeout=30)
        assert res.returncode == 1
        assert f"process {sleeper.pid} ended before a run started" in res.stdout
        assert time.monotonic() - started < 15
    finally:
        sleeper.wait()


def test_gives_up_when_the_process_ends_and_the_run_never_finishes(runs):
    run_dir = runs / RUN
    run_dir.mkdir()
    (run_dir / "trace.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in load(SEED)[:40]))
    sleeper = subprocess.Popen(["sleep", "1"])
    try:
        res = tcplab("watch", "--runs", str(runs), "--until-pid", str(sleeper.pid), timeout=30)
    finally:
        sleeper.wait()
    assert res.returncode == 1
    assert "has no trace.jsonl" in res.stdout
    assert "thinkpad CLOSED -> LISTEN" in res.stdout   # it followed the fresh partial trace meanwhile


def test_live_frames_on_a_terminal(runs):
    writer = controller(runs, load(SEED), delay=0.3)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=50, color_system="standard")
    code = watch.Watcher(runs, console, since_now=True, total_steps=9).run()
    writer.join(5)
    assert code == 0
    out = console.file.getvalue()
    assert "waiting for a run" in out
    assert "TIME_WAIT" in out and "9/9 steps" in out and "finished" in out


def test_partial_trace_reads_whole_lines_only(tmp_path):
    path = tmp_path / "trace.partial.jsonl"
    recs = load(SEED)[:3]
    path.write_text(json.dumps(recs[0]) + "\n" + json.dumps(recs[1])[:20])
    follow = PartialTrace(path)
    assert [r["t"] for r in follow.read()] == [recs[0]["t"]]
    with open(path, "a") as f:
        f.write(json.dumps(recs[1])[20:] + "\n" + json.dumps(recs[2]) + "\n")
    got = follow.read()
    assert [r["t"] for r in got] == [recs[1]["t"], recs[2]["t"]] and [r["_n"] for r in got] == [1, 2]
    assert [r["t"] for r in ordered(list(reversed(recs)))] == sorted(r["t"] for r in recs)


def test_scenario_steps_only_for_a_run_of_that_scenario():
    assert watch.scenario_steps(Path("runs/20261123-224913-seed"), "seed", 9) == 9
    assert watch.scenario_steps(Path("runs/20261123-224913-seed-2"), "seed", 9) == 9
    assert watch.scenario_steps(Path("runs/20261123-224913-other"), "seed", 9) is None


def test_an_unfinished_run_replays_from_its_partial_trace(tmp_path):
    run_dir = tmp_path / RUN
    run_dir.mkdir()
    (run_dir / "trace.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arrival_order(load(SEED))))
    records, run, finished = open_run(run_dir)
    assert run == RUN and not finished
    assert [r["t"] for r in records] == sorted(r["t"] for r in load(SEED))
    res = subprocess.run([sys.executable, "-m", "controller.cli", "replay", str(run_dir), "--speed", "20"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "thinkpad CLOSED · raspberrypi CLOSED" in res.stdout.splitlines()[-1]
