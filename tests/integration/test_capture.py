"""Capture on a lab host's eth0: real packets of a real nc conversation, numbered as Wireshark does."""

import struct
import subprocess
import time

import pytest

from probe.capture import Capture, CaptureError
from tests.flood import FLOOD_SPORT, flood
from tests.nsthread import NetnsThread
from tests.seedrun import PORT, run_conversation

pytestmark = pytest.mark.integration

# (dir, flags, seq, ack, len, payload) as seen from the server a; the client b sees the same with dir swapped
SERVER_VIEW = [
    ("in", ["SYN"], 0, 0, 0, ""),
    ("out", ["SYN", "ACK"], 0, 1, 0, ""),
    ("in", ["ACK"], 1, 1, 0, ""),
    ("out", ["PSH", "ACK"], 1, 1, 6, "Hello\n"),
    ("in", ["ACK"], 1, 7, 0, ""),
    ("in", ["PSH", "ACK"], 1, 7, 4, "Bye\n"),
    ("out", ["ACK"], 7, 5, 0, ""),
    ("out", ["FIN", "ACK"], 7, 5, 0, ""),
    ("in", ["ACK"], 5, 8, 0, ""),
    ("in", ["FIN", "ACK"], 5, 8, 0, ""),
    ("out", ["ACK"], 8, 6, 0, ""),
]
SWAP = {"in": "out", "out": "in"}


def _view(packets):
    return [(p["dir"], p["flags"], p["seq"], p["ack"], p["len"], p["payload"]) for p in packets]


def _is_subsequence(expected, seen):
    it = iter(seen)
    return all(any(x == s for s in it) for x in expected)


def _distinct(view):
    """Drop retransmissions (the same segment again), as Wireshark's grey lines."""
    out = []
    for v in view:
        if v not in out:
            out.append(v)
    return out


def test_seed_conversation_packets(netns_pair):
    a, b = run_conversation(netns_pair, gates=True)
    for side, expected in ((a, SERVER_VIEW), (b, [(SWAP[d], *rest) for d, *rest in SERVER_VIEW])):
        view = _view(side.packets)
        assert _distinct(view) == expected, view
        assert side.capture_stats["packets"] == len(side.packets)
        assert side.capture_stats["kernel_drops"] == 0 and side.capture_stats["callback_errors"] == 0
    # retransmissions caused by the held segments are there, as in the seed's film
    assert len(a.packets) > len(SERVER_VIEW)
    for side, local in ((a, netns_pair.a.ip), (b, netns_pair.b.ip)):
        for p in side.packets:
            assert p["src"].startswith(local + ":") == (p["dir"] == "out")
            assert p["linktype"] == 1 and isinstance(p["raw"], bytes) and len(p["raw"]) >= 54
            assert p["wall_ns"] - p["t_ns"] == pytest.approx(time.time_ns() - time.monotonic_ns(), abs=50e6)
        t = [p["t_ns"] for p in side.packets]
        assert t == sorted(t)
    # a packet never arrives before it left
    syn_out = next(p for p in b.packets if p["flags"] == ["SYN"])
    syn_in = next(p for p in a.packets if p["flags"] == ["SYN"])
    assert syn_in["t_ns"] >= syn_out["t_ns"]


def test_start_returns_when_capturing_and_filters_the_port(netns_pair):
    a, b = netns_pair.a, netns_pair.b
    seen = []
    with NetnsThread(a.ns) as ta:
        cap = ta.call(Capture, "eth0", PORT, a.ip, on_packets=seen.extend)
        ta.call(cap.start)
        try:
            # the very first packets after start(): a connection refused by b (SYN, RST+ACK)
            a.run("/usr/bin/nc", "-z", b.ip, str(PORT), check=False)
            a.run("/usr/bin/nc", "-z", b.ip, str(PORT + 1), check=False)  # another port: filtered out
            a.run("ping", "-c1", "-W1", b.ip, check=False)
        finally:
            stats = ta.call(cap.stop)
    assert [(p["dir"], p["flags"]) for p in seen] == [("out", ["SYN"]), ("in", ["RST", "ACK"])]
    assert stats["packets"] == 2 and stats["kernel_drops"] == 0


def test_unknown_interface_is_a_capture_error(netns_pair):
    with NetnsThread(netns_pair.a.ns) as ta:
        cap = ta.call(Capture, "tcplabnope0", PORT, netns_pair.a.ip, on_packets=lambda events: None)
        with pytest.raises(CaptureError):
            ta.call(cap.start)
        assert not cap.running


def test_a_burst_to_a_slow_reader_loses_nothing_in_the_kernel(netns_pair):
    """300 kB at full speed while the reader takes 2 ms a packet: the kernel must hold them all.

    With scapy's own 64 KiB receive buffer this dropped 26 of 50 segments here.
    """
    a, b = netns_pair.a, netns_pair.b
    seen = []
    server = b.popen("/usr/bin/nc", "-l", str(PORT), stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        with NetnsThread(a.ns) as ta:
            def slow(events):
                for e in events:
                    time.sleep(0.002)
                    seen.append(e)
            cap = ta.call(Capture, "eth0", PORT, a.ip, on_packets=slow)
            ta.call(cap.start)
            try:
                a.run("sh", "-c", f"head -c 300000 /dev/zero | /usr/bin/nc -N {b.ip} {PORT}", timeout=30)
                time.sleep(1.0)
            finally:
                stats = ta.call(cap.stop)
        assert cap.ring_bytes >= 16 << 20
        assert stats["kernel_drops"] == 0 and stats["packets"] == stats["kernel_packets"] == len(seen) > 10
        assert sum(p["len"] for p in seen if p["dir"] == "out") == 300000
    finally:
        server.kill()
        server.wait()


def test_the_kernel_filter_keeps_other_ports_out_of_python(netns_pair):
    """20,000 segments to another port never reach the ring; the 100 to the lab port all do."""
    a, b = netns_pair.a, netns_pair.b
    seen, reports = [], []
    a.run("ping", "-c1", "-W1", b.ip, check=False)  # b's MAC known before the flood
    with NetnsThread(b.ns) as tb:
        cap = tb.call(Capture, "eth0", PORT, b.ip, on_packets=seen.extend, on_stats=reports.append,
                      stats_every_s=0.05)
        tb.call(cap.start)
        try:
            other = flood(a, a.ip, b.ip, PORT + 1, 20_000, seconds=10)
            lab = flood(a, a.ip, b.ip, PORT, 100, seconds=10)
            time.sleep(0.3)
        finally:
            stats = tb.call(cap.stop)
    assert other.sent == 20_000 and lab.sent == 100
    assert stats["kernel_packets"] == stats["packets"] == len(seen) == 100 and stats["kernel_drops"] == 0
    assert {(p["dir"], p["src"], p["dst"]) for p in seen} == {("in", f"{a.ip}:{FLOOD_SPORT}", f"{b.ip}:{PORT}")}
    # the kernel's counters, reported on the way (totals: the kernel resets them on each read)
    assert reports and reports[-1]["kind"] == "capture_stats" and reports[-1]["kernel_drops"] == 0
    assert [r["kernel_packets"] for r in reports] == sorted(r["kernel_packets"] for r in reports)
    assert reports[-1]["kernel_packets"] == 100


def test_a_burst_at_full_speed_loses_nothing(netns_pair):
    """20,000 segments as fast as the sender goes (~100,000+/s here): every one is seen, in order.

    (The capture had a per-packet callback too, tested here alike; batches are its only way now.)
    """
    a, b = netns_pair.a, netns_pair.b
    seqs, batches = [], []

    def one(e):
        seqs.append(struct.unpack_from("!I", e["raw"], 38)[0])

    def many(events):
        batches.append(len(events))
        for e in events:
            one(e)
    a.run("ping", "-c1", "-W1", b.ip, check=False)
    with NetnsThread(b.ns) as tb:
        cap = tb.call(Capture, "eth0", PORT, b.ip, on_packets=many)
        tb.call(cap.start)
        try:
            burst = flood(a, a.ip, b.ip, PORT, 20_000, seconds=10)
            time.sleep(0.1)
        finally:
            stats = tb.call(cap.stop)
    assert burst.sent == 20_000, burst
    assert stats["kernel_drops"] == 0 and stats["callback_errors"] == 0
    assert stats["packets"] == stats["kernel_packets"] == 20_000
    assert seqs == list(range(20_000))
    assert stats["cpu_s"] is not None and stats["cpu_s"] > 0
    assert sum(batches) == 20_000 and max(batches) <= 256 and len(batches) < 20_000 / 10
