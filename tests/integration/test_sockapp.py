"""The probe's own application (probe/sockapp.py) between two lab namespaces, on real kernel TCP:
200 connections at once through the seed's storyline, a refused storm, and what it refuses to do."""

import collections
import time

import pytest

from probe.endpoint import Endpoint, EndpointError
from probe.endpoints import Endpoints
from probe.labnet import LabAddressError
from probe.sockapp import AppError, SocketApp
from tests.nsthread import NetnsThread
from tests.seedrun import PORT

pytestmark = pytest.mark.integration
N = 200


def states(host) -> collections.Counter:
    """The states of the lab port's connection sockets in ``host``'s namespace (ss), by netstat name."""
    out = host.run("ss", "-Htan", f"( sport = :{PORT} or dport = :{PORT} )").stdout
    return collections.Counter(line.split()[0] for line in out.splitlines() if line.strip())


def wait(what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what.__doc__ or what}")


class Console(list):
    def __call__(self, text, stream, local=None, remote=None):
        self.append((stream, text, local, remote))

    def lines(self, stream):
        return [c for c in self if c[0] == stream]


def test_200_connections_through_the_seed_storyline(netns_pair):
    a, b = netns_pair.a, netns_pair.b
    ca, cb = Console(), Console()
    with NetnsThread(a.ns) as ta, NetnsThread(b.ns) as tb:
        server, client = SocketApp(ca), SocketApp(cb)
        ta.run(server.listen(PORT, N))
        tb.run(client.connect(a.ip, PORT, N, lab=(b.ifname, b.ip)))
        try:
            wait(lambda: states(a)["ESTAB"] == N and states(b)["ESTAB"] == N and len(server.conns) == N)
            assert states(a)["LISTEN"] == 1  # the listener stays open while it serves, as nc -l's does
            assert ta.run(server.send("Hello")) == N
            wait(lambda: len(cb.lines("stdout")) == N)
            assert tb.run(client.send("Bye")) == N
            wait(lambda: len(ca.lines("stdout")) == N)
            # every connection printed its line once, named by its own address pair
            assert {c[1] for c in cb.lines("stdout")} == {"Hello"}
            assert len({(c[2], c[3]) for c in cb.lines("stdout")}) == N
            assert {c[3].rsplit(":", 1)[0] for c in ca.lines("stdout")} == {b.ip}
            assert ca.lines("stdin") == [("stdin", "Hello", None, None)]  # one typed line, sent N times

            ta.run(server.close())  # the server application ends first: FINs, not resets
            wait(lambda: states(a)["FIN-WAIT-2"] == N and states(b)["CLOSE-WAIT"] == N)
            assert states(a)["LISTEN"] == 0 and not server.running
            assert client.running  # a peer's FIN does not end it, as nc with its stdin open
            tb.run(client.close())
            wait(lambda: states(a)["TIME-WAIT"] == N and not states(b))
            assert not client.running
        finally:
            ta.run(server.abort())
            tb.run(client.abort())


def test_a_refused_storm_is_counted_and_leaves_nothing(netns_pair):
    with NetnsThread(netns_pair.b.ns) as tb:
        app = SocketApp(Console())
        tb.run(app.connect(netns_pair.a.ip, PORT, 30))  # nobody listens: 30 RSTs
        wait(lambda: not app.running)
        assert app.failed == 30 and app.conns == []
        assert not states(netns_pair.b)


def test_what_the_application_refuses(netns_pair):
    a = netns_pair.a
    with NetnsThread(a.ns) as ta:
        app = SocketApp(Console())
        for bad in (0, 513, True):
            with pytest.raises(AppError, match="outside 1..512"):
                ta.run(app.listen(PORT, bad))
        with pytest.raises(AppError, match="no open connection"):
            ta.run(app.send("x"))
        with pytest.raises(LabAddressError):
            ta.run(app.connect("8.8.8.8", PORT, 2, lab=(a.ifname, a.ip)))
        with pytest.raises(LabAddressError):
            ta.run(app.connect("-lk", PORT, 2))
        ta.run(app.listen(PORT, 2))
        try:
            with pytest.raises(AppError, match="already runs"):
                ta.run(app.listen(PORT + 1, 2))
            # one application per host: nc is refused while the probe's own runs, and the other way round
            ends = Endpoints(Endpoint(Console()), app)
            with pytest.raises(EndpointError, match="a listener and 0 connection.* already runs"):
                ta.run(ends.listen(PORT + 1))
            assert ends.running and ends.pid is not None
        finally:
            ta.run(app.abort())
        assert not app.running and not states(a)
        ends = Endpoints(Endpoint(Console()), SocketApp(Console()))
        ta.run(ends.listen(PORT))  # one connection: nc, the seed's own tool
        try:
            assert ends.nc.running and not ends.app.running and ends.describe().startswith("nc pid ")
            with pytest.raises(EndpointError, match="already runs"):
                ta.run(ends.connect("10.90.0.2", PORT, count=5))
        finally:
            ta.run(ends.abort())
        assert not ends.running


def out_rsts(host) -> int:
    """The namespace's count of TCP resets sent (/proc/net/snmp, Tcp OutRsts)."""
    lines = [l.split() for l in host.run("cat", "/proc/net/snmp").stdout.splitlines() if l.startswith("Tcp:")]
    return int(dict(zip(lines[0], lines[1]))["OutRsts"])


def test_abort_resets_every_connection(netns_pair):
    a, b = netns_pair.a, netns_pair.b
    with NetnsThread(a.ns) as ta, NetnsThread(b.ns) as tb:
        server, client = SocketApp(Console()), SocketApp(Console())
        ta.run(server.listen(PORT, 3))
        tb.run(client.connect(a.ip, PORT, 3, lab=(b.ifname, b.ip)))
        try:
            wait(lambda: states(a)["ESTAB"] == 3 and len(server.conns) == 3)
            before = out_rsts(a)
            ta.run(server.abort())
            assert out_rsts(a) - before == 3  # an RST each, no FIN: no FIN_WAIT, no TIME_WAIT behind
            assert not states(a)
            wait(lambda: not states(b) and all(c.eof for c in client.conns))  # reset: gone, not CLOSE_WAIT
        finally:
            ta.run(server.abort())
            tb.run(client.abort())


def test_nc_is_reset_through_its_borrowed_socket(netns_pair):
    a, b = netns_pair.a, netns_pair.b
    with NetnsThread(a.ns) as ta, NetnsThread(b.ns) as tb:
        server, client = Endpoint(Console()), Endpoint(Console())
        ta.run(server.listen(PORT))
        tb.run(client.connect(a.ip, PORT))
        try:
            wait(lambda: states(a)["ESTAB"] == 1 and states(b)["ESTAB"] == 1)
            before = out_rsts(a)
            assert ta.run(server.reset()) is True and not server.running
            assert out_rsts(a) - before == 1 and not states(a)  # no FIN_WAIT1/2, no TIME_WAIT
            wait(lambda: not client.running)  # the client's nc sees the reset and ends
            assert not states(b)
            assert ta.run(server.reset()) is None  # nothing runs
        finally:
            ta.run(server.abort())
            tb.run(client.abort())


def test_named_connections_are_acted_on_one_at_a_time(netns_pair):
    """Two named connections from one client (tcplab.actions.conn): each step on one leaves the other."""
    a, b = netns_pair.a, netns_pair.b
    ca, cb = Console(), Console()
    with NetnsThread(a.ns) as ta, NetnsThread(b.ns) as tb:
        server, client = Endpoints(Endpoint(ca), SocketApp(ca)), Endpoints(Endpoint(cb), SocketApp(cb))
        ta.run(server.listen(PORT, count=2, app=True))
        try:
            assert server.app.running and not server.nc.running
            pa = tb.run(client.connect(a.ip, PORT, lab=(b.ifname, b.ip), app=True))
            pb = tb.run(client.connect(a.ip, PORT, lab=(b.ifname, b.ip), app=True))
            assert pa[1] == pb[1] == f"{a.ip}:{PORT}" and pa[0] != pb[0] and pa[0].startswith(f"{b.ip}:")
            wait(lambda: states(a)["ESTAB"] == 2 and len(server.app.conns) == 2 and len(client.app.conns) == 2)
            sa, sb = pa[::-1], pb[::-1]  # as the server sees them
            with pytest.raises(AppError, match="listens here"):
                ta.run(server.connect(b.ip, PORT, app=True))

            tb.run(client.send("to a", conn=pa))
            wait(lambda: ca.lines("stdout"))
            assert ca.lines("stdout") == [("stdout", "to a", *sa)] and cb.lines("stdin") == [("stdin", "to a", *pa)]
            ta.run(server.read(False, conn=sb))  # b's reader stops; a's goes on
            tb.run(client.send("to b", conn=pb))
            tb.run(client.send("to a again", conn=pa))
            wait(lambda: len(ca.lines("stdout")) == 2)
            time.sleep(0.2)
            assert [c[1] for c in ca.lines("stdout")] == ["to a", "to a again"]
            ta.run(server.read(True, conn=sb))
            wait(lambda: len(ca.lines("stdout")) == 3)
            assert ca.lines("stdout")[2] == ("stdout", "to b", *sb)

            before = out_rsts(b)
            assert tb.run(client.abort(conn=pb)) is True
            assert out_rsts(b) - before == 1
            wait(lambda: states(a)["ESTAB"] == 1 and len(server.app.conns) == 2)  # b is gone on the server's kernel
            assert states(b) == {"ESTAB": 1} and client.running and states(a)["LISTEN"] == 1
            with pytest.raises(AppError, match=f"no open connection {pb[0]} -> {pb[1]}"):
                tb.run(client.send("x", conn=pb))
            with pytest.raises(EndpointError, match="the probe's application does not run"):
                tb.run(Endpoints(Endpoint(cb), SocketApp(cb)).shutdown(conn=pb))

            ta.run(server.close(conn=sa))  # a, in order: the server first; its listener stays
            wait(lambda: states(a)["FIN-WAIT-2"] == 1 and states(b)["CLOSE-WAIT"] == 1)
            assert states(a)["LISTEN"] == 1 and server.running
            tb.run(client.close(conn=pa))  # the client's last connection: its application ends
            wait(lambda: states(a)["TIME-WAIT"] == 1 and not states(b))
            assert not client.running
        finally:
            ta.run(server.abort())
            tb.run(client.abort())
        assert not server.running and not states(b)


def test_a_named_connection_in_its_handshake_is_the_applications_and_may_be_ended(netns_pair):
    """A named connection is the application's from its SYN on: a close or an abort ends it in SYN_SENT,
    a send says it is still in its handshake (10.90.0.99: an address of the lab's own bridge nobody has,
    so the SYN waits for an ARP answer that never comes)."""
    b = netns_pair.b
    with NetnsThread(b.ns) as tb:
        client = Endpoints(Endpoint(Console()), SocketApp(Console()))
        pair = tb.run(client.connect("10.90.0.99", PORT, lab=(b.ifname, b.ip), app=True))
        try:
            assert client.running and states(b) == {"SYN-SENT": 1}
            with pytest.raises(AppError, match="is still in its handshake"):
                tb.run(client.send("x", conn=pair))
            assert tb.run(client.abort(conn=pair)) is True
            assert not client.running and not states(b)
        finally:
            tb.run(client.abort())


def test_ending_one_connection_cancels_what_was_still_being_sent_on_it(netns_pair):
    """A send of bytes a stopped reader does not take, then that connection aborted: the write is cancelled
    before its socket closes, so the next connection (which may get the same descriptor) is served."""
    a, b = netns_pair.a, netns_pair.b
    with NetnsThread(a.ns) as ta, NetnsThread(b.ns) as tb:
        server, client = SocketApp(Console()), Endpoints(Endpoint(Console()), SocketApp(Console()))
        ta.run(server.listen(PORT, 2))
        try:
            pa = tb.run(client.connect(a.ip, PORT, lab=(b.ifname, b.ip), app=True))
            wait(lambda: len(server.conns) == 1 and states(b) == {"ESTAB": 1})
            ta.run(server.read(False))
            sending = next(iter(client.app.conns)).sending
            for _ in range(40):  # until the server's window and the client's buffer are full: still sending
                tb.run(client.send_bytes(65_000, conn=pa))
                time.sleep(0.05)
                if any(not t.done() for t in sending):
                    break
            assert sending and any(not t.done() for t in sending)
            tb.run(client.abort(conn=pa))
            assert all(t.done() for t in sending) and not client.running
            pb = tb.run(client.connect(a.ip, PORT, lab=(b.ifname, b.ip), app=True))
            wait(lambda: [c for c in client.app.conns if c.reader is not None and (c.local, c.remote) == pb])
            tb.run(client.send("after", conn=pb))
            ta.run(server.read(True))
            wait(lambda: any(c.eof for c in server.conns))  # a's reset reached the server
        finally:
            ta.run(server.abort())
            tb.run(client.abort())
