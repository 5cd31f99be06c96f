"""Packets of the lab port on the lab interface, as Wireshark would list them (scapy).

``Capture(ifname, port, local_ip, on_packet)`` opens scapy's ``L2ListenSocket`` with the BPF filter
``tcp port PORT`` compiled by libpcap and attached in the kernel; ``start()`` opens it in the calling
thread (so in the caller's network namespace) and returns once the socket is bound and the
``AsyncSniffer`` thread reading it has called its ``started_callback``: from then on no packet is missed,
they queue in the socket until read. ``on_packet`` runs in the sniffer thread; an exception it raises
is logged and counted, never allowed to reach scapy (which would close the socket and stop capturing).

Sequence numbers are relative, as Wireshark shows them: the first SYN of a direction (else the
first packet seen in it) fixes that direction's base; a packet's ``seq`` is relative to its own
direction, its ``ack`` to the opposite one (0 when ACK is not set). A SYN with a new sequence number on
a known pair of addresses starts a new conversation (both bases reset).

Times: the kernel stamps each frame with the wall clock (SO_TIMESTAMPNS); the probe converts it to
CLOCK_MONOTONIC with the wall-minus-monotonic offset sampled when the packet is handed to us.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from decimal import Decimal
from typing import Callable

import structlog
from scapy.arch.linux import L2ListenSocket
from scapy.layers.inet import IP, TCP
from scapy.sendrecv import AsyncSniffer

log = structlog.get_logger(__name__)

# Wireshark's order (lowest bit first), so the trace reads [FIN, ACK], [SYN, ACK], [PSH, ACK] as it does.
FLAG_ORDER = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
              ("URG", 0x20), ("ECE", 0x40), ("CWR", 0x80))
LINKTYPE_ETHERNET = 1
PACKET_STATISTICS = 6  # getsockopt(SOL_PACKET, ...) -> struct tpacket_stats {tp_packets, tp_drops}
SOL_PACKET = 263


class CaptureError(RuntimeError):
    """The capture could not start (no such interface, filter not compiled, no permission)."""


def flag_names(bits: int) -> list[str]:
    return [name for name, bit in FLAG_ORDER if bits & bit]


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


def packet_event(frame: bytes, wall_ns: int, mono_offset_ns: int, local_ip: str, rel: RelativeSeq,
                 ip: IP | None = None) -> dict | None:
    """The trace event of one captured Ethernet frame (None when it is not TCP over IPv4)."""
    if ip is None:
        from scapy.layers.l2 import Ether
        ip = Ether(frame).getlayer(IP)
    if ip is None or not ip.haslayer(TCP):
        return None
    tcp = ip[TCP]
    payload_len = max(0, ip.len - ip.ihl * 4 - tcp.dataofs * 4)
    payload = bytes(tcp.payload)[:payload_len]  # cut any Ethernet padding
    src, dst = f"{ip.src}:{tcp.sport}", f"{ip.dst}:{tcp.dport}"
    flags = int(tcp.flags)
    seq, ack = rel.relative(src, dst, flags, tcp.seq, tcp.ack)
    return {
        "kind": "packet", "t_ns": wall_ns - mono_offset_ns, "wall_ns": wall_ns,
        "dir": "out" if ip.src == local_ip else "in",
        "src": src, "dst": dst, "flags": flag_names(flags), "seq": seq, "ack": ack,
        "len": payload_len, "payload": payload.decode("utf-8", errors="replace"),
        "win": tcp.window, "raw": frame, "linktype": LINKTYPE_ETHERNET,
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


def _wall_ns(t) -> int:
    if isinstance(t, Decimal):
        return int(t * 1_000_000_000)
    return int(Decimal(repr(float(t))) * 1_000_000_000)


# scapy sizes the capture socket's receive buffer at conf.bufsize (64 KiB). A captured outgoing
# segment is charged its whole skb (TCP allocates up to its send size goal: tens of KiB), so two
# or three of them queued while the sniffer thread is busy overflow it and the kernel drops them
# (seen under load: 1 of 17 packets). Give the socket room for thousands.
RCVBUF = 16 << 20
SO_RCVBUFFORCE = 33


def _grow_rcvbuf(sock, size: int) -> int:
    """Set the receive buffer past rmem_max when allowed (root), else as far as allowed; read back."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class Capture:
    def __init__(self, ifname: str, port: int, local_ip: str, on_packet: Callable[[dict], None]):
        self.ifname = ifname
        self.port = port
        self.local_ip = local_ip
        self.on_packet = on_packet
        self.bpf = f"tcp port {port}"
        self._sock: L2ListenSocket | None = None
        self._sniffer: AsyncSniffer | None = None
        self._rel = RelativeSeq()
        self._clock = WallToMono()
        self.packets = 0
        self.errors = 0

    @property
    def running(self) -> bool:
        return self._sniffer is not None

    def start(self, timeout: float = 5.0) -> None:
        if self._sniffer is not None:
            raise CaptureError("capture already running")
        try:
            self._sock = L2ListenSocket(iface=self.ifname, filter=self.bpf, promisc=False)
        except Exception as e:  # scapy raises OSError or Scapy_Exception
            raise CaptureError(f"cannot capture on {self.ifname}: {e}") from e
        self.rcvbuf = _grow_rcvbuf(self._sock.ins, RCVBUF)
        started = threading.Event()
        self._sniffer = AsyncSniffer(opened_socket=self._sock, store=False, prn=self._handle,
                                     started_callback=started.set)
        self._sniffer.start()
        if not started.wait(timeout):
            self._teardown()
            raise CaptureError("sniffer thread did not start")
        log.info("capture_started", ifname=self.ifname, bpf=self.bpf, rcvbuf=self.rcvbuf)

    def _handle(self, pkt) -> None:
        try:
            ip = pkt.getlayer(IP)
            if ip is None:
                return
            event = packet_event(bytes(pkt), _wall_ns(pkt.time), self._clock.offset_ns(), self.local_ip, self._rel, ip=ip)
            if event is None:
                return
            self.packets += 1
            self.on_packet(event)
        except Exception as e:  # never let scapy see it: it would close the socket
            self.errors += 1
            log.error("capture_callback_failed", error=repr(e))

    def _drain(self) -> None:
        """Hand over what the kernel queued before stop() but the sniffer thread had not read yet."""
        sock = self._sock
        while sock is not None and select.select([sock.ins], [], [], 0)[0]:
            try:
                pkt = sock.recv()
            except Exception:
                break
            if pkt is not None:
                self._handle(pkt)

    def _kernel_stats(self) -> tuple[int, int] | None:
        try:
            raw = self._sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return None
        return struct.unpack("II", raw)

    def stop(self) -> dict:
        """Stop capturing; statistics of the whole capture."""
        if self._sniffer is None:
            return {"packets": self.packets, "kernel_drops": None, "callback_errors": self.errors}
        stats = self._kernel_stats()  # read before closing; the kernel resets them on each read
        self._teardown()
        result = {"packets": self.packets, "kernel_drops": stats[1] if stats else None,
                  "kernel_packets": stats[0] if stats else None, "callback_errors": self.errors}
        log.info("capture_stopped", ifname=self.ifname, **result)
        return result

    def _teardown(self) -> None:
        sniffer, self._sniffer = self._sniffer, None
        if sniffer is not None and sniffer.running:
            try:
                sniffer.stop(join=True)
            except Exception as e:
                log.warning("capture_stop_failed", error=repr(e))
        if self._sock is not None:
            self._drain()
            self._sock.close()
            self._sock = None
