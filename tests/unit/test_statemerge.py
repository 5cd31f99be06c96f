"""The state merger on synthetic event streams: tracepoint + inet_diag -> one record per transition."""

from probe.statemerge import StateMerger

MS = 1_000_000
SRV, CLI = "10.90.0.1:9090", "10.90.0.2:40000"
LISTENER = ("0.0.0.0:9090", "0.0.0.0:*")


def tp(t_ms, frm, to, local=SRV, remote=CLI, sk=1, owned=True):
    return {"kind": "tracepoint", "t_ns": int(t_ms * MS), "local": local, "remote": remote, "from": frm, "to": to,
            "sk": sk, "pid": 0, "owned": owned}


def dg(frm, to, local=SRV, remote=CLI):
    return {"local": local, "remote": remote, "from": frm, "to": to}


def run(events, end_ms=100_000):
    """events: (t_ms, "tp", ev) or (t_ms, "poll", [changes]); polls every 20 ms are not implied."""
    m = StateMerger()
    out = []
    for t_ms, what, ev in events:
        if what == "tp":
            m.add_tracepoint(ev)
        elif what == "kernel":
            m.add_kernel(ev)
        else:
            m.add_poll(int(t_ms * MS), ev)
        out += m.flush(int(t_ms * MS) + 5 * MS)  # arrival a few ms after the fact
    out += m.flush(int(end_ms * MS))
    return out


def states(out, key=(SRV, CLI)):
    return [(r["from"], r["to"], r["source"]) for r in out if r["kind"] == "state" and (r["local"], r["remote"]) == key]


def test_zero_delay_server_every_transition_from_the_tracepoint_and_time_wait_from_inet_diag():
    out = run([
        (0, "tp", tp(0, "CLOSED", "LISTEN", *LISTENER, sk=9)),
        (10, "poll", [dg("CLOSED", "LISTEN", *LISTENER)]),
        (100.0, "tp", tp(100.0, "LISTEN", "SYN_RECEIVED")),   # child at the final ACK
        (100.01, "tp", tp(100.01, "SYN_RECEIVED", "ESTABLISHED")),
        (110, "poll", [dg("LISTEN", "ESTABLISHED")]),          # the poll never saw SYN_RECEIVED
        (500.0, "tp", tp(500.0, "ESTABLISHED", "FIN_WAIT1")),
        (500.05, "tp", tp(500.05, "FIN_WAIT1", "FIN_WAIT2")),
        (500.06, "tp", tp(500.06, "FIN_WAIT2", "CLOSED")),     # orphan: swapped for a timewait socket
        (510, "poll", [dg("ESTABLISHED", "FIN_WAIT2")]),       # ... in substate FIN_WAIT2
        (900, "poll", [dg("FIN_WAIT2", "TIME_WAIT")]),         # the peer's FIN
        (60_900, "poll", [dg("TIME_WAIT", "CLOSED")]),         # the timer ran out
    ])
    assert states(out) == [
        ("LISTEN", "SYN_RECEIVED", "tracepoint"), ("SYN_RECEIVED", "ESTABLISHED", "tracepoint"),
        ("ESTABLISHED", "FIN_WAIT1", "tracepoint"), ("FIN_WAIT1", "FIN_WAIT2", "tracepoint"),
        ("FIN_WAIT2", "TIME_WAIT", "inet_diag"), ("TIME_WAIT", "CLOSED", "inet_diag")]
    assert states(out, LISTENER) == [("CLOSED", "LISTEN", "tracepoint")]
    times = [r["t_ns"] for r in out if (r["local"], r["remote"]) == (SRV, CLI)]
    assert times == [100 * MS, int(100.01 * MS), 500 * MS, int(500.05 * MS), 900 * MS, 60_900 * MS]


def test_fin_wait2_to_close_then_time_wait_takes_the_tracepoint_time():
    out = run([
        (0, "tp", tp(0, "CLOSED", "SYN_SENT", local="10.90.0.2:0", remote=SRV, sk=5)),
        (0.05, "tp", tp(0.05, "SYN_SENT", "ESTABLISHED", local=CLI, remote=SRV, sk=5)),
        (200, "tp", tp(200, "ESTABLISHED", "FIN_WAIT1", local=CLI, remote=SRV, sk=5)),
        (200.1, "tp", tp(200.1, "FIN_WAIT1", "FIN_WAIT2", local=CLI, remote=SRV, sk=5)),
        (300, "tp", tp(300, "FIN_WAIT2", "CLOSED", local=CLI, remote=SRV, sk=5)),
        (301, "poll", [dg("FIN_WAIT2", "TIME_WAIT", local=CLI, remote=SRV)]),  # began before the swap: waits
        (320, "poll", []),
    ])
    got = [(r["from"], r["to"], r["source"], r["t_ns"]) for r in out]
    assert got == [("CLOSED", "SYN_SENT", "tracepoint", 0), ("SYN_SENT", "ESTABLISHED", "tracepoint", int(0.05 * MS)),
                   ("ESTABLISHED", "FIN_WAIT1", "tracepoint", 200 * MS),
                   ("FIN_WAIT1", "FIN_WAIT2", "tracepoint", int(200.1 * MS)),
                   ("FIN_WAIT2", "TIME_WAIT", "tracepoint+inet_diag", 300 * MS)]
    assert got[0] and out[0]["local"] == CLI  # the port the kernel chose after the event


def test_a_swap_with_no_timewait_socket_is_a_close():
    out = run([(0, "tp", tp(0, "CLOSED", "SYN_SENT", local=CLI, remote=SRV)),
               (1, "tp", tp(1, "SYN_SENT", "ESTABLISHED", local=CLI, remote=SRV)),
               (5, "tp", tp(5, "ESTABLISHED", "CLOSING", local=CLI, remote=SRV)),
               (6, "tp", tp(6, "CLOSING", "CLOSED", local=CLI, remote=SRV)),
               (30, "poll", [])])
    assert states(out, (CLI, SRV))[-1] == ("CLOSING", "CLOSED", "tracepoint")


def test_with_a_delay_syn_received_comes_from_inet_diag_at_the_syn_and_is_not_repeated():
    out = run([
        (1000, "poll", [dg("LISTEN", "SYN_RECEIVED")]),       # request socket, right after the SYN
        (7000, "tp", tp(7000, "LISTEN", "SYN_RECEIVED")),     # child socket at the final ACK
        (7000.01, "tp", tp(7000.01, "SYN_RECEIVED", "ESTABLISHED")),
        (7010, "poll", [dg("SYN_RECEIVED", "ESTABLISHED")]),
    ])
    assert [(r["from"], r["to"], r["source"], r["t_ns"]) for r in out] == [
        ("LISTEN", "SYN_RECEIVED", "inet_diag", 1000 * MS), ("SYN_RECEIVED", "ESTABLISHED", "tracepoint", int(7000.01 * MS))]


def test_a_poll_read_before_the_tracepoint_lines_is_held_not_duplicated():
    m = StateMerger(hold_ns=100 * MS)
    m.add_poll(50 * MS, [dg("CLOSE_WAIT", "LAST_ACK")])
    assert m.flush(60 * MS) == []                       # held
    m.add_tracepoint(tp(49.9, "CLOSE_WAIT", "LAST_ACK"))  # read later, happened earlier
    m.add_tracepoint(tp(50.1, "LAST_ACK", "CLOSED"))      # within the poll's uncertainty
    out = m.flush(300 * MS)
    assert [(r["to"], r["source"]) for r in out] == [("LAST_ACK", "tracepoint"), ("CLOSED", "tracepoint")]


def test_inet_diag_alone_when_there_is_no_tracepoint():
    m = StateMerger(hold_ns=0)
    m.add_poll(10 * MS, [dg("CLOSED", "LISTEN", *LISTENER)])
    m.add_poll(30 * MS, [dg("LISTEN", "ESTABLISHED")])
    m.add_poll(50 * MS, [dg("ESTABLISHED", "TIME_WAIT")])
    out = m.flush(50 * MS + 2 * MS)
    assert [(r["from"], r["to"], r["source"]) for r in out] == [
        ("CLOSED", "LISTEN", "inet_diag"), ("LISTEN", "ESTABLISHED", "inet_diag"), ("ESTABLISHED", "TIME_WAIT", "inet_diag")]


def test_tracepoint_events_of_two_cpus_read_out_of_order_come_out_in_time_order():
    m = StateMerger()
    m.add_tracepoint(tp(2, "SYN_RECEIVED", "ESTABLISHED"))  # CPU 1's page read first
    m.add_tracepoint(tp(1, "LISTEN", "SYN_RECEIVED"))
    out = m.flush(500 * MS)
    assert [(r["from"], r["to"]) for r in out] == [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED")]


def test_syn_sent_without_port_is_named_by_inet_diag_when_the_answer_is_slow():
    out = run([
        (0, "tp", tp(0, "CLOSED", "SYN_SENT", local="10.90.0.2:0", remote=SRV, sk=7)),
        (15, "poll", [dg("CLOSED", "SYN_SENT", local=CLI, remote=SRV)]),
        (6000, "tp", tp(6000, "SYN_SENT", "ESTABLISHED", local=CLI, remote=SRV, sk=7)),
    ])
    assert [(r["local"], r["from"], r["to"], r["source"], r["t_ns"]) for r in out] == [
        (CLI, "CLOSED", "SYN_SENT", "tracepoint", 0), (CLI, "SYN_SENT", "ESTABLISHED", "tracepoint", 6000 * MS)]


def test_kernel_events_pass_through_with_the_socket_state_of_their_time():
    ev = {"kind": "kernel", "event": "receive_reset", "t_ns": 10 * MS, "local": SRV, "remote": CLI, "state": None}
    out = run([(1, "tp", tp(1, "LISTEN", "SYN_RECEIVED")), (2, "tp", tp(2, "SYN_RECEIVED", "ESTABLISHED")),
               (10, "kernel", ev), (10.01, "tp", tp(10.01, "ESTABLISHED", "CLOSED"))])
    kern = [r for r in out if r["kind"] == "kernel"]
    assert kern == [{"kind": "kernel", "event": "receive_reset", "t_ns": 10 * MS, "local": SRV, "remote": CLI,
                     "state": "ESTABLISHED"}]
    assert states(out)[-1] == ("ESTABLISHED", "CLOSED", "tracepoint")


def test_never_a_duplicate_and_time_ordered_per_socket():
    out = run([
        (0, "tp", tp(0, "LISTEN", "SYN_RECEIVED")), (0.1, "tp", tp(0.1, "SYN_RECEIVED", "ESTABLISHED")),
        (0.2, "poll", [dg("LISTEN", "ESTABLISHED")]), (20, "poll", []),
        (40, "tp", tp(40, "ESTABLISHED", "CLOSE_WAIT")), (40.5, "poll", [dg("ESTABLISHED", "CLOSE_WAIT")]),
        (80, "tp", tp(80, "CLOSE_WAIT", "LAST_ACK")), (80.1, "tp", tp(80.1, "LAST_ACK", "CLOSED")),
        (81, "poll", [dg("CLOSE_WAIT", "CLOSED")]),
    ])
    s = [r for r in out if r["kind"] == "state"]
    assert all(a["to"] != b["to"] for a, b in zip(s, s[1:]))
    assert all(a["to"] == b["from"] for a, b in zip(s, s[1:]))
    assert [r["t_ns"] for r in s] == sorted(r["t_ns"] for r in s)
    assert [r["to"] for r in s] == ["SYN_RECEIVED", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert {r["source"] for r in s} == {"tracepoint"}


def test_a_socket_of_another_namespace_with_the_same_addresses_is_left_out():
    # the tracepoint sees every namespace's sockets; this one ran in no process of ours and
    # inet_diag (this namespace only) never showed it
    m = StateMerger()
    m.add_tracepoint(tp(0, "ESTABLISHED", "CLOSE_WAIT", owned=False, sk=3))
    m.add_tracepoint(tp(0.1, "CLOSE_WAIT", "LAST_ACK", owned=False, sk=3))
    assert m.flush(500 * MS) == [] and m.flush(2000 * MS) == [] and m.dropped_foreign == 1


def test_a_socket_inet_diag_shows_is_ours_with_the_tracepoint_times():
    out = run([(0, "tp", tp(0, "LISTEN", "SYN_RECEIVED", owned=False)),
               (0.01, "tp", tp(0.01, "SYN_RECEIVED", "ESTABLISHED", owned=False)),
               (15, "poll", [dg("LISTEN", "ESTABLISHED")])])
    assert [(r["to"], r["source"], r["t_ns"]) for r in out] == [
        ("SYN_RECEIVED", "tracepoint", 0), ("ESTABLISHED", "tracepoint", int(0.01 * MS))]


def orphan_until_swap():
    events = [
        (100.0, "tp", tp(100.0, "LISTEN", "SYN_RECEIVED")),
        (100.01, "tp", tp(100.01, "SYN_RECEIVED", "ESTABLISHED")),
        (500.0, "tp", tp(500.0, "ESTABLISHED", "FIN_WAIT1")),
        (500.05, "tp", tp(500.05, "FIN_WAIT1", "FIN_WAIT2")),
        (500.06, "tp", tp(500.06, "FIN_WAIT2", "CLOSED")),     # orphan: swapped, still in substate FIN_WAIT2
    ]
    return events


def run_with_fin(events, fin_ms, end_ms=100_000):
    m = StateMerger()
    m.add_fin(SRV, CLI, int(fin_ms * MS))  # the capture's record of the peer's FIN (arrives early enough)
    out = []
    for t_ms, what, ev in events:
        m.add_tracepoint(ev) if what == "tp" else m.add_poll(int(t_ms * MS), ev)
        out += m.flush(int(t_ms * MS) + 5 * MS)
    return out + m.flush(int(end_ms * MS))


def test_orphan_time_wait_takes_the_peers_fin_when_the_first_dump_already_shows_it():
    # the peer's FIN lands 12 ms after the swap, before the next dump: that dump shows TIME_WAIT
    out = run_with_fin(orphan_until_swap() + [(520, "poll", [dg("ESTABLISHED", "TIME_WAIT")])], fin_ms=512.0)
    tw = [r for r in out if r["to"] == "TIME_WAIT"]
    assert [(r["from"], r["t_ns"]) for r in tw] == [("FIN_WAIT2", 512 * MS)]  # not the swap's 500.06


def test_orphan_time_wait_seen_by_a_later_dump_takes_the_peers_fin():
    out = run_with_fin(orphan_until_swap() + [(510, "poll", [dg("ESTABLISHED", "FIN_WAIT2")]),
                                             (900, "poll", [dg("FIN_WAIT2", "TIME_WAIT")])], fin_ms=880.0)
    tw = [r for r in out if r["to"] == "TIME_WAIT"]
    assert [(r["source"], r["t_ns"]) for r in tw] == [("inet_diag", 880 * MS)]  # not the dump's 900


def test_a_fin_that_caused_the_swap_leaves_the_swap_time():
    events = [(100.0, "tp", tp(100.0, "LISTEN", "SYN_RECEIVED")), (100.01, "tp", tp(100.01, "SYN_RECEIVED", "ESTABLISHED")),
              (500.0, "tp", tp(500.0, "ESTABLISHED", "FIN_WAIT1")), (500.05, "tp", tp(500.05, "FIN_WAIT1", "FIN_WAIT2")),
              (700.0, "tp", tp(700.0, "FIN_WAIT2", "CLOSED")),   # the peer's FIN made the swap
              (720, "poll", [dg("ESTABLISHED", "TIME_WAIT")])]
    out = run_with_fin(events, fin_ms=699.99)  # captured a few us before TCP processed it
    assert [(r["source"], r["t_ns"]) for r in out if r["to"] == "TIME_WAIT"] == [("tracepoint+inet_diag", 700 * MS)]
