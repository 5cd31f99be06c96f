"""Measure what a shaper does to the packets of a port, from outside it, run in the lab namespaces.

``send SRC DST PORT N INTERVAL_MS SIZE`` crafts N TCP segments (a raw socket: the kernel adds the IP
header, the segments go through mangle OUTPUT and the qdiscs like any of the port's) from SRC:40000
to DST:PORT, each carrying a mark, its index and its send time, SIZE bytes of payload in all.

``receive IFACE PORT IDLE_S`` reads every frame arriving on IFACE (AF_PACKET, before IP and TCP
look at it) for the port's marked segments, checks each one's TCP checksum, and prints one JSON line
once nothing came for IDLE_S seconds: the indices in arrival order, each one's one-way time, its
frame's arrival time and whether its checksum held. CLOCK_MONOTONIC is one clock for every namespace
of a machine, so one-way time is arrival minus send.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

MARK = b"TCPLABMETER"
HEAD = struct.Struct("!11sIQ")  # mark, index, send time (ns)
SPORT = 40000
PACKET_OUTGOING = 4


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_ok(src: bytes, dst: bytes, segment: bytes) -> bool:
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    return checksum(pseudo + segment) == 0


def segment(src: str, dst: str, port: int, index: int, size: int) -> bytes:
    payload = HEAD.pack(MARK, index, time.monotonic_ns())
    payload += b"x" * max(0, size - len(payload))
    head = struct.pack("!HHIIBBHHH", SPORT, port, index, 0, 0x50, 0x10, 65535, 0, 0)  # ACK
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP,
                                                                         len(head) + len(payload))
    csum = checksum(pseudo + head + payload)
    return head[:16] + struct.pack("!H", csum) + head[18:] + payload


def send(src: str, dst: str, port: int, n: int, interval_ms: float, size: int) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.bind((src, 0))
    start = time.monotonic()
    for i in range(n):
        wait = start + i * interval_ms / 1000 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        raw.sendto(segment(src, dst, port, i, size), (dst, 0))
    raw.close()


def receive(iface: str, port: int, idle_s: float) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    print(json.dumps({"ready": True}), flush=True)
    got: list[dict] = []
    last = None
    while True:
        ready, _, _ = select.select([sock], [], [], idle_s if last is not None else 60)
        if not ready:
            break
        data, addr = sock.recvfrom(65535)
        now = time.monotonic_ns()
        if addr[2] == PACKET_OUTGOING or len(data) < 20 or data[9] != socket.IPPROTO_TCP:
            continue
        ihl = (data[0] & 0x0F) * 4
        tcp = data[ihl:struct.unpack_from("!H", data, 2)[0]]
        if len(tcp) < 20 or struct.unpack_from("!H", tcp, 2)[0] != port:
            continue
        off = (tcp[12] >> 4) * 4
        head = tcp[off:off + HEAD.size]
        if len(head) < HEAD.size or not head.startswith(MARK[:4]):
            continue
        mark, index, sent = HEAD.unpack(head)
        ok = tcp_ok(data[12:16], data[16:20], tcp)
        got.append({"i": index if mark == MARK else -1, "ms": (now - sent) / 1e6, "at": now / 1e9,
                    "ok": ok, "len": len(data)})
        last = now
    print(json.dumps({"got": got}), flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "send":
        send(args[0], args[1], int(args[2]), int(args[3]), float(args[4]), int(args[5]))
    elif cmd == "receive":
        receive(args[0], int(args[1]), float(args[2]))
    else:
        sys.exit(f"unknown command {cmd!r}")
