"""What one frame costs to decode, per path that reads frames: the probe's capture and the analysis.

Times ``probe.capture.packet_event`` (the capture reader thread's work per packet: decode, numbers
relative, the event dict) and ``controller.analysis.decode`` on a mix of frames like a run's (a
handshake, data, ACKs, a close; one VLAN-tagged), in the tree it runs from, best of ``--repeat``
rounds of ``--frames`` frames. No root, no namespace: a look at the decoder alone; bench/capture.py
measures the whole capture under a flood.

    .venv/bin/python -m bench.tcpheader [--frames 200000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Dot1Q, Ether

from controller import analysis
from probe.capture import RelativeSeq, packet_event

A, B = "10.90.0.1", "10.90.0.2"


def frames() -> list[bytes]:
    """Ten frames of one connection: SYN, SYN-ACK (options), ACK, data both ways, a tagged one, FINs."""
    def f(src, dst, sport, dport, flags, seq, ack=0, load=b"", vlan=False, **opts):
        tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=502, **opts)
        eth = Ether() / Dot1Q(vlan=5) if vlan else Ether()
        return bytes(eth / IP(src=src, dst=dst) / tcp / load)
    syn_opts = {"options": [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]}
    return [f(B, A, 40000, 9090, "S", 100, **syn_opts), f(A, B, 9090, 40000, "SA", 900, 101, **syn_opts),
            f(B, A, 40000, 9090, "A", 101, 901), f(B, A, 40000, 9090, "PA", 101, 901, b"Hello\n"),
            f(A, B, 9090, 40000, "A", 901, 107), f(A, B, 9090, 40000, "PA", 901, 107, b"x" * 1400),
            f(B, A, 40000, 9090, "A", 107, 2301, vlan=True), f(A, B, 9090, 40000, "FA", 2301, 107),
            f(B, A, 40000, 9090, "FA", 107, 2302), f(A, B, 9090, 40000, "A", 2302, 108)]


def per_frame_ns(fn, mix: list[bytes], n: int, repeat: int) -> float:
    work = (mix * (n // len(mix) + 1))[:n]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for frame in work:
            fn(frame)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.tcpheader", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    mix, rel = frames(), RelativeSeq()
    capture = per_frame_ns(lambda fr: packet_event(fr, 2_000_000_000, 1_000_000_000, A, rel), mix, args.frames,
                           args.repeat)
    decode = per_frame_ns(analysis.decode, mix, args.frames, args.repeat)
    print(f"tcpheader bench: {args.frames} frames x {args.repeat}, best round")
    print(f"capture.packet_event  {capture:7.0f} ns/frame")
    print(f"analysis.decode       {decode:7.0f} ns/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
