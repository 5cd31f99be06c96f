"""How many packets/s the NFQUEUE delay line holds at a long delay, and how exact it is.

Builds a namespace pair, shapes port 9090 on host a with the Shaper (3 s by default),
sends raw TCP packets (source port 9090, bad checksum so b's stack ignores them) from a
to b at a fixed rate, each carrying its send time, and receives them on b's eth0 with a
packet socket and kernel timestamps. Prints, per rate, what arrived and the error of the
applied delay (arrival - send - delay). Run as root from the repository root:

    .venv/bin/python -m bench.shaper_delayline [--delay-ms 3000] [--seconds 5] [RATE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from tests.integration.test_shaper import Agent
from tests.netns import NetnsPair

SEND = r"""
import socket, struct, sys, time
dst, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.SOL_SOCKET, 32, 256 << 20)  # SO_SNDBUFFORCE: held skbs count on our socket
n, t0 = int(rate * seconds), time.monotonic()
for i in range(n):
    ahead = t0 + i / rate - time.monotonic()
    if ahead > 0.0005:
        time.sleep(ahead)
    tcp = struct.pack("!HHIIBBHHH", 9090, 40000, i, 0, 0x50, 0x10, 1024, 0xdead, 0)
    try:
        s.sendto(tcp + b"TCPLABBENCH" + struct.pack("!IQ", i, time.time_ns()), (dst, 0))
    except OSError:  # EPERM: the kernel queue is full and dropped it
        n -= 1
print(n, flush=True)
"""

RECV = r"""
import socket, struct, sys, time, json, select
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind(("eth0", 0x0800))
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
print("ready", flush=True)
lat, seqs, end = [], [], time.monotonic() + seconds
while time.monotonic() < end:
    if not select.select([s], [], [], 0.2)[0]:
        continue
    data, anc, _, _ = s.recvmsg(2048, 64)
    ihl = (data[0] & 15) * 4
    if data[9] != 6 or data[ihl:ihl + 2] != b"\x23\x82":
        continue
    body = data[ihl + 20:]
    if not body.startswith(b"TCPLABBENCH"):
        continue
    i, sent = struct.unpack_from("!IQ", body, 11)
    sec, nsec = struct.unpack("qq", anc[0][2][:16]) if anc else (0, time.time_ns())
    lat.append((sec * 10**9 + nsec - sent) / 1e6)
    seqs.append(i)
inorder = all(x < y for x, y in zip(seqs, seqs[1:]))
print(json.dumps({"lat_ms": lat, "in_order": inorder}), flush=True)
"""


def trial(pair: NetnsPair, agent: Agent, delay_ms: int, rate: float, seconds: float) -> dict:
    recv = pair.b.popen(sys.executable, "-c", RECV, str(seconds + delay_ms / 1000 + 2),
                        stdout=subprocess.PIPE, text=True)
    assert recv.stdout.readline().strip() == "ready"
    sent = int(pair.a.run(sys.executable, "-c", SEND, pair.b.ip, str(rate), str(seconds),
                          timeout=seconds * 3 + 30).stdout)  # packets the kernel took
    out = json.loads(recv.communicate(timeout=seconds + delay_ms / 1000 + 30)[0])
    err = sorted(x - delay_ms for x in out["lat_ms"])
    stats = agent.call("stats")
    return {"rate": rate, "sent": sent, "received": len(err), "in_order": out["in_order"],
            "err_ms_median": round(statistics.median(err), 2) if err else None,
            "err_ms_p99": round(err[int(len(err) * 0.99) - 1], 2) if err else None,
            "err_ms_max": round(err[-1], 2) if err else None,
            "counts": stats["counts"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("rates", nargs="*", type=float, default=[500, 1000, 2000, 4000, 5000])
    args = ap.parse_args(argv)
    with NetnsPair() as pair:
        agent = Agent(pair.a)
        try:
            assert agent.call("apply", delay_ms=args.delay_ms)["backend"] in ("nfqueue", "netem")
            for rate in args.rates:
                print(json.dumps(trial(pair, agent, args.delay_ms, rate, args.seconds)), flush=True)
        finally:
            agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
