"""The shaper in real namespaces: what this kernel accepts, the NFQUEUE fallback for real,
crash safety and the accuracy of the delay line. The Shaper runs inside each namespace in
a tests/shaper_agent.py process; the kernel is asked what is left (iptables-save, tc)."""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns import Host

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PORT, OTHER = 9090, 9091
D = 200  # ms

CONNECT = """
import socket, sys, time
ip, port, timeout, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
out = []
for _ in range(n):
    t = time.monotonic()
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
        out.append(time.monotonic() - t)
    except OSError:
        out.append(None)
print(out)
"""


class Agent:
    """A Shaper in ``host``'s namespace, driven one JSON line at a time."""

    def __init__(self, host: Host, port: int = PORT, backend: str = "auto"):
        self.proc = host.popen(sys.executable, "-u", "-m", "tests.shaper_agent", host.ifname, str(port), backend,
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._read(20) == {"ready": True}

    def call(self, op: str, timeout: float = 20, refused: bool = False, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        assert ("error" in reply) == refused, reply
        return reply

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "shaper agent did not answer in time"
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # EOF: the agent clears and exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def agents():
    made = []

    def start(host: Host, port: int = PORT) -> Agent:
        made.append(Agent(host, port))
        return made[-1]

    yield start
    for a in made:
        a.close()


@pytest.fixture
def listeners(netns_pair):
    """nc -lk on PORT and OTHER in host a, killed afterwards."""
    procs = [netns_pair.a.popen("nc", "-lk", str(p), stdout=subprocess.DEVNULL) for p in (PORT, OTHER)]
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            out = netns_pair.a.run("ss", "-ltnH").stdout
            if f":{PORT} " in out and f":{OTHER} " in out:
                break
            time.sleep(0.05)
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def connects(host: Host, ip: str, port: int, timeout: float = 2.0, n: int = 1) -> list:
    out = host.run(sys.executable, "-c", CONNECT, ip, str(port), str(timeout), str(n),
                   timeout=n * (timeout + 1) + 10).stdout
    return eval(out)  # a list of floats / None printed by CONNECT


def assert_clean(host: Host) -> None:
    assert "TCPLAB" not in host.run("iptables-save").stdout
    assert "NFQUEUE" not in host.run("iptables-save").stdout
    qdiscs = host.run("tc", "qdisc", "show", "dev", host.ifname).stdout
    assert not any(k in qdiscs for k in ("prio", "netem", "htb")), qdiscs
    assert host.run("tc", "filter", "show", "dev", host.ifname).stdout.strip() == ""


def test_this_kernel_refuses_prio_netem_and_nothing_is_left(netns_pair, agents):
    reply = agents(netns_pair.a).call("netem_only", delay_ms=D)
    assert reply["unavailable"] is True
    assert "prio" in reply["message"] and "unknown" in reply["message"]
    assert_clean(netns_pair.a)


def test_a_forced_backend_is_used_or_refused_by_this_kernel(netns_pair):
    """backend=netem on a kernel without netem: the kernel's refusal, no fallback, nothing left;
    backend=nfqueue: the delay line, without trying netem first."""
    netem = Agent(netns_pair.a, backend="netem")
    try:
        reply = netem.call("apply", delay_ms=D, refused=True)
        assert reply["error"] == "NetemUnavailable" and "unknown" in reply["message"], reply
    finally:
        netem.close()
    assert_clean(netns_pair.a)
    nfq = Agent(netns_pair.a, backend="nfqueue")
    try:
        reply = nfq.call("apply", delay_ms=D)
        assert reply["backend"] == "nfqueue"
        (chosen,) = [e for e in reply["events"] if e["event"] == "shaper_backend_chosen"]
        assert chosen["reason"] == "the configuration asks for nfqueue"
        assert nfq.call("clear")["backend"] is None
    finally:
        nfq.close()
    assert_clean(netns_pair.a)


def test_u32_port_filters_are_accepted_on_htb_and_read_back(netns_pair, agents):
    reply = agents(netns_pair.a).call("u32_on_htb")
    assert reply["filters"] == {str(0x80000800): [20, 0xFFFF0000, PORT << 16],
                                str(0x80000801): [22, 0xFFFF0000, PORT << 16]}
    assert reply["nodes"] == 2  # replaced twice, still one node per filter
    assert_clean(netns_pair.a)


def test_fallback_delays_only_the_port_both_ways(netns_pair, agents, listeners):
    a, b = netns_pair.a, netns_pair.b
    sa, sb = agents(a), agents(b)
    for s in (sa, sb):
        reply = s.call("apply", delay_ms=D)
        assert reply["backend"] == "nfqueue"
        chosen = [e for e in reply["events"] if e["event"] == "shaper_backend_chosen"]
        assert chosen and chosen[0]["backend"] == "nfqueue" and "unknown" in chosen[0]["reason"]

    # SYN delayed on b's egress, SYN-ACK on a's: about 2*D; another port is not delayed
    (t,) = connects(b, a.ip, PORT)
    assert 2 * D / 1000 - 0.01 < t < 2 * D / 1000 + 0.15, t
    (t,) = connects(b, a.ip, OTHER)
    assert t < 0.05, t

    # apply again: updated in place, still one jump and one chain
    for s in (sa, sb):
        assert s.call("apply", delay_ms=2 * D)["backend"] == "nfqueue"
    (t,) = connects(b, a.ip, PORT)
    assert 4 * D / 1000 - 0.01 < t < 4 * D / 1000 + 0.15, t
    saved = a.run("iptables-save").stdout
    assert saved.count("-j TCPLAB-SHAPE-9090") == 1 and saved.count("--queue-bypass") == 2

    # 100 % loss blocks the port, not the other one
    sa.call("apply", delay_ms=D, loss_pct=100)
    assert connects(b, a.ip, PORT, timeout=1.5) == [None]
    assert connects(b, a.ip, OTHER)[0] < 0.05

    for s in (sa, sb):
        cleared = s.call("clear")
        assert cleared["backend"] is None
        # what went through the delay line: at least each connect's SYN (b) or SYN-ACK (a), and
        # a's 100 % loss dropped its SYN-ACKs (b had no loss)
        counters = cleared["counters"]
        assert counters["shaped_packets"] >= 3, cleared
        assert (counters["shaped_drops"] >= 1) == (s is sa), cleared
        assert s.call("clear")["counters"] == {}  # idempotent, nothing left to count
    assert connects(b, a.ip, PORT)[0] < 0.05
    assert_clean(a)
    assert_clean(b)


def test_killed_shaper_leaves_a_bypass_rule_that_sweep_removes(netns_pair, agents, listeners):
    a, b = netns_pair.a, netns_pair.b
    first = agents(a)
    assert first.call("apply", delay_ms=3000)["backend"] == "nfqueue"
    first.kill()
    assert "-j TCPLAB-SHAPE-9090" in a.run("iptables-save").stdout
    # nobody reads queue 9090 any more: --queue-bypass lets the SYN-ACK through undelayed
    assert connects(b, a.ip, PORT)[0] < 0.05

    second = agents(a)
    assert second.call("sweep")["removed"] == ["iptables mangle chain TCPLAB-SHAPE-9090"]
    assert second.call("sweep")["removed"] == []
    assert_clean(a)


def test_delay_line_accuracy(netns_pair, agents, listeners):
    """Only a is shaped: each connect from b waits one delayed SYN-ACK."""
    a, b = netns_pair.a, netns_pair.b
    sa = agents(a)
    sa.call("apply", delay_ms=D)
    times = connects(b, a.ip, PORT, n=36)
    assert None not in times
    errors = [t * 1000 - D for t in times]
    stats = sa.call("stats")
    med, worst = statistics.median(errors), max(errors)
    print(f"\ndelay line at {D} ms over {len(errors)} SYN-ACKs: end-to-end error median {med:.2f} ms, "
          f"max {worst:.2f} ms; verdict lateness median {stats['late_ms_median']:.3f} ms, "
          f"max {stats['late_ms_max']:.3f} ms")
    assert stats["counts"]["accepted"] >= 36
    assert -1 < med < 10 and worst < 50


class Meter:
    """tests/impair_meter.py: segments from b to a's PORT, counted as they arrive on a's interface."""

    def __init__(self, a: Host, b: Host):
        self.a, self.b = a, b

    def measure(self, n: int, interval_ms: float, size: int = 100, idle_s: float = 1.5) -> list[dict]:
        rx = self.a.popen(sys.executable, "-u", "-m", "tests.impair_meter", "receive", self.a.ifname, str(PORT),
                          str(idle_s), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert json.loads(rx.stdout.readline()) == {"ready": True}
            self.b.run(sys.executable, "-m", "tests.impair_meter", "send", self.b.ip, self.a.ip, str(PORT), str(n),
                       str(interval_ms), str(size), cwd=ROOT, timeout=n * interval_ms / 1000 + 30)
            out, _ = rx.communicate(timeout=n * interval_ms / 1000 + 90)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
        return json.loads(out)["got"]


def csum_errors(host: Host) -> int:
    out = host.run("nstat", "-az", "TcpInCsumErrors").stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("TcpInCsumErrors")))


N = 1000


def test_every_impairment_acts_on_the_delay_line_as_measured_from_outside(netns_pair, agents, listeners):
    """Each impairment on b's egress, measured by what arrives on a's interface (no counter of the
    shaper's own is believed here): the loss rate, the jitter's spread, duplicates, reordering,
    corrupted checksums (and a's TCP counting them) and the rate."""
    a, b = netns_pair.a, netns_pair.b
    sb, meter = agents(b), Meter(a, b)
    report = []

    # loss 20 %: about 200 of 1000 never arrive (binomial sd 13: 4 sd is +-50)
    assert sb.call("apply", delay_ms=10, loss_pct=20)["backend"] == "nfqueue"
    got = meter.measure(N, 1)
    seen = {g["i"] for g in got}
    lost = N - len(seen)
    report.append(f"loss 20 %: {lost / N:.1%} lost")
    assert 150 <= lost <= 250, lost
    assert len(got) == len(seen)  # nothing twice

    # delay 100 ms +- 50 ms: one-way times spread over about 100 ms, uniformly (sd 50/sqrt 3 = 28.9)
    reply = sb.call("apply", delay_ms=100, jitter_ms=50)
    assert reply["accepted"]["jitter_ms"] == 50 and reply["accepted"]["loss_pct"] == 0
    got = meter.measure(N, 1)
    ms = [g["ms"] for g in got]
    spread, sd = max(ms) - min(ms), statistics.pstdev(ms)
    report.append(f"jitter +-50 ms: one-way {min(ms):.1f}..{max(ms):.1f} ms, sd {sd:.1f} ms, "
                  f"median {statistics.median(ms):.1f} ms")
    assert len(got) == N
    assert 49.9 <= min(ms) < 56 and 144 <= max(ms) < 160, (min(ms), max(ms))
    assert 90 <= spread < 110 and 25 < sd < 33 and 95 < statistics.median(ms) < 106
    order = [g["i"] for g in got]
    assert order != sorted(order)  # with jitter a later segment may overtake, as in netem

    # duplicate 30 %: every segment arrives, about 300 of them twice
    sb.call("apply", delay_ms=10, duplicate_pct=30)
    got = meter.measure(N, 1)
    twice = len(got) - len({g["i"] for g in got})
    report.append(f"duplicate 30 %: {twice / N:.1%} arrived twice")
    assert len({g["i"] for g in got}) == N and 240 <= twice <= 360, twice

    # reorder 30 % with 50 ms of delay: about 300 are sent at once and overtake the delayed ones
    sb.call("apply", delay_ms=50, reorder_pct=30)
    got = meter.measure(N, 1)
    early = sum(1 for g in got if g["ms"] < 25)
    report.append(f"reorder 30 %: {early / N:.1%} sent at once")
    assert len(got) == N and 240 <= early <= 360, early
    assert all(g["ms"] >= 49 for g in got if g["ms"] >= 25)

    # corrupt 10 %: about 100 arrive with a bad TCP checksum, and a's TCP drops them for it
    before = csum_errors(a)
    sb.call("apply", delay_ms=10, corrupt_pct=10)
    got = meter.measure(N, 1, size=1000)
    bad = sum(1 for g in got if not g["ok"])
    dropped = csum_errors(a) - before
    report.append(f"corrupt 10 %: {bad / N:.1%} with a bad checksum, a's TcpInCsumErrors +{dropped}")
    assert 60 <= bad <= 140, bad
    assert dropped >= bad  # a flip in the port or the mark hides a segment from the meter, not from TCP

    # rate 200 kbit/s: 40 frames of 1054 bytes sent at once leave 42.2 ms apart
    sb.call("apply", delay_ms=10, rate_kbit=200)
    got = meter.measure(40, 0, size=1000)
    span = got[-1]["at"] - got[0]["at"]
    kbit = sum(g["len"] + 14 for g in got[1:]) * 8 / span / 1000
    report.append(f"rate 200 kbit/s: {kbit:.1f} kbit/s measured over {span:.2f} s")
    assert len(got) == 40 and 190 <= kbit <= 210, kbit

    print("\n" + "\n".join(report))
    cleared = sb.call("clear")
    assert cleared["counters"]["shaped_packets"] >= 5 * N
    assert_clean(b)


NETEM_MESSAGE = """
import errno, json, sys
from pyroute2.netlink.exceptions import NetlinkError
from probe.shaper import netem
from tcplab.impairment import Impairment
with netem._ipr() as ipr:
    index = netem._index(ipr, sys.argv[1])
    ipr.tc("add", "htb", index=index, handle=netem.PRIO_HANDLE, default=0)
    ipr.tc("add-class", "htb", index=index, handle=netem.BAND_CLASS, parent=netem.PRIO_HANDLE, rate="1000mbit")
    try:
        netem._new_netem(ipr, index, Impairment(100, corrupt_pct=1), netem.NLM_F_CREATE | netem.NLM_F_EXCL)
        print(json.dumps({"accepted": True}))
    except NetlinkError as e:
        print(json.dumps({"code": e.code, "unknown": netem.kind_unknown(e)}))
    finally:
        ipr.tc("del", index=index, handle=netem.PRIO_HANDLE, parent=0xFFFFFFFF)
"""


def test_the_netem_message_reaches_the_kernel(netns_pair):
    """The probe's own RTM_NEWQDISC for netem goes through pyroute2 to this kernel, which answers it
    (it has no sch_netem: "kind unknown", the fallback's cue); netem's own VMs accept it (make
    test-vagrant)."""
    a = netns_pair.a
    res = a.run(sys.executable, "-c", NETEM_MESSAGE, a.ifname, cwd=ROOT, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.strip().splitlines()[-1]
    assert json.loads(out) in ({"code": 2, "unknown": True}, {"accepted": True}), out
    assert_clean(a)
