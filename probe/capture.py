"""Packets of the lab port on the lab interface, as Wireshark would list them.

``Capture(ifname, port, local_ip, on_packets=...)`` reads a :class:`probe.pktring.PacketRing`: an AF_PACKET
socket whose kernel BPF filter ``tcp port PORT`` (compiled by libpcap through scapy) lets only the lab
port through, into a TPACKET_V3 ring the reader thread empties without a system call per packet.
``start()`` opens it in the calling thread (so in the caller's network namespace) and returns once the
socket is bound and the reader thread runs: from then on no packet is missed, they wait in the ring
until read. ``on_packets`` runs in the reader thread with lists of up to BATCH events, one call per
batch: a daemon handing events to its asyncio loop pays one ``call_soon_threadsafe`` (a pipe write)
per batch instead of per packet, which halves the capture's CPU (bench/capture.py); an exception it
raises is logged and counted and the capture goes on. ``on_stats`` (optional) gets the kernel's
counters from the same thread every ``stats_every_s`` and whenever the drop count grows.

Only the headers the trace needs are decoded (tcplab.tcpheader, the controller's analysis reads
frames with it too: Ethernet, IPv4, TCP), no scapy per packet:
scapy's ``sniff`` lost packets above about 4,000 packets/s here; this keeps zero loss well past
50,000 (bench/capture.py).

Sequence numbers are relative, as Wireshark shows them: the first SYN of a direction (else the
first packet seen in it) fixes that direction's base; a packet's ``seq`` is relative to its own
direction, its ``ack`` to the opposite one (0 when ACK is not set). A SYN with a new sequence number on
a known pair of addresses starts a new conversation (both bases reset).

Times: the kernel stamps each frame in the ring with the wall clock (tp_sec/tp_nsec); the probe
converts it to CLOCK_MONOTONIC with the wall-minus-monotonic offset sampled when the packet is read.
"""

from __future__ import annotations

import threading
import time
from socket import inet_ntoa
from typing import Callable

import structlog

from probe.pktring import LINKTYPE_ETHERNET, PacketRing
from tcplab.errors import TcplabError
from tcplab.tcpheader import decode

log = structlog.get_logger(__name__)

# Wireshark's order (lowest bit first), so the trace reads [FIN, ACK], [SYN, ACK], [PSH, ACK] as it does.
FLAG_ORDER = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
              ("URG", 0x20), ("ECE", 0x40), ("CWR", 0x80))
_FLAG_NAMES = [[name for name, bit in FLAG_ORDER if bits & bit] for bits in range(256)]


class CaptureError(TcplabError, RuntimeError):
    """The capture could not start (no such interface, filter not compiled, no permission)."""


class RelativeSeq:
    """Per-direction initial sequence numbers, to print seq/ack as Wireshark does."""

    def __init__(self) -> None:
        self._base: dict[tuple[str, str], int] = {}

    def relative(self, src: str, dst: str, flags: int, seq: int, ack: int) -> tuple[int, int]:
        fwd, rev = (src, dst), (dst, src)
        syn = bool(flags & 0x02)
        if syn and self._base.get(fwd) not in (None, seq):
            self._base.pop(fwd)  # a new connection on the same 4-tuple
            if not flags & 0x10:
                self._base.pop(rev, None)
        self._base.setdefault(fwd, seq)
        rel_seq = (seq - self._base[fwd]) & 0xFFFFFFFF
        if not flags & 0x10:
            return rel_seq, 0
        # ACK before anything seen the other way (capture started mid-connection): that side's base is ack-1
        base_rev = self._base.setdefault(rev, (ack - 1) & 0xFFFFFFFF)
        return rel_seq, (ack - base_rev) & 0xFFFFFFFF


_ADDRS: dict[bytes, str] = {}  # inet_ntoa's answers, kept: a lab has a handful of addresses (bench.tcpheader)


def _addr(raw: bytes) -> str:
    if len(_ADDRS) >= 4096:  # a flood of spoofed sources cannot grow it without bound
        _ADDRS.clear()
    text = _ADDRS[raw] = inet_ntoa(raw)
    return text


def packet_event(frame: bytes, wall_ns: int, mono_offset_ns: int, local_ip: str, rel: RelativeSeq) -> dict | None:
    """The trace event of one captured Ethernet frame (None when it is not TCP over IPv4)."""
    h = decode(frame)
    if h is None or len(h[0]) != 4:
        return None
    saddr, daddr, sport, dport, seq, ack, flags, win, _, data_at, end = h  # one unpack: the hot path
    bits = flags & 0xFF
    ip_src, ip_dst = _ADDRS.get(saddr) or _addr(saddr), _ADDRS.get(daddr) or _addr(daddr)
    src, dst = f"{ip_src}:{sport}", f"{ip_dst}:{dport}"
    rseq, rack = rel.relative(src, dst, bits, seq, ack)
    return {
        "kind": "packet", "t_ns": wall_ns - mono_offset_ns, "wall_ns": wall_ns,
        "dir": "out" if ip_src == local_ip else "in",
        "src": src, "dst": dst, "flags": list(_FLAG_NAMES[bits]), "seq": rseq, "ack": rack,
        "len": max(0, end - data_at), "payload": frame[data_at:end].decode("utf-8", errors="replace"),
        "win": win, "frame_len": len(frame), "raw": frame, "linktype": LINKTYPE_ETHERNET,
    }


class WallToMono:
    """The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, read precisely.

    Two clock reads in a row can be split by a preemption (tens of microseconds on a busy
    machine), which would move a packet's time by as much. So: bracket a realtime read between two
    monotonic reads a few times, keep the tightest bracket, and refresh it once a second
    (NTP may slew the wall clock).
    """

    def __init__(self, samples: int = 7, refresh_ns: int = 1_000_000_000):
        self.samples = samples
        self.refresh_ns = refresh_ns
        self._at = -refresh_ns
        self._offset = 0

    def offset_ns(self) -> int:
        now = time.monotonic_ns()
        if now - self._at >= self.refresh_ns:
            best = None
            for _ in range(self.samples):
                m1 = time.monotonic_ns()
                w = time.time_ns()
                m2 = time.monotonic_ns()
                if best is None or m2 - m1 < best[0]:
                    best = (m2 - m1, w - (m1 + m2) // 2)
            self._offset, self._at = best[1], now
        return self._offset


# What a0c81a9 learnt with scapy's socket: its 64 KiB receive buffer overflowed as soon as two or three
# big outgoing segments (each charged its whole skb) queued while the reader was busy. The ring holds
# 16 MiB of frames, each charged only its own bytes; a block goes to the reader when full or RETIRE_MS
# after its first frame, so a packet reaches on_packets at most that late.
RING_BLOCK = 1 << 17  # holds any frame up to 128 KiB (a 64 KiB GSO segment on a veth)
RING_BLOCKS = 128
RETIRE_MS = 10
BATCH = 256  # events per on_packets call at most


class Capture:
    def __init__(self, ifname: str, port: int, local_ip: str, *, on_packets: Callable[[list[dict]], None],
                 on_stats: Callable[[dict], None] | None = None, stats_every_s: float = 1.0):
        self.ifname = ifname
        self.port = port
        self.local_ip = local_ip
        self.on_packets = on_packets
        self.on_stats = on_stats
        self.stats_every_s = stats_every_s
        self.bpf = f"tcp port {port}"
        self.ring_bytes = RING_BLOCK * RING_BLOCKS
        self._ring: PacketRing | None = None
        self._thread: threading.Thread | None = None
        self._stop_at: float | None = None
        self._stats_due = False
        self._final: dict | None = None
        self._rel = RelativeSeq()
        self._clock = WallToMono()
        self.packets = 0
        self.errors = 0
        self.cpu_s: float | None = None  # CPU time of the reader thread, known once it ended

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise CaptureError("capture already running")
        try:
            self._ring = PacketRing(self.ifname, self.bpf, RING_BLOCK, RING_BLOCKS, RETIRE_MS)
        except Exception as e:  # OSError (no interface, no permission), scapy's error for a bad filter
            raise CaptureError(f"cannot capture on {self.ifname}: {e}") from e
        self._stop_at, self._final = None, None
        self._thread = threading.Thread(target=self._read, args=(self._ring,), name=f"tcplab-capture-{self.ifname}",
                                        daemon=True)
        self._thread.start()
        log.info("capture_started", ifname=self.ifname, bpf=self.bpf, bpf_insns=self._ring.bpf_len,
                 ring_bytes=self.ring_bytes)

    def _read(self, ring: PacketRing) -> None:
        next_stats, drops = time.monotonic() + self.stats_every_s, 0
        try:
            while True:
                self._handle_batches(ring)
                now = time.monotonic()
                if now >= next_stats or self._stats_due:
                    self._stats_due = False
                    next_stats = now + self.stats_every_s
                    drops = self._report(ring, drops)
                stop_at = self._stop_at
                if stop_at is not None and now >= stop_at and not ring.ready():
                    break
                idle_ms = int(min(0.2, self.stats_every_s) * 1000) + 1
                ring.wait(idle_ms if stop_at is None else max(1, int((stop_at - now) * 1000) + 1))
        except Exception as e:
            log.error("capture_reader_failed", ifname=self.ifname, error=repr(e))
        finally:
            self.cpu_s = time.thread_time()
            try:
                self._final = self._stats(ring)
            finally:
                ring.close()

    def _handle_batches(self, ring: PacketRing) -> None:
        batch: list[dict] = []
        offset = self._clock.offset_ns()
        for frame, wall_ns in ring.frames():
            event = packet_event(frame, wall_ns, offset, self.local_ip, self._rel)
            if event is not None:
                batch.append(event)
                if len(batch) >= BATCH:
                    self._deliver(batch)
                    batch, offset = [], self._clock.offset_ns()
        if batch:
            self._deliver(batch)

    def _deliver(self, batch: list[dict]) -> None:
        self.packets += len(batch)
        try:
            self.on_packets(batch)
        except Exception as e:
            self.errors += 1
            log.error("capture_callback_failed", error=repr(e))

    def _stats(self, ring: PacketRing) -> dict:
        return {"packets": self.packets, **ring.stats(), "callback_errors": self.errors}

    def _report(self, ring: PacketRing, drops_before: int) -> int:
        stats = self._stats(ring)
        if stats["kernel_drops"] > drops_before:
            log.warning("capture_drops", ifname=self.ifname, **stats)
        if self.on_stats is not None:
            try:
                self.on_stats({"kind": "capture_stats", "t_ns": time.monotonic_ns(), **stats})
            except Exception as e:
                log.error("capture_stats_callback_failed", error=repr(e))
        return stats["kernel_drops"]

    def request_stats(self) -> None:
        """Have the reader thread report the kernel's counters through on_stats now (after the
        packets it has handed over so far), not only at the next ``stats_every_s``."""
        self._stats_due = True
        if self._ring is not None:
            self._ring.wake()

    def stop(self) -> dict:
        """Stop capturing once what the kernel holds was read; statistics of the whole capture."""
        thread, ring = self._thread, self._ring
        if thread is None or ring is None:
            return {"packets": self.packets, "kernel_drops": None, "kernel_packets": None,
                    "callback_errors": self.errors}
        # a block still filling is handed over RETIRE_MS after its first frame: wait for it, then read it
        self._stop_at = time.monotonic() + 2 * RETIRE_MS / 1000 + 0.005
        ring.wake()
        thread.join(timeout=10)
        if thread.is_alive():  # on_packets hangs; the reader closes the ring when it returns
            log.error("capture_reader_stuck", ifname=self.ifname)
            result = self._stats(ring)
        else:
            result = dict(self._final or {"packets": self.packets, "kernel_drops": None, "kernel_packets": None,
                                          "callback_errors": self.errors})
            result["cpu_s"] = self.cpu_s
        self._thread, self._ring = None, None
        log.info("capture_stopped", ifname=self.ifname, **result)
        return result
