"""A real run at 1.2 s of delay (the SYN is sent again after 1 s): the trace's ``analysis`` agrees with
tshark on the run's own pcaps, and merged.pcapng shows both hosts' packets in causal order."""

from __future__ import annotations

import json

import pytest

from controller.report import segment_pairs
from controller.trace import load
from tests import tshark
from tests.daemons import HOSTS, run_in_fresh_lab

pytestmark = pytest.mark.integration

DELAYED = {
    "name": "delayed", "port": 9090, "delay": 1.2,
    "steps": [
        {"action": "shape", "host": ["thinkpad", "raspberrypi"]},
        {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
        {"action": "connect", "host": "raspberrypi", "to": "thinkpad", "timeout": 30,
         "expect": ["raspberrypi ESTABLISHED", "thinkpad ESTABLISHED"]},
        {"action": "send", "host": "thinkpad", "text": "Hello", "expect": ["raspberrypi prints Hello"], "timeout": 30},
        {"action": "close", "host": "thinkpad", "expect": ["thinkpad FIN_WAIT2", "raspberrypi CLOSE_WAIT"],
         "timeout": 30},
        {"action": "close", "host": "raspberrypi", "expect": ["raspberrypi CLOSED", "thinkpad TIME_WAIT"],
         "timeout": 30},
    ],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One delayed run shared by the tests of this module (it takes ~25 s)."""
    tshark.require_tshark()
    return run_in_fresh_lab(tmp_path_factory.mktemp("analysis-run"), DELAYED)


def packets(recs, host=None):
    return [r for r in recs if r["kind"] == "packet" and (host is None or r["host"] == host)]


def test_the_trace_analysis_agrees_with_tshark_frame_by_frame(run_dir):
    recs = load(run_dir / "trace.jsonl")
    seen = set()
    for host in HOSTS:
        ours = [r["analysis"] for r in packets(recs, host)]
        for name in (f"{host}.pcap", f"{host}.pcapng"):
            theirs = tshark.analysis_flags(run_dir / name)
            assert len(theirs) == len(ours) > 5, name
            diff = [(i + 1, o, t) for i, (o, t) in enumerate(zip(ours, theirs)) if o != t]
            assert not diff, f"{name}: frames where the trace != tshark (frame, trace, tshark): {diff}"
        seen |= {f for flags in ours for f in flags}
    # the delay makes the kernel send the SYN (and more) again before the first copy got an answer
    assert "retransmission" in seen, seen
    syns = [r for r in packets(recs, "raspberrypi") if r["flags"] == ["SYN"] and r["dir"] == "out"]
    assert len(syns) >= 2 and syns[0]["analysis"] == [] and "retransmission" in syns[1]["analysis"]
    summary = (run_dir / "summary.txt").read_text()
    assert "(retransmission" in summary


def test_merged_pcapng_shows_both_hosts_in_causal_order_with_nanoseconds(run_dir):
    recs = load(run_dir / "trace.jsonl")
    film = packets(recs)  # trace order is the film's order
    rows = tshark.run(run_dir / "merged.pcapng", "frame.number", "frame.interface_name", "frame.time_epoch",
                      "ip.src", "tcp.srcport", "tcp.len")
    assert len(rows) == len(film)
    assert {r[1] for r in rows} == set(HOSTS)
    for row, rec in zip(rows, film):
        assert row[1] == rec["host"] and f"{row[3]}:{row[4]}" == rec["src"] and int(row[5]) == rec["len"]
    stamps = [int(r[2].replace(".", "")) for r in rows]  # nanoseconds since the epoch, as tshark prints them
    assert all(len(r[2].split(".")[1]) == 9 for r in rows)
    assert any(s % 1000 for s in stamps), "timestamps are not finer than microseconds"
    assert stamps == sorted(stamps)
    index = {id(rec): i for i, rec in enumerate(film)}
    pairs = list(segment_pairs(recs))
    assert len(pairs) > 5
    # merged.pcapng is the trace's order and times, and in both no segment arrives before it left
    merged_bad = [(o["t"], a["t"]) for o, a in pairs if not (index[id(o)] < index[id(a)]
                                                              and stamps[index[id(o)]] <= stamps[index[id(a)]])]
    trace_bad = [(v["left"], v["arrived"]) for v in json.loads((run_dir / "run.json").read_text())["causality"]["violations"]]
    assert merged_bad == [] and trace_bad == []
    # the controller's timebase: a frame's offset from the first is its record's t minus the first's
    for k in (1, len(film) // 2, len(film) - 1):
        assert abs((stamps[k] - stamps[0]) - round((film[k]["t"] - film[0]["t"]) * 1e9)) <= 1
