"""The merge of tracepoint and inet_diag (probe/statemerge.py) when an inet_diag dump takes long.

A dump of a namespace with a thousand timewait sockets takes milliseconds, longer on a busy machine;
a state it shows was there at some moment from its begin to its end, not at the midpoint stamped
on its changes. Found by bench/completeness.py: at 1,000 connections the trace held spurious
listener CLOSED/LISTEN pairs and a FIN_WAIT2->CLOSED, FIN_WAIT1 for a socket going to TIME_WAIT.
"""

from __future__ import annotations

from probe.statemerge import StateMerger

MS = 1_000_000
L = ("0.0.0.0:9090", "0.0.0.0:*")
K = ("10.90.0.1:9090", "10.90.0.2:40000")


def tp(t_ms: float, key, frm: str, to: str, sk: int = 1) -> dict:
    return {"kind": "tracepoint", "t_ns": int(t_ms * MS), "local": key[0], "remote": key[1], "from": frm, "to": to,
            "sk": sk, "owned": True}


def change(t_ns: int, key, frm: str, to: str) -> dict:
    return {"kind": "state", "t_ns": t_ns, "local": key[0], "remote": key[1], "from": frm, "to": to,
            "source": "inet_diag"}


def poll(m: StateMerger, began_ms: float, ended_ms: float, *changes) -> None:
    lo, hi = int(began_ms * MS), int(ended_ms * MS)
    m.add_poll((lo + hi) // 2, [change((lo + hi) // 2, *c) for c in changes], (lo, hi))


def records(m: StateMerger, key) -> list[tuple]:
    return [(r["to"], r["source"], r["t_ns"] / MS) for r in m.flush(10**12, force=True)
            if (r["local"], r["remote"]) == key]


def test_a_dump_that_began_before_a_new_listener_does_not_make_the_listener_flicker():
    m = StateMerger(hold_ns=0, confirm=False)
    m.add_tracepoint(tp(0, L, "CLOSED", "LISTEN"))
    poll(m, 1, 2, (L, "CLOSED", "LISTEN"))
    m.add_tracepoint(tp(30, L, "LISTEN", "CLOSED"))
    m.add_tracepoint(tp(50, L, "CLOSED", "LISTEN", sk=2))
    poll(m, 48, 58, (L, "LISTEN", "CLOSED"))  # walked the listeners at 48 ms, stamped 53 ms
    poll(m, 68, 70, (L, "CLOSED", "LISTEN"))
    assert records(m, L) == [("LISTEN", "tracepoint", 0), ("CLOSED", "tracepoint", 30), ("LISTEN", "tracepoint", 50)]


def test_a_swap_is_decided_by_a_dump_that_began_after_it():
    m = StateMerger(hold_ns=0, confirm=False)
    m.add_tracepoint(tp(0, K, "SYN_RECEIVED", "ESTABLISHED"))
    poll(m, 1, 2, (K, "CLOSED", "ESTABLISHED"))
    m.add_tracepoint(tp(10, K, "ESTABLISHED", "FIN_WAIT1"))
    m.add_tracepoint(tp(20, K, "FIN_WAIT1", "FIN_WAIT2"))
    m.add_tracepoint(tp(20.1, K, "FIN_WAIT2", "CLOSED"))  # the swap for a timewait socket
    poll(m, 18, 28, (K, "ESTABLISHED", "FIN_WAIT1"))  # saw FIN_WAIT1 at 18 ms, stamped 23 ms
    poll(m, 40, 41, (K, "FIN_WAIT1", "TIME_WAIT"))
    assert records(m, K) == [("ESTABLISHED", "tracepoint", 0), ("FIN_WAIT1", "tracepoint", 10),
                             ("FIN_WAIT2", "tracepoint", 20), ("TIME_WAIT", "tracepoint+inet_diag", 20.1)]
