"""The probe's observers (probe/observers.py) driven with real kernel sockets on loopback, in the
test's own namespace (inet_diag dumps need no privilege), without capture or tracefs.

Not a unit test only because inet_diag goes over netlink, which qemu-user does not emulate: the
unit tests of the probe also run in the arm chroots (test_arch_install), these do not.
"""

from __future__ import annotations

import asyncio
import socket

from probe.observers import Observers


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
