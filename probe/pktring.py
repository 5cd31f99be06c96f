"""A packet socket with a kernel BPF filter and a TPACKET_V3 receive ring (Linux AF_PACKET).

``PacketRing(ifname, bpf)`` opens the socket in the calling thread's network namespace, attaches the
filter (compiled by libpcap through scapy) *before* binding, so not one unfiltered frame is queued,
and maps a ring of blocks the kernel fills with frames and their timestamps. The kernel copies each
matching frame once into the ring; reading costs no system call per packet, only a ``poll`` when the
ring is empty, and a queued frame costs the ring its bytes, not the skb it came in (the 64 KiB
receive buffer of a plain socket held three big segments; see probe.capture).

A block is handed to user space when full or when ``retire_ms`` passed since its first frame: a frame
waits at most that long. ``frames()`` yields ``(frame, wall_ns)`` of every block ready; ``wait(ms)``
sleeps until a block is ready or ``wake()`` is called. ``stats()`` reads the kernel's counters
(PACKET_STATISTICS, which resets them on each read) and adds them to running totals.

Layouts from <linux/if_packet.h>: tpacket_req3, tpacket_block_desc/tpacket_hdr_v1, tpacket3_hdr,
tpacket_stats_v3.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import threading
from typing import Iterator

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
LINKTYPE_ETHERNET = 1  # DLT_EN10MB
SNAPLEN = 262144  # tcpdump's: a GSO segment on a veth is one frame of up to 64 KiB + headers
BPF_RET_K = 0x06
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1

_REQ3 = struct.Struct("7I")  # block_size, block_nr, frame_size, frame_nr, retire_blk_tov, sizeof_priv, feature_req_word
_BLOCK = struct.Struct("III")  # at offset 8 of a block: block_status, num_pkts, offset_to_first_pkt
_FRAME = struct.Struct("IIIIIIH")  # tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac
_STATS3 = struct.Struct("III")  # tp_packets (drops included), tp_drops, tp_freeze_q_cnt


def compile_bpf(expr: str) -> tuple[int, bytes]:
    """libpcap's BPF for an Ethernet link, as (instruction count, instructions): no interface needed.

    scapy compiles for a 65535-byte snapshot, so the program accepts a frame with ``ret #65535`` and
    the kernel would cut a 64 KiB segment's last bytes: accept SNAPLEN instead.
    """
    import ctypes

    from scapy.arch.common import compile_filter, free_filter
    prog = compile_filter(expr, linktype=LINKTYPE_ETHERNET)
    try:
        code = bytearray(ctypes.string_at(ctypes.addressof(prog.bf_insns.contents), prog.bf_len * 8))
        n = prog.bf_len
    finally:
        free_filter(prog)
    for i in range(n):  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
        op, jt, jf, k = struct.unpack_from("HBBI", code, i * 8)
        if op == BPF_RET_K and k:
            struct.pack_into("HBBI", code, i * 8, op, jt, jf, SNAPLEN)
    return n, bytes(code)


def attach_bpf(sock: socket.socket, expr: str) -> int:
    """SO_ATTACH_FILTER with a struct sock_fprog pointing at our own copy of the program."""
    import ctypes
    n, code = compile_bpf(expr)
    insns = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", n, ctypes.addressof(insns))  # {unsigned short len; struct sock_filter *filter}
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program
    return n


class PacketRing:
    def __init__(self, ifname: str, bpf: str, block_size: int = 1 << 17, block_nr: int = 128,
                 retire_ms: int = 10):
        self.ifname, self.bpf = ifname, bpf
        self.block_size, self.block_nr, self.retire_ms = block_size, block_nr, retire_ms
        self.size = block_size * block_nr
        self._totals = [0, 0, 0]
        self._stats_lock = threading.Lock()
        self._cur = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        try:
            self.bpf_len = attach_bpf(sock, bpf)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
                block_size, block_nr, 2048, self.size // 2048, retire_ms, 0, 0))
            self._ring = mmap.mmap(sock.fileno(), self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            sock.bind((ifname, ETH_P_ALL))  # from now on the filtered frames flow into the ring
        except BaseException:
            sock.close()
            self._close_pipe()
            raise
        self.sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._poll.register(self._wake_r, select.POLLIN)

    def ready(self) -> bool:
        return bool(_BLOCK.unpack_from(self._ring, self._cur * self.block_size + 8)[0] & TP_STATUS_USER)

    def frames(self) -> Iterator[tuple[bytes, int]]:
        """Every frame of the blocks ready now, in the kernel's order; each block goes back after its last."""
        ring, bs = self._ring, self.block_size
        unpack = _FRAME.unpack_from
        while True:
            off = self._cur * bs
            status, num, first = _BLOCK.unpack_from(ring, off + 8)
            if not status & TP_STATUS_USER:
                return
            try:
                p = off + first
                for _ in range(num):
                    nxt, sec, nsec, snaplen, _len, _st, mac = unpack(ring, p)
                    yield ring[p + mac:p + mac + snaplen], sec * 1_000_000_000 + nsec
                    p += nxt
            finally:  # hand the block back even when the consumer stops half-way
                struct.pack_into("I", ring, off + 8, TP_STATUS_KERNEL)
                self._cur = (self._cur + 1) % self.block_nr

    def wait(self, timeout_ms: int) -> None:
        """Sleep until a block is ready, wake() is called or the timeout passes."""
        if self.ready():
            return
        for fd, _ in self._poll.poll(timeout_ms):
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 64)
                except BlockingIOError:
                    pass

    def wake(self) -> None:
        os.write(self._wake_w, b"!")

    def stats(self) -> dict:
        """Totals since the ring opened: packets the filter passed (drops included), drops, ring-full episodes."""
        with self._stats_lock:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
            for i, v in enumerate(_STATS3.unpack(raw)):
                self._totals[i] += v
            packets, drops, freezes = self._totals
        return {"kernel_packets": packets, "kernel_drops": drops, "kernel_freezes": freezes}

    def close(self) -> None:
        self._poll.unregister(self.sock.fileno())
        self._ring.close()
        self.sock.close()
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
