"""The seed's nc conversation between two namespaces, observed by the probe's own observers.

``run_conversation(pair)``: listen on a (the seed's thinkpad), connect from b (raspberrypi), "Hello"
from a, "Bye" from b, the server application ends, then the client's. Each host has a SocketWatcher
polled every 2 ms, a Capture on eth0 and an Endpoint, all living in the host's namespace (NetnsThread).

At zero delay the short states (SYN_RECEIVED, FIN_WAIT1, LAST_ACK) last microseconds on a veth and a
poller misses them. This kernel has no netem, so with ``gates=True`` the run holds each of them the
way a slow link would: an iptables rule in one namespace drops its outgoing SYN-ACKs (SYN_SENT, SYN_RECEIVED) or pure
ACKs (the peer's FIN_WAIT1, LAST_ACK) until the watchers have seen the state, then goes; the kernel's
own retransmission (SYN-ACK after ~1 s, FIN after ~0.2 s)
completes the step, as the retransmissions in the seed's film do. The rules live in the test
namespaces and are deleted in a finally (and with the namespaces anyway).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

from probe.capture import Capture
from probe.endpoint import Endpoint
from probe.sockets import SocketWatcher
from tests.netns import Host, NetnsPair
from tests.nsthread import NetnsThread

PORT = 9090
PURE_ACK = ["--tcp-flags", "SYN,ACK,FIN,RST,PSH", "ACK"]
SYN_ACK = ["--tcp-flags", "SYN,ACK", "SYN,ACK"]


@dataclass
class Side:
    changes: list = field(default_factory=list)
    rows: list = field(default_factory=list)   # the last rows seen
    packets: list = field(default_factory=list)
    console: list = field(default_factory=list)
    capture_stats: dict = field(default_factory=dict)
    returncode: int | None = None

    def states(self, remote_port: int | None = None, local_port: int | None = None) -> list[str]:
        """The state sequence of the connection socket(s), first 'from' included."""
        out: list[str] = []
        for c in self.changes:
            if c["remote"] == "0.0.0.0:*":
                continue
            if not out:
                out.append(c["from"])
            out.append(c["to"])
        return out

    def listener(self) -> list[str]:
        return [c["to"] for c in self.changes if c["remote"] == "0.0.0.0:*"]


class Poller:
    """Polls a SocketWatcher in a thread, like the daemon's 50 Hz loop but faster."""

    def __init__(self, watcher: SocketWatcher, side: Side, interval: float = 0.002):
        self.watcher, self.side, self.interval = watcher, side, interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            changes, rows = self.watcher.poll()
            with self._lock:
                self.side.changes.extend(changes)
                self.side.rows = rows
            time.sleep(self.interval)

    def seen(self, state: str, remote_any: bool = False) -> bool:
        with self._lock:
            return any(c["to"] == state for c in self.side.changes)

    def wait(self, state: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.seen(state):
            if time.monotonic() > deadline:
                raise AssertionError(f"state {state} not seen; changes: {self.side.changes}")
            time.sleep(0.002)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


@contextlib.contextmanager
def drop(host: Host, match: list[str], enabled: bool = True):
    """Drop the host's outgoing segments that ``match`` for the duration of the block."""
    rule = ["OUTPUT", "-p", "tcp", *match, "-j", "DROP"]
    if enabled:
        host.run("iptables", "-w", "-A", *rule)
    try:
        yield
    finally:
        if enabled:
            host.run("iptables", "-w", "-D", *rule, check=False)


def run_conversation(pair: NetnsPair, gates: bool = True, settle: float = 0.3) -> tuple[Side, Side]:
    sa, sb = Side(), Side()
    with NetnsThread(pair.a.ns) as ta, NetnsThread(pair.b.ns) as tb:
        wa, wb = ta.call(SocketWatcher, PORT), tb.call(SocketWatcher, PORT)
        ca = ta.call(Capture, "eth0", PORT, pair.a.ip, on_packets=sa.packets.extend)
        cb = tb.call(Capture, "eth0", PORT, pair.b.ip, on_packets=sb.packets.extend)
        ea = Endpoint(lambda text, stream: sa.console.append((stream, text)))
        eb = Endpoint(lambda text, stream: sb.console.append((stream, text)))
        ta.call(ca.start)
        tb.call(cb.start)
        try:
            with Poller(wa, sa) as pa, Poller(wb, sb) as pb:
                ta.run(ea.listen(PORT))
                pa.wait("LISTEN")
                with drop(pair.a, SYN_ACK, gates):  # hold b in SYN_SENT and a in SYN_RECEIVED
                    tb.run(eb.connect(pair.a.ip, PORT))
                    if gates:
                        pb.wait("SYN_SENT")
                        pa.wait("SYN_RECEIVED")
                pb.wait("ESTABLISHED")
                pa.wait("ESTABLISHED")
                ta.run(ea.send("Hello"))
                _wait_console(sb, "Hello")
                tb.run(eb.send("Bye"))
                _wait_console(sa, "Bye")
                time.sleep(0.05)  # let the data's ACKs go before the gates
                with drop(pair.b, PURE_ACK, gates):  # hold a in FIN_WAIT1
                    sa.returncode = ta.run(ea.close())
                    pb.wait("CLOSE_WAIT")
                    if gates:
                        pa.wait("FIN_WAIT1")
                pa.wait("FIN_WAIT2")
                with drop(pair.a, PURE_ACK, gates):  # hold b in LAST_ACK
                    sb.returncode = tb.run(eb.close())
                    pa.wait("TIME_WAIT")
                    if gates:
                        pb.wait("LAST_ACK")
                pb.wait("CLOSED")
                time.sleep(settle)
        finally:
            for ep, t in ((ea, ta), (eb, tb)):
                t.run(ep.abort())
            sa.capture_stats = ta.call(ca.stop)
            sb.capture_stats = tb.call(cb.stop)
            wa.close()
            wb.close()
    return sa, sb


def _wait_console(side: Side, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while ("stdout", text) not in side.console:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed; console: {side.console}")
        time.sleep(0.005)
