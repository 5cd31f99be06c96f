"""The run's finish without a lab: a real run fed a real trace's events, finished as the controller
finishes it (one index for run.json, summary.txt and the film), and `tcplab render` making every
file again byte for byte from what the directory holds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from controller import scenario
from controller.clock import ClockEstimate
from controller.finish import finish_run
from controller.run import Run
from controller.trace import load

REPO = Path(__file__).resolve().parents[2]
TCPLAB = Path(sys.executable).parent / "tcplab"
FILES = ("summary.txt", "ladder.svg", "ladder.png", "film.html", "story.md")


def _feed(run: Run, records: list[dict]) -> None:
    clock = ClockEstimate()  # no exchange: the probes' clocks are the controller's

    async def go():
        for r in records:
            if r["kind"] == "step":
                await run.add({k: v for k, v in r.items()})
                continue
            body = {k: v for k, v in r.items() if k not in ("t", "host", "analysis")}
            body["t_ns"] = run.start_ns + round(r["t"] * 1e9)
            await run.add_event(r["host"], body, clock)
        await run.add_event("thinkpad", {"kind": "counters", "t_ns": run.start_ns,
                                         "counters": {"statemerge_dropped_foreign": 0, "transport_sent": 9}}, clock)
    asyncio.run(go())


def test_finish_writes_the_trace_run_json_and_the_film_from_one_index_and_render_agrees(tmp_path):
    records = load(REPO / "tests" / "data" / "seed-0.3s.trace.jsonl")
    scn = scenario.parse(yaml.safe_load((REPO / "scenarios" / "seed.yml").read_text())).bound()  # the seed's hosts
    run = Run(tmp_path / "run", ("thinkpad", "raspberrypi"))
    _feed(run, records)
    seq = SimpleNamespace(error=None, failed_step=None, unmet=[], port=9090)  # what finish reads of the sequencer
    path = finish_run(run, scn, seq, True, 0.0, {}, {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"},
                      link_counters={"thinkpad": {"link_given_up": 2}})
    assert path == run.dir / "trace.jsonl" and not (run.dir / "trace.partial.jsonl").exists()
    trace = load(path)
    assert [(r["t"], r["kind"]) for r in trace] == [(r["t"], r["kind"]) for r in records]
    info = json.loads((run.dir / "run.json").read_text())
    assert info["status"] == "ok" and info["causality"]["pairs"] > 10 and info["causality"]["violations"] == []
    assert info["hosts"]["thinkpad"]["counters"] == {"statemerge_dropped_foreign": 0, "transport_sent": 9,
                                                     "link_given_up": 2}
    assert info["hosts"]["raspberrypi"]["counters"] == {}
    first = {n: (run.dir / n).read_bytes() for n in FILES}
    assert b"dropped, missed or refused on thinkpad: link_given_up 2" in first["summary.txt"]
    for n in FILES:
        (run.dir / n).unlink()
    res = subprocess.run([TCPLAB, "render", str(run.dir)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert {n: (run.dir / n).read_bytes() for n in FILES} == first
