"""Load (issue 10, item 7): one server with 200 concurrent clients through a whole storyline,
scenarios/many-clients.yml on the real controller and probes in two namespaces, shaped (the NFQUEUE
delay line here), TIME_WAIT's 60 s waited out. Every transition of every connection must be in the
trace, on both hosts, in the order the seed's one connection makes them, and nothing may be lost:
no loss record, no event refused or dropped, no page of the tracepoint missed, no packet the
capture's kernel dropped. (The controller's memory under load: python -m bench.load.)
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import yaml

from controller.trace import load
from tests.daemons import run_in_fresh_lab

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N = 200
SERVER = ["SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSED"]
CLIENT = ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]


@pytest.fixture(scope="module")
def load_run(tmp_path_factory):
    scenario = yaml.safe_load((REPO / "scenarios" / "many-clients.yml").read_text())
    scenario.update(delay=0.05)
    return run_in_fresh_lab(tmp_path_factory.mktemp("load"), scenario, timeout=400)


def paths(records, host):
    """Each connection's ``to`` states in order, by its address pair, and where each began."""
    out, first = collections.defaultdict(list), {}
    for r in records:
        if r["kind"] == "state" and r["host"] == host and r["remote"] != "0.0.0.0:*":
            key = (r["local"], r["remote"])
            first.setdefault(key, r["from"])
            out[key].append(r["to"])
    return out, first


def test_every_transition_of_every_connection_is_in_the_trace(load_run):
    records = load(load_run / "trace.jsonl")
    server, server_from = paths(records, "thinkpad")
    client, client_from = paths(records, "raspberrypi")
    assert len(server) == len(client) == N
    assert all(p == SERVER for p in server.values()), collections.Counter(map(tuple, server.values()))
    assert set(server_from.values()) == {"LISTEN"}
    assert all(p == CLIENT for p in client.values()), collections.Counter(map(tuple, client.values()))
    assert set(client_from.values()) == {"CLOSED"}
    # the same 200 address pairs, seen from both ends
    assert {(r, l) for l, r in server} == set(client)
    listener = [r["to"] for r in records if r["kind"] == "state" and r["host"] == "thinkpad"
                and r["remote"] == "0.0.0.0:*"]
    assert listener == ["LISTEN", "CLOSED"]
    # each connection printed its line once, named by its address pair
    for host, text in (("raspberrypi", "Hello"), ("thinkpad", "Bye")):
        lines = [r for r in records if r["kind"] == "console" and r["host"] == host and r["stream"] == "stdout"]
        assert len(lines) == N and {r["text"] for r in lines} == {text}
        pairs = {(r["local"], r["remote"]) for r in lines}
        assert pairs == (set(client) if host == "raspberrypi" else set(server))


def test_nothing_was_lost(load_run):
    records = load(load_run / "trace.jsonl")
    assert not [r for r in records if r["kind"] == "loss"]
    run = json.loads((load_run / "run.json").read_text())
    assert run["status"] == "ok", run.get("error")
    assert run["rfc9293"]["ok"] and run["rfc9293"]["transitions"] == 2202  # and 200 TIME_WAITs of 60 s named
    assert run["rfc9293"]["linux"] == {"time_wait_60s": 200}
    for host in ("thinkpad", "raspberrypi"):
        counters = run["hosts"][host]["counters"]
        lost = {k: v for k, v in counters.items() if v and any(w in k for w in ("drop", "miss", "refused", "given"))}
        assert lost == {}, (host, counters)
        stats = run["hosts"][host]["capture"]
        assert stats.get("kernel_drops", 0) == 0, stats
    # every segment both hosts captured: 200 x (3 handshake + 2 data + their ACKs + 2 FINs + ACKs), each seen twice
    packets = collections.Counter(r["host"] for r in records if r["kind"] == "packet")
    assert packets["thinkpad"] == packets["raspberrypi"] >= N * 9


def test_the_film_files_are_made(load_run):
    for name in ("film.html", "story.md", "summary.txt"):
        assert (load_run / name).stat().st_size > 0, name
    story = (load_run / "story.md").read_text()
    assert "SYN_RECEIVED" in story and "TIME_WAIT" in story
    # what the 200 connections do alike is told once and counted (story.MANY): a story to read, not 1 MB
    assert "more like it since" in story and "on 200 connections in all: **thinkpad: TIME_WAIT → CLOSED**" in story
    assert len(story) < 100_000, len(story)
