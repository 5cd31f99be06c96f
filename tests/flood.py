"""A flood of TCP segments from one lab host to another, fast enough to test a capture (~290,000/s here).

``flood(src_host, src_ip, dst_ip, port, count, rate=0, seconds=30)`` runs, inside the source host's
namespace, a Python sender on a raw IPv4 socket that hands the kernel up to 256 segments per
``sendmmsg(2)`` call (through ctypes; a ``sendto`` loop reaches ~220,000/s), paced in batches when
``rate`` > 0, else as fast as it can. Each segment is a bare ACK from port 40000 to ``port`` with
seq = i, carrying a wrong checksum, so the receiver's TCP drops it and answers nothing. Returns
``Flood(sent, failed, seconds)``; ``sent / seconds`` is the rate really achieved.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tests.netns import Host

FLOOD_SPORT = 40000

FLOOD = r"""
import ctypes, socket, struct, sys, time
src, dst, port, rate, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
BATCH, SIZE = 256, 20
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.SOL_SOCKET, 32, 64 << 20)  # SO_SNDBUFFORCE
addr = ctypes.create_string_buffer(struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(dst)), 16)
bufs = ctypes.create_string_buffer(SIZE * BATCH)
iovs = (iovec * BATCH)(*[iovec(ctypes.addressof(bufs) + SIZE * k, SIZE) for k in range(BATCH)])
msgs = (mmsghdr * BATCH)()
for k in range(BATCH):
    msgs[k].hdr.name, msgs[k].hdr.namelen = ctypes.addressof(addr), 16
    msgs[k].hdr.iov, msgs[k].hdr.iovlen = ctypes.pointer(iovs[k]), 1
# ACK segments from port 40000 with seq = i and ack = ~i: every one sums to the same checksum, so one
# wrong value makes them all wrong and b's stack drops them without answering (a fixed wrong value
# would be right by chance for one segment in 65536, which b answers with a RST).
hdr = struct.Struct("!HHIIBBHHH")
words = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", 6, SIZE) + \
    hdr.pack(40000, port, 0, 0xFFFFFFFF, 0x50, 0x10, 1024, 0, 0)
total = sum(struct.unpack(f"!{len(words) // 2}H", words))
while total >> 16:
    total = (total & 0xFFFF) + (total >> 16)
bad = (~total & 0xFFFF) ^ 0x5555
n = count
sent = failed = i = 0
t0 = time.monotonic()
end = t0 + seconds
while i < n:
    now = time.monotonic()
    if now >= end:
        break
    due = min(n, int((now - t0) * rate) + 1 if rate > 0 else i + BATCH)
    if due <= i:
        time.sleep(0.0002)
        continue
    count = min(BATCH, due - i)
    for k in range(count):
        hdr.pack_into(bufs, SIZE * k, 40000, port, i + k, ~(i + k) & 0xFFFFFFFF, 0x50, 0x10, 1024, bad, 0)
    r = libc.sendmmsg(s.fileno(), msgs, count, 0)
    if r <= 0:  # ENOBUFS/EPERM: the first segment was refused; skip it
        failed += 1
        i += 1
    else:
        sent += r
        i += r
elapsed = time.monotonic() - t0
print(f"{sent} {failed} {elapsed:.6f}", flush=True)
"""


@dataclass
class Flood:
    sent: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def flood(host: Host, src_ip: str, dst_ip: str, port: int, count: int, rate: float = 0, seconds: float = 30) -> Flood:
    """Send ``count`` segments (fewer if ``seconds`` run out) at ``rate`` per second, 0 = full speed."""
    out = host.run(sys.executable, "-c", FLOOD, src_ip, dst_ip, str(port), str(rate), str(count), str(seconds),
                   timeout=seconds + 30)
    sent, failed, elapsed = out.stdout.split()
    return Flood(int(sent), int(failed), float(elapsed))
