"""The scenario library (scenarios/*.yml) through a real ``tcplab run FILE --delay 0.3`` on the embedded
lab's kind of hosts (two namespaces, a real controller and probes, shaped), each file whole, TIME_WAIT's
60 s included: every expectation of every step holds, and the film tells each story. (seed.yml is
filmed whole by tests/integration/test_lab_e2e.py through lab.yml, many-clients.yml by test_load.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.film import model
from controller.trace import load
from tests.daemons import Lab
from tests.integration.test_film_html import moments_of, step_through
from tests.netns import NetnsPair, require_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ELSEWHERE = {"seed", "many-clients"}
LIBRARY = sorted(p.stem for p in (REPO / "scenarios").glob("*.yml") if p.stem not in ELSEWHERE)


@pytest.fixture(scope="module")
def library_runs(tmp_path_factory):
    """Each library scenario once, in one lab, through the CLI as a user runs it: name -> (result, run dir)."""
    require_root()
    root = tmp_path_factory.mktemp("library")
    out = {}
    with NetnsPair() as pair:
        lab = Lab(pair, root)
        try:
            lab.start()
            for name in LIBRARY:
                before = set(lab.runs.iterdir()) if lab.runs.is_dir() else set()
                res = lab.tcplab("run", str(REPO / "scenarios" / f"{name}.yml"), "--delay", "0.3", timeout=300)
                made = sorted(set(lab.runs.iterdir()) - before)
                out[name] = (res, made[-1] if made else None)
        finally:
            lab.close()
    return out


def paths(run_dir: Path) -> dict[str, list[str]]:
    film = model.build(load(run_dir / "trace.jsonl"))
    return {h: [t.to for t in film.transitions if t.host == h] for h in film.hosts}


def test_the_library_has_the_stories(library_runs):
    assert {"abort", "client-closes-first", "connection-refused", "simultaneous-close", "half-close",
            "syn-lost", "syn-timeout", "keepalive", "zero-window", "data-loss", "two-connections"} <= set(LIBRARY)


@pytest.mark.parametrize("name", LIBRARY)
def test_each_passes_through_tcplab_run(library_runs, name):
    res, run_dir = library_runs[name]
    assert res.returncode == 0, res.stdout + res.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "ok" and info["scenario"]["name"] == name and info["delay_s"] == 0.3
    assert info["rfc9293"]["ok"] and info["rfc9293"]["illegal"] == []  # every transition one TCP makes
    assert "RFC 9293: all " in (run_dir / "summary.txt").read_text()
    for f in ("film.html", "story.md", "ladder.svg", "summary.txt"):
        assert (run_dir / f).stat().st_size > 0, f


def test_connection_refused_is_a_reset_to_the_syn(library_runs):
    _, run_dir = library_runs["connection-refused"]
    assert paths(run_dir) == {"thinkpad": [], "raspberrypi": ["SYN_SENT", "CLOSED"]}
    recs = load(run_dir / "trace.jsonl")
    sent = [(r["host"], r["flags"]) for r in recs if r["kind"] == "packet" and r["dir"] == "out"]
    assert sent == [("raspberrypi", ["SYN"]), ("thinkpad", ["RST", "ACK"])]
    assert "the server refused the connection" in (run_dir / "story.md").read_text()


def test_simultaneous_close_takes_both_sides_through_closing(library_runs):
    _, run_dir = library_runs["simultaneous-close"]
    p = paths(run_dir)
    assert p["raspberrypi"] == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "TIME_WAIT", "CLOSED"]
    assert p["thinkpad"] == ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "TIME_WAIT", "CLOSED"]
    story = (run_dir / "story.md").read_text()
    assert "FIN_WAIT1 → CLOSING" in story and "CLOSING → TIME_WAIT" in story


def test_abort_is_a_reset_not_a_close(library_runs):
    _, run_dir = library_runs["abort"]
    assert paths(run_dir) == {"thinkpad": ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "CLOSED"],
                              "raspberrypi": ["SYN_SENT", "ESTABLISHED", "CLOSED"]}
    recs = load(run_dir / "trace.jsonl")
    sent = [(r["host"], tuple(r["flags"])) for r in recs if r["kind"] == "packet" and r["dir"] == "out"]
    assert not [f for _, f in sent if "FIN" in f]  # no orderly close anywhere
    assert ("thinkpad", ("RST", "ACK")) in sent
    states = [r for r in recs if r["kind"] == "state"]
    assert not [r for r in states if r["to"] in ("FIN_WAIT1", "TIME_WAIT", "CLOSE_WAIT")]
    story = (run_dir / "story.md").read_text()
    assert "the application aborted: a RST goes out" in story and "the peer reset the connection" in story


def test_half_close_carries_data_after_the_fin(library_runs):
    _, run_dir = library_runs["half-close"]
    assert paths(run_dir) == {
        "thinkpad": ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSED"],
        "raspberrypi": ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]}
    recs = load(run_dir / "trace.jsonl")
    out = [r for r in recs if r["kind"] == "packet" and r["dir"] == "out"]
    fin = next(r for r in out if r["host"] == "thinkpad" and "FIN" in r["flags"])
    data = next(r for r in out if r["host"] == "raspberrypi" and r["len"] > 0)
    assert data["payload"] == "Still here\n" and data["t"] > fin["t"]  # after the server's FIN, the other way
    printed = [r for r in recs if r["kind"] == "console" and r["host"] == "thinkpad" and r["stream"] == "stdout"]
    assert [r["text"].strip() for r in printed] == ["Still here"]
    shut = next(r for r in recs if r["kind"] == "step" and r["action"] == "shutdown" and r["status"] == "start")
    assert fin["t"] > shut["t"]
    assert "shuts its sending side" in (run_dir / "story.md").read_text()


def test_syn_lost_is_retransmitted_by_the_kernel_until_one_gets_through(library_runs):
    _, run_dir = library_runs["syn-lost"]
    p = paths(run_dir)
    assert p["raspberrypi"] == ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    recs = load(run_dir / "trace.jsonl")
    sent = next(r for r in recs if r["kind"] == "state" and r["host"] == "raspberrypi" and r["to"] == "SYN_SENT")
    syns = [r for r in recs if r["kind"] == "packet" and r["host"] == "raspberrypi" and r["dir"] == "out"
            and r["flags"] == ["SYN"]]
    retrans = [r for r in recs if r["kind"] == "kernel" and r["host"] == "raspberrypi"
               and r["event"] == "retransmit_skb" and r["state"] == "SYN_SENT"]
    # the dropped SYNs never reached the capture: one SYN left, after the kernel's retransmissions
    assert len(syns) == 1 and syns[0]["analysis"] == [] and syns[0]["t"] - sent["t"] > 3.5
    assert len(retrans) >= 3 and all(sent["t"] < r["t"] < syns[0]["t"] for r in retrans[:-1])
    gaps = [b["t"] - a["t"] for a, b in zip([sent, *retrans], retrans)]
    assert 0.9 < gaps[0] < 1.4 and all(g > 0.9 for g in gaps), gaps  # the RTO, 1 s at first, never less
    info = json.loads((run_dir / "run.json").read_text())
    assert info["hosts"]["raspberrypi"]["shaper_counters"]["shaped_drops"] >= 3


def test_syn_timeout_gives_up_after_the_syn_retries_time_and_the_knob_is_put_back(library_runs):
    _, run_dir = library_runs["syn-timeout"]
    assert paths(run_dir) == {"thinkpad": ["LISTEN", "CLOSED"], "raspberrypi": ["SYN_SENT", "CLOSED"]}
    recs = load(run_dir / "trace.jsonl")
    states = [r for r in recs if r["kind"] == "state" and r["host"] == "raspberrypi"]
    assert 6.5 < states[1]["t"] - states[0]["t"] < 8.5  # 1 + 2 + 4 s: the time two doubling retries take
    assert not [r for r in recs if r["kind"] == "packet" and r["host"] == "raspberrypi" and r["dir"] == "out"]
    assert len([r for r in recs if r["kind"] == "kernel" and r["event"] == "retransmit_skb"]) >= 2
    knobs = [r for r in recs if r["kind"] == "sysctl"]
    assert [(r["host"], bool(r.get("restored"))) for r in knobs] == [("raspberrypi", False), ("raspberrypi", True)]
    was = knobs[0]["values"]["tcp_syn_retries"]["was"]
    assert knobs[0]["values"]["tcp_syn_retries"]["now"] == [2]
    assert knobs[1]["values"]["tcp_syn_retries"] == {"was": [2], "now": was}  # put back by the cleanup
    assert "net.ipv4.tcp_syn_retries" in (run_dir / "summary.txt").read_text()


def test_keepalive_probes_are_answered_until_they_are_not_and_then_the_client_resets(library_runs):
    _, run_dir = library_runs["keepalive"]
    assert paths(run_dir) == {"thinkpad": ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "CLOSED"],
                              "raspberrypi": ["SYN_SENT", "ESTABLISHED", "CLOSED"]}
    recs = load(run_dir / "trace.jsonl")
    out = [r for r in recs if r["kind"] == "packet" and r["dir"] == "out"]
    probes = [r for r in out if r["host"] == "raspberrypi" and "keep_alive" in r["analysis"]]
    answers = [r for r in out if r["host"] == "thinkpad" and "keep_alive_ack" in r["analysis"]]
    lost_at = next(r["t"] for r in recs if r["kind"] == "shaper" and r["host"] == "thinkpad"
                   and r.get("loss_pct") == 100)
    unanswered = [r for r in probes if r["t"] > lost_at]
    assert len(answers) >= 2 and len(unanswered) == 3  # probes: 3
    gaps = [b["t"] - a["t"] for a, b in zip(unanswered, unanswered[1:])]
    assert all(0.9 < g < 1.3 for g in gaps), gaps  # interval: 1 s
    rst = next(r for r in out if r["host"] == "raspberrypi" and "RST" in r["flags"])
    assert 0.9 < rst["t"] - unanswered[-1]["t"] < 1.3
    timers = [row["timer"] for r in recs if r["kind"] == "netstat" and r["host"] == "raspberrypi"
              for row in r["rows"] if row["state"] == "ESTABLISHED"]
    assert any(t.startswith("keepalive (") for t in timers)  # netstat -o shows the keepalive timer
    assert "keep-alive probe" in (run_dir / "story.md").read_text()


def test_zero_window_closes_is_probed_and_opens_when_the_reader_reads(library_runs):
    _, run_dir = library_runs["zero-window"]
    recs = load(run_dir / "trace.jsonl")
    out = [r for r in recs if r["kind"] == "packet" and r["dir"] == "out"]
    steps = {(r["action"], r.get("detail")): r["t"] for r in recs if r["kind"] == "step" and r["status"] == "start"}
    stopped, again = steps[("read", "stops reading")], steps[("read", "reads again")]
    closed = [r for r in out if r["host"] == "thinkpad" and "zero_window" in r["analysis"]]
    probes = [r for r in out if r["host"] == "raspberrypi" and "keep_alive" in r["analysis"]]
    opened = [r for r in out if r["host"] == "thinkpad" and "window_update" in r["analysis"]]
    assert closed and all(stopped < r["t"] < again + 1 for r in closed) and closed[0]["win"] == 0
    assert len([r for r in probes if closed[0]["t"] < r["t"] < again]) >= 2  # the persist timer's probes
    assert opened and opened[0]["t"] > again and opened[0]["win"] > 0
    sent = sum(r["len"] for r in out if r["host"] == "raspberrypi")
    printed = [r["text"] for r in recs if r["kind"] == "console" and r["host"] == "thinkpad" and r["stream"] == "stdout"]
    assert sent == 20000 and printed == ["x" * 999] * 20  # every byte reached the application, once it read
    knob = next(r for r in recs if r["kind"] == "sysctl" and not r.get("restored"))
    assert knob["host"] == "thinkpad" and knob["values"]["tcp_rmem"]["now"] == [4096, 4096, 4096]
    story = (run_dir / "story.md").read_text()
    assert "stops reading" in story and "Its window is zero" in story and "window update" in story


def test_data_loss_is_repaired_by_a_fast_retransmission(library_runs):
    _, run_dir = library_runs["data-loss"]
    recs = load(run_dir / "trace.jsonl")
    out = [r for r in recs if r["kind"] == "packet" and r["dir"] == "out"]
    data = [r for r in out if r["host"] == "raspberrypi" and r["len"] > 0]
    # the second segment never left the first time: it leaves after the three that followed it
    assert [r["seq"] for r in data] == [1, 2897, 4345, 5793, 1449] and data[1]["analysis"] == [
        "previous_segment_not_captured"]
    dups = [r for r in out if r["host"] == "thinkpad" and "duplicate_ack" in r["analysis"]]
    assert len(dups) == 3 and {r["ack"] for r in dups} == {1449}
    again = next(r for r in recs if r["kind"] == "kernel" and r["event"] == "retransmit_skb")
    # retransmitted once the first duplicate ACK came back (RACK), long before the timer would run out
    assert again["t"] - dups[0]["t"] < 0.05 and data[-1]["t"] - data[1]["t"] < 1.0
    # Wireshark names the copy by how soon after the last segment it left: a (fast) retransmission, or
    # out of order when it came within its out-of-order window; never nothing
    assert set(data[-1]["analysis"]) & {"retransmission", "fast_retransmission", "out_of_order"}, data[-1]
    assert max(r["ack"] for r in out if r["host"] == "thinkpad") >= 7241  # every byte acknowledged
    printed = [r["text"] for r in recs if r["kind"] == "console" and r["host"] == "thinkpad" and r["stream"] == "stdout"]
    assert sum(len(t) + 1 for t in printed) == 1448 * 5 and set("".join(printed)) == {"x"}  # all of it, in order


def test_two_named_connections_are_each_their_own(library_runs):
    _, run_dir = library_runs["two-connections"]
    pairs = json.loads((run_dir / "run.json").read_text())["connections"]
    a, b = (tuple(pairs[n]["raspberrypi"]) for n in ("a", "b"))
    assert a[1] == b[1] and a[0] != b[0]  # one server port, two client ports
    assert all(pairs[n]["thinkpad"] == pairs[n]["raspberrypi"][::-1] for n in ("a", "b"))
    recs = load(run_dir / "trace.jsonl")

    def path(host, pair):
        return [r["to"] for r in recs if r["kind"] == "state" and r["host"] == host
                and (r["local"], r["remote"]) == pair]
    assert path("raspberrypi", a) == ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert path("raspberrypi", b) == ["SYN_SENT", "ESTABLISHED", "CLOSED"]
    assert path("thinkpad", a[::-1]) == ["SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    assert path("thinkpad", b[::-1]) == ["SYN_RECEIVED", "ESTABLISHED", "CLOSED"]
    listener = [r["to"] for r in recs if r["kind"] == "state" and r["host"] == "thinkpad" and r["remote"] == "0.0.0.0:*"]
    assert listener == ["LISTEN", "CLOSED"]  # one listener for both, closed last
    printed = [(r["text"].strip(), r["remote"]) for r in recs
               if r["kind"] == "console" and r["host"] == "thinkpad" and r["stream"] == "stdout"]
    assert printed == [("one for a", a[0]), ("one for b", b[0])]  # each line on its own connection
    resets = [(r["src"], "+".join(r["flags"])) for r in recs if r["kind"] == "packet" and r["dir"] == "out"
              and "RST" in r["flags"]]
    assert resets == [(b[0], "RST+ACK"), (b[0], "RST")]  # the abort's, then the answer to the late ACK: b only
    last_b = max(r["t"] for r in recs if r["kind"] == "state" and (r["local"], r["remote"]) in (b, b[::-1])
                 and r["to"] == "CLOSED")
    still = [r for r in recs if r["kind"] == "packet" and r["dir"] == "out" and r["src"] == a[1] and r["len"] > 0]
    assert still and still[0]["payload"] == "Still here\n" and still[0]["t"] > last_b  # a carries on after b
    story = (run_dir / "story.md").read_text()
    assert f"the probe's application prints `\"one for b\"` on {b[1]} ↔ {b[0]}" in story


@pytest.mark.parametrize("name", ["connection-refused", "simultaneous-close", "abort", "half-close"])
def test_film_html_agrees_with_the_trace_at_every_moment(library_runs, browser, tmp_path, name):
    _, run_dir = library_runs[name]
    records = load(run_dir / "trace.jsonl")
    step_through(browser, run_dir, records, moments_of(records), tmp_path, prefix=name)
