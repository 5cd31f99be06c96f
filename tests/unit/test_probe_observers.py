"""The probe's netstat change detection and state plumbing (probe/observers.py), without root.

:class:`NetstatPane` is pure; :class:`Observers` is driven with real kernel sockets on loopback in
the test's own namespace (inet_diag dumps need no privilege), without capture or tracefs.
"""

from __future__ import annotations

import asyncio
import socket

from probe.observers import NetstatPane, Observers


def row(state="ESTABLISHED", timer="keepalive (7.20/0/0)", send_q=0, foreign="10.90.0.2:40370"):
    return {"proto": "tcp", "recv_q": 0, "send_q": send_q, "local": "10.90.0.1:9090", "foreign": foreign,
            "state": state, "timer": timer}


def test_the_first_rows_are_due_and_the_same_rows_are_not():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row()], 10.0)
    assert not pane.due([row()], 10.5)


def test_a_timer_counting_down_is_no_change_but_another_timer_is():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row(timer="keepalive (7.20/0/0)")], 10.0)
    assert not pane.due([row(timer="keepalive (6.90/0/0)")], 10.2)
    assert pane.due([row(timer="on (0.20/1/0)")], 10.3)


def test_a_state_a_queue_or_a_socket_more_is_a_change():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row()], 10.0)
    assert pane.due([row(state="FIN_WAIT2")], 10.1)
    assert pane.due([row(state="FIN_WAIT2", send_q=5)], 10.2)
    assert pane.due([row(state="FIN_WAIT2", send_q=5), row(state="LISTEN", foreign="0.0.0.0:*")], 10.3)
    assert pane.due([], 10.4)
    assert not pane.due([], 10.5)


def test_unchanged_rows_are_sent_again_once_a_second():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row()], 10.0)
    assert not pane.due([row()], 10.99)
    assert pane.due([row()], 11.0)
    assert not pane.due([row()], 11.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_sockets_become_state_events_and_netstat_panes():
    port = _free_port()
    events: list[dict] = []
    obs = Observers("thinkpad", port, "127.0.0.1", "lo", events.append, current_pid=lambda: None)

    async def scenario() -> None:
        watch = asyncio.create_task(obs.watch_sockets(poll_hz=50))
        await asyncio.sleep(0.1)  # nothing on the port yet: one empty pane
        listener = socket.create_server(("127.0.0.1", port))
        await asyncio.sleep(0.1)
        client = socket.create_connection(("127.0.0.1", port))
        await asyncio.sleep(0.1)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        client.close()
        listener.close()

    asyncio.run(scenario())
    panes = [e["rows"] for e in events if e["kind"] == "netstat"]
    # a pane per change (empty, listening, connected), none for the polls in between
    assert [sorted(r["state"] for r in rows) for rows in panes] == [
        [], ["LISTEN"], ["ESTABLISHED", "ESTABLISHED", "LISTEN"]]
    states = [(e["to"], e["source"]) for e in events if e["kind"] == "state"]
    assert ("LISTEN", "inet_diag") in states and states.count(("ESTABLISHED", "inet_diag")) == 2
    assert all(isinstance(e["t_ns"], int) for e in events if e["kind"] == "state")


def test_counters_start_at_zero_and_read_the_merger():
    obs = Observers("thinkpad", _free_port(), "127.0.0.1", "lo", lambda body: None, current_pid=lambda: None)
    assert obs.counters() == {"statemerge_dropped_foreign": 0, "statemerge_dropped_unresolved": 0,
                              "kstates_missed_pages": 0}
    obs.merger.dropped_foreign, obs.merger.dropped_unresolved = 3, 1
    assert obs.counters()["statemerge_dropped_foreign"] == 3
    assert obs.counters()["statemerge_dropped_unresolved"] == 1
    assert obs.names == ["inet_diag", "capture", "console"]  # no tracefs opened
