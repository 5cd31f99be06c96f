"""The RFC 9293 check (controller/rfc9293.py): every real trace here passes, Linux's own ways are
named, a trace edited to hold a transition TCP does not make fails, and a run holding one fails with
the transition named in run.json and summary.txt (the run's real finish, fed a real trace)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from controller import rfc9293, scenario
from controller.finish import finish_run
from controller.run import Run
from controller.trace import load
from tests.unit.test_finish import _feed

REPO = Path(__file__).resolve().parents[2]
TRACES = sorted((REPO / "tests" / "data").glob("*.trace.jsonl"))


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_every_real_trace_passes_and_names_linuxs_time_wait(path):
    result = rfc9293.check(load(path))
    assert result["ok"] and result["illegal"] == [] and result["transitions"] >= 10
    assert result["linux"] == {"time_wait_60s": 1}  # the seed's one TIME_WAIT ran out after 60 s
    assert rfc9293.verdict(result).startswith(f"RFC 9293: all {result['transitions']} transitions allowed; "
                                              "Linux's own: TIME_WAIT lasts 60 s")


def test_the_rfcs_text_beyond_its_figure_and_linuxs_differences():
    allowed = [("ESTABLISHED", "CLOSED"), ("SYN_SENT", "CLOSED"), ("FIN_WAIT1", "TIME_WAIT"), ("LAST_ACK", "CLOSED"),
               ("CLOSE_WAIT", "CLOSED"), ("FIN_WAIT1", "CLOSING"), ("SYN_SENT", "SYN_RECEIVED")]
    for frm, to in allowed:
        assert rfc9293.rule(frm, to), (frm, to)
    named = [("FIN_WAIT2", "CLOSED"), ("CLOSED", "ESTABLISHED"), ("CLOSED", "SYN_RECEIVED")]
    records = [{"kind": "state", "t": 1.0, "host": "h", "local": "a", "remote": "b", "from": f, "to": t}
               for f, t in allowed + named]
    result = rfc9293.check(records)
    assert result["ok"] and result["linux"] == {"child_at_final_ack": 2, "orphan_fin_wait2": 1}


def test_a_trace_edited_to_hold_a_transition_tcp_does_not_make_fails():
    records = load(TRACES[0])
    est = next(i for i, r in enumerate(records) if r["kind"] == "state" and r["to"] == "ESTABLISHED")
    records[est] = {**records[est], "to": "SYN_SENT", "from": "TIME_WAIT"}
    result = rfc9293.check(records)
    bad = records[est]
    assert not result["ok"] and result["illegal"] == [{k: bad[k] for k in ("t", "host", "local", "remote", "from", "to")}]
    assert rfc9293.verdict(result) == (f"RFC 9293: {bad['host']} went TIME_WAIT -> SYN_SENT at {bad['t']:.3f} s "
                                       f"({bad['local']} <-> {bad['remote']}), which TCP does not allow")


def test_a_jump_only_the_poller_saw_is_a_gap_in_what_was_seen_not_a_failure():
    jump = {"kind": "state", "t": 2.0, "host": "h", "local": "a", "remote": "b", "from": "ESTABLISHED",
            "to": "TIME_WAIT"}
    polled = rfc9293.check([{**jump, "source": "inet_diag"}])
    assert polled["ok"] and polled["unseen"] == 1 and "the poller's jumps" in rfc9293.verdict(polled)
    traced = rfc9293.check([{**jump, "source": "tracepoint"}])  # the kernel said so itself: not TCP
    assert not traced["ok"] and traced["illegal"][0]["to"] == "TIME_WAIT"


def test_a_run_holding_one_fails_naming_it(tmp_path):
    records = load(REPO / "tests" / "data" / "seed-0.3s.trace.jsonl")
    i = next(i for i, r in enumerate(records) if r["kind"] == "state" and r["to"] == "FIN_WAIT2")
    records[i] = {**records[i], "to": "LISTEN"}  # FIN_WAIT1 -> LISTEN: no such thing
    scn = scenario.parse(yaml.safe_load((REPO / "scenarios" / "seed.yml").read_text())).bound()  # the seed's hosts
    run = Run(tmp_path / "run", ("thinkpad", "raspberrypi"))
    _feed(run, records)
    seq = SimpleNamespace(error=None, failed_step=None, unmet=[], port=9090)
    finish_run(run, scn, seq, True, 0.0, {}, {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"})
    info = json.loads((run.dir / "run.json").read_text())
    assert info["ok"] is False and info["status"] == "failed"
    assert info["error"].startswith("RFC 9293: thinkpad went FIN_WAIT1 -> LISTEN at ") and seq.error == info["error"]
    assert len(info["rfc9293"]["illegal"]) == 1 and run.rfc["ok"] is False
    assert info["error"] in (run.dir / "summary.txt").read_text()
