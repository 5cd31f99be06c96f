"""Does the probe's capture keep up? Probe vs ``tcpdump -w`` on the same flood, rate by rate.

Builds a fresh namespace pair, and for each rate: starts on host b (10.90.0.2) the probe's
``Capture`` on eth0 (in a process of its own, handing each batch of events to an asyncio loop as the
probe daemon does; ``--sink asyncio`` hands each event of a batch over on its own, ``--sink plain``
counts them in the reader thread) and ``tcpdump -w`` with the same
filter; then floods from host a raw TCP segments to b's port 9090 (bad checksum, so b's stack ignores
them and answers nothing) at that rate for a few seconds (tests/flood.py: a raw socket and
``sendmmsg`` through ctypes, paced in batches of up to 256; ~290,000 packets/s alone here, a
``sendto`` loop ~220,000), and measures the rate it really achieved. Prints,
per rate: packets sent, captured by the probe and by tcpdump, the loss of each, the kernel drops the
probe's ring reported, and the probe's CPU seconds per 10,000 packets (its reader thread, and its whole
process with the asyncio hand-over). Run as root from the repository root:

    .venv/bin/python -m bench.capture [--seconds 2] [--sink asyncio|batch|plain] [RATE ... | max]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from tests.flood import flood
from tests.netns import NetnsPair

PORT = 9090
DEFAULT_RATES = ["5000", "10000", "20000", "50000", "100000", "max"]

PROBE = r"""
import asyncio, importlib, json, resource, sys, time
ifname, port, local_ip, sink, module = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
Capture = importlib.import_module(module).Capture

def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime

async def main():
    loop = asyncio.get_running_loop()
    seen = [0]
    queue = asyncio.Queue()
    def count(events):
        seen[0] += len(events)
    def to_loop(events):  # one hand-over per event
        for event in events:
            loop.call_soon_threadsafe(queue.put_nowait, event)
    def batch_to_loop(events):  # one hand-over per batch, as the probe daemon does
        loop.call_soon_threadsafe(put_all, events)
    def put_all(events):
        for event in events:
            queue.put_nowait(event)
    async def consume():
        while True:
            await queue.get()
            seen[0] += 1
    consumer = asyncio.create_task(consume())
    sinks = {"batch": batch_to_loop, "plain": count, "asyncio": to_loop}
    cap = Capture(ifname, port, local_ip, on_packets=sinks[sink])
    await asyncio.to_thread(cap.start)
    cpu0 = cpu()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    stats = await asyncio.to_thread(cap.stop)
    while not queue.empty():
        await asyncio.sleep(0.01)
    consumer.cancel()
    print(json.dumps({**stats, "delivered": seen[0], "process_cpu_s": cpu() - cpu0}), flush=True)

asyncio.run(main())
"""


def _wait_line(stream, want: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"process ended before {want!r}")
        if want in line:
            return
    raise RuntimeError(f"no {want!r} within {timeout}s")


def _tcpdump_counts(stderr: str) -> dict:
    out = {}
    for line in stderr.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].isdigit():
            key = {"captured": "captured", "received": "received", "dropped": "dropped"}.get(words[2])
            if key:
                out[key] = int(words[0])
    return out


def one_rate(pair: NetnsPair, rate: float, seconds: float, sink: str, module: str, workdir: str) -> dict:
    a, b = pair.a, pair.b
    probe = b.popen(sys.executable, "-c", PROBE, "eth0", str(PORT), b.ip, sink, module, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    pcap = os.path.join(workdir, f"flood-{int(rate)}.pcap")
    dump = b.popen("tcpdump", "-n", "-i", "eth0", "-w", pcap, f"tcp port {PORT}", stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, text=True)
    try:
        _wait_line(probe.stdout, "ready")
        _wait_line(dump.stderr, "listening on")
        count = int(rate * seconds) if rate > 0 else 1 << 62
        sent = flood(a, a.ip, b.ip, PORT, count, rate, seconds * 1.5 if rate > 0 else seconds)
        time.sleep(1.5)  # let both readers empty what the kernel holds (libpcap hands a block over after 1 s)
        dump.send_signal(signal.SIGINT)
        tcpdump = _tcpdump_counts(dump.communicate(timeout=30)[1])
        out, _ = probe.communicate("stop\n", timeout=60)
        stats = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in (probe, dump):
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.exists(pcap):
            os.unlink(pcap)
    return {"target": rate, "sent": sent.sent, "send_failed": sent.failed, "achieved": sent.rate,
            "probe": stats["delivered"], "probe_drops": stats.get("kernel_drops"),
            "tcpdump": tcpdump.get("captured"), "tcpdump_drops": tcpdump.get("dropped"),
            "reader_cpu_s": stats.get("cpu_s"), "process_cpu_s": stats["process_cpu_s"]}


def _per10k(cpu: float | None, packets: int) -> str:
    return "-" if cpu is None or not packets else f"{cpu / packets * 10_000:.3f}"


def print_table(rows: list[dict]) -> None:
    head = ("target/s", "achieved/s", "sent", "probe", "loss", "ring drops", "tcpdump", "loss", "tcpd drops",
            "cpu s/10k reader", "cpu s/10k process")
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for r in rows:
        tcpdump = r["tcpdump"] if r["tcpdump"] is not None else "-"
        tloss = "-" if r["tcpdump"] is None else f"{r['sent'] - r['tcpdump']} ({(r['sent'] - r['tcpdump']) / r['sent']:.2%})"
        print(" | ".join(str(x) for x in (
            "max" if r["target"] <= 0 else f"{r['target']:.0f}", f"{r['achieved']:.0f}", r["sent"], r["probe"],
            f"{r['sent'] - r['probe']} ({(r['sent'] - r['probe']) / r['sent']:.2%})", r["probe_drops"], tcpdump, tloss,
            r["tcpdump_drops"], _per10k(r["reader_cpu_s"], r["probe"]), _per10k(r["process_cpu_s"], r["probe"]))))
    clean = [r["achieved"] for r in rows if r["sent"] == r["probe"]]
    clean_t = [r["achieved"] for r in rows if r["tcpdump"] == r["sent"]]
    print(f"\nlargest rate with zero loss: probe {max(clean, default=0):.0f}/s, tcpdump -w {max(clean_t, default=0):.0f}/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.capture", description=__doc__.splitlines()[0])
    parser.add_argument("rates", nargs="*", default=DEFAULT_RATES, help="packets/s, or max (unpaced)")
    parser.add_argument("--seconds", type=float, default=2.0, help="flood length per rate")
    parser.add_argument("--sink", choices=("asyncio", "batch", "plain"), default="asyncio",
                        help="hand each event to an asyncio loop on its own, or each batch as the daemon does, "
                             "or just count them in the reader thread")
    parser.add_argument("--capture", default="probe.capture", help="module whose Capture to measure")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.capture: needs root (network namespaces)", file=sys.stderr)
        return 2
    rates = [0.0 if r == "max" else float(r) for r in args.rates]
    rows = []
    with NetnsPair() as pair, tempfile.TemporaryDirectory(prefix="tcplab-bench-") as workdir:
        pair.a.run("ping", "-c1", "-W1", pair.b.ip, check=False)  # resolve b's MAC before the flood
        for rate in rates:
            rows.append(one_rate(pair, rate, args.seconds, args.sink, args.capture, workdir))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"capture bench: {args.seconds:g} s floods, sink={args.sink}, capture={args.capture}, cpus={os.cpu_count()}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
