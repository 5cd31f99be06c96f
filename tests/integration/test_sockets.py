"""SocketWatcher on real kernel TCP between two namespaces, driven by real nc."""

import re
import shutil
import subprocess
import time

import pytest

from probe.sockets import SocketWatcher, listening
from tests.nsthread import NetnsThread
from tests.seedrun import PORT, SYN_ACK, drop, run_conversation
from tests.unit.test_netstat_rows import netstat_fields

pytestmark = pytest.mark.integration


def test_seed_conversation_state_sequences(netns_pair):
    a, b = run_conversation(netns_pair, gates=True)
    assert a.listener() == ["LISTEN", "CLOSED"]
    assert a.states() == ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    assert b.listener() == []
    assert b.states() == ["CLOSED", "SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    # one connection, named alike from both sides; times are this machine's CLOCK_MONOTONIC
    conn_a = {(c["local"], c["remote"]) for c in a.changes if c["remote"] != "0.0.0.0:*"}
    conn_b = {(c["remote"], c["local"]) for c in b.changes}
    assert conn_a == conn_b and len(conn_a) == 1
    t = [c["t_ns"] for c in a.changes + b.changes]
    assert all(0 < time.monotonic_ns() - x < 60e9 for x in t)
    assert all(c["kind"] == "state" and c["source"] == "inet_diag" for c in a.changes + b.changes)
    # the server is left in TIME_WAIT with netstat's timewait timer; the client has no socket left
    (row,) = a.rows
    assert row["state"] == "TIME_WAIT" and re.fullmatch(r"timewait \(5\d\.\d\d/0/0\)", row["timer"])
    assert b.rows == []


def _netstat_tcp_lines(host):
    out = host.run("netstat", "-nao").stdout.splitlines()
    return [line for line in out if line.startswith("tcp ")]


def _no_expiry(line):
    return re.sub(r"\(\d+\.\d\d/", "(*/", line)


@pytest.mark.skipif(shutil.which("netstat") is None, reason="net-tools (netstat) not installed")
def test_rows_are_what_netstat_prints(netns_pair):
    a, b = netns_pair.a, netns_pair.b
    with NetnsThread(a.ns) as ta:
        watcher = ta.call(SocketWatcher, PORT)
        srv = a.popen("/usr/bin/nc", "-l", str(PORT), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        cli = None
        try:
            deadline = time.monotonic() + 5
            while not ta.call(listening, PORT):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with drop(a, SYN_ACK):  # a request socket (SYN_RECV, SYN-ACK timer on) next to the listener
                cli = b.popen("/usr/bin/nc", str(a.ip), str(PORT), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
                time.sleep(0.3)
                _, rows = watcher.poll()
                lines = _netstat_tcp_lines(a)
            assert [r["state"] for r in rows] == ["LISTEN", "SYN_RECV"]
            assert [netstat_fields(r)[:6] + [_no_expiry(r["timer"])] for r in rows] == \
                [x.split(None, 6)[:6] + [_no_expiry(x.split(None, 6)[6])] for x in lines]
        finally:
            for p in (srv, cli):
                if p is not None:
                    p.kill()
                    p.wait()
            watcher.close()


def test_poll_is_cheap(netns_pair):
    with NetnsThread(netns_pair.a.ns) as ta:
        with ta.call(SocketWatcher, PORT) as watcher:
            t0 = time.perf_counter()
            for _ in range(200):
                watcher.poll()
            per_poll_ms = (time.perf_counter() - t0) / 200 * 1000
    assert per_poll_ms < 5
