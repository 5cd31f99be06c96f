"""controller/film/story.py on real traces (tests/data) and on variants of them edited here."""

import copy
from pathlib import Path

import pytest

from controller.film import story, words
from controller.trace import load, sort_key

DATA = Path(__file__).resolve().parent.parent / "data"
SEED = DATA / "seed-0.3s.trace.jsonl"
SEED_3S = DATA / "seed-3s.trace.jsonl"
TRACES = [SEED] + ([SEED_3S] if SEED_3S.exists() else [])
SERVER, CLIENT = "10.90.0.1:9090", "10.90.0.2:53458"


def told(text: str, r: dict) -> bool:
    """The state record is named with its time, host, from and to."""
    return f"**{r['t']:.3f} s** — **{r['host']}: {r['from']} → {r['to']}**" in text


def line_of(text: str, r: dict) -> str:
    return next(line for line in text.splitlines() if f"**{r['host']}: {r['from']} → {r['to']}**" in line
                and f"**{r['t']:.3f} s**" in line)


def state(t, host, frm, to, local=None, remote=None):
    local = local or (SERVER if host == "thinkpad" else CLIENT)
    remote = remote or (CLIENT if host == "thinkpad" else SERVER)
    return {"t": t, "host": host, "kind": "state", "local": local, "remote": remote, "from": frm, "to": to,
            "source": "tracepoint"}


def segment(t, sender, flags, seq, ack, dt=0.00002, analysis=()):
    src, dst = (SERVER, CLIENT) if sender == "thinkpad" else (CLIENT, SERVER)
    receiver = "raspberrypi" if sender == "thinkpad" else "thinkpad"
    base = {"kind": "packet", "src": src, "dst": dst, "flags": flags, "seq": seq, "ack": ack, "len": 0,
            "payload": "", "win": 64, "analysis": list(analysis)}
    return [dict(base, t=t, host=sender, dir="out"), dict(base, t=t + dt, host=receiver, dir="in")]


def step(t, index, action, target, status="start", **extra):
    return dict({"t": t, "host": "controller", "kind": "step", "index": index, "action": action, "target": target,
                 "status": status}, **extra)


def until_step_5(records):
    """The seed's records up to the end of step 5 (connected, data exchanged), netstat left out."""
    end = next(i for i, r in enumerate(records) if r["kind"] == "step" and r["index"] == 5 and r["status"] == "ok")
    return [copy.deepcopy(r) for r in records[:end + 1] if r["kind"] != "netstat"]


@pytest.fixture(scope="module")
def seed():
    return load(SEED)


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
def test_every_state_record_of_both_hosts_is_named_with_its_time(path):
    records = load(path)
    text = story.render(records)
    states = [r for r in records if r["kind"] == "state"]
    assert {r["host"] for r in states} == {"thinkpad", "raspberrypi"}
    missing = [r for r in states if not told(text, r)]
    assert not missing
    # the listener's records too, said to be the listening socket
    listener = [r for r in states if r["remote"] == "0.0.0.0:*"]
    assert listener and all("listening socket" in line_of(text, r) for r in listener)


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
def test_render_is_deterministic_and_write_is_atomic(path, tmp_path):
    records = load(path)
    assert story.render(records) == story.render(load(path))
    first = story.write(tmp_path, records).read_bytes()
    assert story.write(tmp_path, records) == tmp_path / "story.md"
    assert (tmp_path / "story.md").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["story.md"]


def test_seed_story_roles_times_causes_and_segments_told_once(seed):
    text = story.render(seed)
    assert "# The run in plain words: thinkpad (server) and raspberrypi (client)" in text
    assert "port 9090" in text and "300 ms" in text
    # each segment is told once, at the time it left, with the time it took to arrive
    outs = [r for r in seed if r["kind"] == "packet" and r["dir"] == "out"]
    for r in outs:
        assert f"**{r['t']:.3f} s** — {r['host']} sends" in text
    assert text.count(" sends ") - text.count("is typed") >= len(outs)
    assert "11 segments crossed, 0 of them retransmissions" in text
    # causes: the packet, the call, the timer; the storyline's milestones
    syn_rcvd = line_of(text, next(r for r in seed if r["kind"] == "state" and r["to"] == "SYN_RECEIVED"))
    assert "Cause: the SYN from raspberrypi (No. 2)" in syn_rcvd and "listening socket stays open" in syn_rcvd
    assert "three-way handshake is complete" in text and "Both sides are now ESTABLISHED" in text
    fin1 = line_of(text, next(r for r in seed if r["kind"] == "state" and r["to"] == "FIN_WAIT1"))
    assert "Cause: step 6, the application closes its socket" in fin1
    tw = line_of(text, next(r for r in seed if r["kind"] == "state" and r["to"] == "TIME_WAIT"))
    assert "timewait (59.98/0/0)" in tw
    end = line_of(text, next(r for r in seed if r["kind"] == "state" and r["from"] == "TIME_WAIT"))
    assert "TIME_WAIT timer" in end and "Both sides are now CLOSED" in end
    assert '`"Hello"` is typed into nc' in text and 'raspberrypi: nc prints `"Hello"`' in text
    assert "## Step 3, 0.171 s to 1.184 s: raspberrypi's application connects to thinkpad — the three-way " \
           "handshake" in text
    assert "## Step 8, 3.261 s to 64.701 s: waiting — TIME_WAIT runs out" in text
    assert "- thinkpad (server): CLOSED → LISTEN → SYN_RECEIVED → ESTABLISHED → FIN_WAIT1 → FIN_WAIT2 → " \
           "TIME_WAIT → CLOSED" in text


def test_a_failed_step_is_told_with_its_error(seed):
    records = copy.deepcopy(seed)
    ok = next(r for r in records if r["kind"] == "step" and r["index"] == 3 and r["status"] == "ok")
    ok.update(status="failed", error="step 3 (connect on raspberrypi): waited 11.5 s for thinkpad ESTABLISHED, "
                                     "saw SYN_RECEIVED")
    text = story.render(records)
    assert "**1.184 s** — **step 3 (connect) failed**: step 3 (connect on raspberrypi): waited 11.5 s" in text
    assert "— FAILED" in next(line for line in text.splitlines() if line.startswith("## Step 3,"))
    assert "(step 3 failed)" in text


def test_a_retransmission_is_told_as_such_with_its_timer(seed):
    records = copy.deepcopy(seed)
    synack = next(r for r in records if r["kind"] == "packet" and r["flags"] == ["SYN", "ACK"] and r["dir"] == "out")
    records += [{"t": 0.7745, "host": "thinkpad", "kind": "kernel", "event": "retransmit_synack", "local": SERVER,
                 "remote": CLIENT, "state": "SYN_RECEIVED"}]
    records += segment(1.0745, "thinkpad", ["SYN", "ACK"], 0, 1, analysis=["retransmission"])
    records.sort(key=sort_key)
    text = story.render(records)
    again = next(line for line in text.splitlines() if line.startswith("- **1.075 s** — thinkpad sends"))
    assert "the SYN+ACK again" in again and "This is a retransmission" in again
    assert "timer ran out while it waited for the ACK of its SYN+ACK" in again
    assert "at least 0.6 s to come back" in again and "[TCP Retransmission]" in again
    assert "thinkpad's kernel reports `retransmit_synack`" in text and "sends the SYN+ACK again" in text
    assert f"**{synack['t']:.3f} s** — thinkpad sends the SYN+ACK: it accepts" in text
    assert "12 segments crossed, 1 of them retransmissions" in text


def test_a_segment_seen_on_one_side_only_is_still_told(seed):
    records = [r for r in seed if not (r["kind"] == "packet" and r["dir"] == "in" and r["flags"] == ["SYN"])]
    text = story.render(records)
    assert "raspberrypi sends a SYN: it asks for a connection (No. 1), but thinkpad's capture never saw it " \
           "arrive" in text


def test_a_reset_closes_both_sides_and_is_told_with_its_cause(seed):
    records = until_step_5(seed)
    records += [step(1.7881, 6, "abort", "thinkpad"),
                {"t": 1.7886, "host": "thinkpad", "kind": "kernel", "event": "send_reset", "local": SERVER,
                 "remote": CLIENT, "state": "ESTABLISHED"},
                state(1.7886, "thinkpad", "ESTABLISHED", "CLOSED"),
                state(1.7889, "thinkpad", "LISTEN", "CLOSED", "0.0.0.0:9090", "0.0.0.0:*")]
    records += segment(2.0879, "thinkpad", ["RST", "ACK"], 7, 5)
    records += [{"t": 2.08795, "host": "raspberrypi", "kind": "kernel", "event": "receive_reset", "local": CLIENT,
                 "remote": SERVER, "state": "ESTABLISHED"},
                state(2.0880, "raspberrypi", "ESTABLISHED", "CLOSED"), step(2.1, 6, "abort", "thinkpad", "ok")]
    records.sort(key=sort_key)
    text = story.render(records)
    assert all(told(text, r) for r in records if r["kind"] == "state")
    mine = line_of(text, records[-2])
    assert "a RST arrived" in mine and "without the close handshake" in mine and "RST goes out" not in mine
    assert "Cause: the RST from thinkpad" in mine
    theirs = line_of(text, next(r for r in records if r["kind"] == "state" and r["host"] == "thinkpad"
                                and r["from"] == "ESTABLISHED"))
    assert "Cause: step 6, the application aborts (RST)" in theirs and "a RST goes out" in theirs
    assert "thinkpad sends a RST, which resets the connection" in text
    assert "`send_reset`" in text and "`receive_reset`" in text
    assert "thinkpad's application aborts its connection — data and a reset" not in text
    assert "## Step 6, 1.788 s to 2.100 s: thinkpad's application aborts its connection — a reset" in text
    assert "Both sides are now CLOSED" in mine


def test_a_simultaneous_close_goes_through_closing(seed):
    records = until_step_5(seed)
    records += [step(1.7881, 6, "close", "thinkpad,raspberrypi"),
                state(1.7886, "thinkpad", "ESTABLISHED", "FIN_WAIT1"),
                state(1.7887, "raspberrypi", "ESTABLISHED", "FIN_WAIT1"),
                state(1.7889, "thinkpad", "LISTEN", "CLOSED", "0.0.0.0:9090", "0.0.0.0:*")]
    records += segment(2.0886, "thinkpad", ["FIN", "ACK"], 7, 5)
    records += segment(2.0887, "raspberrypi", ["FIN", "ACK"], 5, 7)
    records += [state(2.08864, "raspberrypi", "FIN_WAIT1", "CLOSING"),
                state(2.08874, "thinkpad", "FIN_WAIT1", "CLOSING")]
    records += segment(2.3887, "raspberrypi", ["ACK"], 6, 8) + segment(2.3888, "thinkpad", ["ACK"], 8, 6)
    records += [state(2.38874, "thinkpad", "CLOSING", "TIME_WAIT"),
                state(2.38884, "raspberrypi", "CLOSING", "TIME_WAIT"),
                step(2.5, 6, "close", "thinkpad,raspberrypi", "ok"), step(2.6, 7, "wait", "-"),
                state(62.4, "thinkpad", "TIME_WAIT", "CLOSED"), state(62.5, "raspberrypi", "TIME_WAIT", "CLOSED"),
                step(62.6, 7, "wait", "-", "ok")]
    records.sort(key=sort_key)
    text = story.render(records)
    assert all(told(text, r) for r in records if r["kind"] == "state")
    closing = line_of(text, next(r for r in records if r["kind"] == "state" and r["host"] == "thinkpad"
                                 and r["to"] == "CLOSING"))
    assert "both sides sent a FIN at once" in closing and "Cause: the FIN from raspberrypi" in closing
    assert "Both sides are now CLOSING" in closing
    tw = line_of(text, next(r for r in records if r["kind"] == "state" and r["host"] == "raspberrypi"
                            and r["to"] == "TIME_WAIT"))
    assert "our FIN is acknowledged" in tw and "Cause: the ACK from thinkpad" in tw
    assert "raspberrypi sends an ACK that acknowledges thinkpad's FIN" in text
    assert "thinkpad sends an ACK that acknowledges raspberrypi's FIN" in text  # not its ACK: an ACK takes no Seq
    assert ": thinkpad's and raspberrypi's applications close their sockets — closing the connection" in text
    end = line_of(text, records[-2])
    assert "after 60.1 s" in end and "Both sides are now CLOSED" in end
    path = "CLOSED → SYN_SENT → ESTABLISHED → FIN_WAIT1 → CLOSING → TIME_WAIT → CLOSED"
    assert f"- raspberrypi (client): {path}" in text


def test_a_host_whose_capture_saw_nothing_is_still_named_by_its_sockets(seed):
    records = [r for r in seed if not (r["kind"] == "packet" and r["host"] == "raspberrypi")]
    text = story.render(records)
    assert "10.90.0.2's" not in text and "from 10.90.0.2 " not in text
    assert "but raspberrypi's capture never saw it arrive" in text


def test_backticks_in_a_payload_stay_inside_their_code_span():
    assert words.code("a``b") == '``` "a``b" ```'


def many_connections(n: int) -> list[dict]:
    """A listen, then ``n`` clients' SYNs: each connection's first changes on both hosts."""
    recs = [step(0.0, 1, "listen", "thinkpad"), state(0.01, "thinkpad", "CLOSED", "LISTEN", SERVER, "0.0.0.0:*"),
            step(0.1, 2, "connect", "raspberrypi", detail=f"{n} connections", app=True)]
    for k in range(n):
        client = f"10.90.0.2:{40000 + k}"
        t = 0.2 + k * 0.01
        recs += [state(t, "raspberrypi", "CLOSED", "SYN_SENT", client, SERVER),
                 state(t + 0.001, "thinkpad", "LISTEN", "SYN_RECEIVED", SERVER, client)]
    return recs


def test_what_many_connections_do_alike_is_told_once_and_counted():
    text = story.render(many_connections(200))
    assert text.count("LISTEN → SYN_RECEIVED**") == 2  # the first, and the count of the others
    assert "and 199 more like it since 0.201 s, on 200 connections in all: **thinkpad: LISTEN → SYN_RECEIVED**" in text
    assert "and 199 more like it since 0.200 s, on 200 connections in all: **raspberrypi: CLOSED → SYN_SENT**" in text
    assert len(text) < 6000
    few = story.render(many_connections(8))  # as many as MANY: each is told
    assert few.count("LISTEN → SYN_RECEIVED**") == 8 and "more like it" not in few
