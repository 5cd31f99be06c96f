"""Endpoint runs the real netcat-openbsd in a lab namespace: listen, connect, send, close, abort, sweep."""

import asyncio
import os
import subprocess
import time

import pytest

from probe.endpoint import PID_FILE, Endpoint, EndpointError, sweep
from probe.sockets import listening
from tests.nsthread import NetnsThread
from tests.seedrun import PORT, run_conversation

pytestmark = pytest.mark.integration


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_seed_conversation_at_zero_delay(netns_pair):
    """No gates: consoles and the ends of the state sequences; short states may be missed."""
    a, b = run_conversation(netns_pair, gates=False)
    assert a.console == [("stdin", "Hello"), ("stdout", "Bye")]
    assert b.console == [("stdout", "Hello"), ("stdin", "Bye")]
    assert a.returncode == b.returncode == -2  # SIGINT, as the seed's Ctrl-C
    full_a = ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    full_b = ["CLOSED", "SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    sa, sb = a.states(), b.states()
    # a socket first seen past SYN_RECEIVED comes "from CLOSED" (only SYN_RECEIVED comes from LISTEN)
    assert set(sa[1:]) <= set(full_a) and sa[0] in ("CLOSED", "LISTEN")
    assert sa[-1] == "TIME_WAIT" and "ESTABLISHED" in sa and "FIN_WAIT2" in sa
    assert set(sb) <= set(full_b) and sb[-1] == "CLOSED" and "CLOSE_WAIT" in sb
    assert [c for c in a.changes if c["remote"] == "0.0.0.0:*"][0]["to"] == "LISTEN"
    # the server's FIN went first (the film depends on it)
    fins = [p for p in a.packets if "FIN" in p["flags"]]
    assert fins[0]["dir"] == "out"


def test_listen_waits_for_the_socket_and_records_the_pid(netns_pair, tmp_path):
    console = []
    with NetnsThread(netns_pair.a.ns) as ta:
        ep = Endpoint(lambda t, s: console.append((s, t)), pid_dir=tmp_path)
        ta.run(ep.listen(PORT))
        try:
            assert ta.call(listening, PORT) and ep.running
            pid, identity = (tmp_path / PID_FILE).read_text().split()
            boot = open("/proc/sys/kernel/random/boot_id").read().strip()
            assert pid == str(ep.pid) and identity.startswith(boot + ":")
            with pytest.raises(EndpointError):
                ta.run(ep.connect("10.90.0.2", PORT))  # one nc at a time
        finally:
            rc = ta.run(ep.close())
    assert rc == -2 and not ep.running
    assert not (tmp_path / PID_FILE).exists()


def test_listen_fails_when_the_application_exits(netns_pair):
    with NetnsThread(netns_pair.a.ns) as ta:
        ep = Endpoint(lambda t, s: None, nc="/bin/false")  # an nc that gives up at once
        try:
            with pytest.raises(EndpointError, match="status 1"):
                ta.run(ep.listen(PORT))
            with pytest.raises(EndpointError, match="cannot run"):
                ta.run(Endpoint(lambda t, s: None, nc="/nonexistent/nc").connect("10.90.0.2", PORT))
        finally:
            ta.run(ep.abort())
    assert not ep.running


def test_close_escalates_when_sigint_is_ignored(netns_pair, tmp_path):
    stubborn = tmp_path / "nc"  # stands in for an nc that ignores Ctrl-C
    # it says "ready" once the trap is set: a SIGINT before that would end the shell (a race, seen in CI)
    stubborn.write_text("#!/bin/sh\ntrap '' INT\necho ready\nexec sleep 30\n")
    stubborn.chmod(0o755)
    lines = []
    with NetnsThread(netns_pair.a.ns) as ta:
        ep = Endpoint(lambda t, s: lines.append(t), nc=str(stubborn), pid_dir=tmp_path)
        ta.run(ep.connect("10.90.0.2", PORT))
        deadline = time.monotonic() + 5
        while "ready" not in lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "ready" in lines
        t0 = time.monotonic()
        rc = ta.run(ep.close(timeout=0.3))
    assert rc == -15 and 0.3 <= time.monotonic() - t0 < 3
    assert not (tmp_path / PID_FILE).exists()


def test_abort_kills(netns_pair):
    with NetnsThread(netns_pair.b.ns) as tb:
        ep = Endpoint(lambda t, s: None)
        tb.run(ep.connect("10.90.0.1", PORT))  # refused or not, abort must leave nothing
        pid = ep.pid
        rc = tb.run(ep.abort())
    assert rc in (-9, 1) and not _alive(pid)
    with pytest.raises(EndpointError):
        asyncio.run(ep.send("too late"))


def test_sweep_kills_a_left_behind_nc_but_nothing_else(netns_pair, tmp_path):
    nc = netns_pair.a.popen("/usr/bin/nc", "-l", str(PORT), stdin=subprocess.PIPE)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5  # `ip netns exec` becomes nc by exec
        while not open(f"/proc/{nc.pid}/cmdline", "rb").read().startswith(b"/usr/bin/nc\0"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        (tmp_path / PID_FILE).write_text(f"{nc.pid} {boot}:1\n")  # an nc, with the pid, but started later
        assert sweep(tmp_path) == [] and nc.poll() is None and not (tmp_path / PID_FILE).exists()
        (tmp_path / PID_FILE).write_text(f"{nc.pid}\n")  # a pid file of before the identity: the pid alone
        assert sweep(tmp_path) == [nc.pid]
        assert nc.wait(5) == -9 and not (tmp_path / PID_FILE).exists()
        (tmp_path / PID_FILE).write_text(f"{sleeper.pid}\n")  # pid reused by something else
        assert sweep(tmp_path) == [] and _alive(sleeper.pid)
        assert not (tmp_path / PID_FILE).exists()
        assert sweep(tmp_path) == []
    finally:
        for p in (nc, sleeper):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert os.path.isdir(tmp_path)
