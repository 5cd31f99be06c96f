"""The probe's memory with its controller unreachable: RSS while unacknowledged events pile up.

    .venv/bin/python -m bench.probe_memory [--events 20000,200000] [--seconds 30] [--size 1000] [--to ipc|tcp]

For each count, a probe-side Transport and Link in a process of their own (nothing else of the
probe) connect to an endpoint where nobody listens (``--to``: an ipc path, or a tcp port of
127.0.0.1 nobody has bound) and emit that many events of ``--size`` bytes of
text, as fast as the link takes them (a yield every 500, as observers do), then keep running
(heartbeats, the resends of a stall every RESEND_S) for ``--seconds``. Printed: the process's RSS
before, after the events, at the end and at its peak (VmHWM), and what the transport holds in
memory (its window) and on disk (its spill), what it dropped. Issue 10 measured 74 -> 398 MiB in
30 s for 20,000 events before the window, the spill and the send queue's high-water mark.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from pathlib import Path


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(n: int, seconds: float, size: int, home: str, to: str = "ipc") -> dict:
    """In this process: n events of ``size`` bytes to nobody, then ``seconds`` of keepalive."""
    from bench.event_path import endpoint
    from probe.link import Link
    from probe.transport import Transport

    async def main() -> dict:
        t = Transport(endpoint(to, Path(home), "nobody"), "thinkpad", hello={"pid": 1}, spill_dir=Path(home) / "spill")
        link = Link(t, lambda command: None)
        t.connect()
        await t.hello()
        tasks = [asyncio.create_task(c) for c in (link.receive(), link.send_events(), t.keepalive())]
        out = {"events": n, "rss_before_mib": rss_mib()}
        text = "x" * size
        for i in range(n):
            link.emit({"kind": "console", "text": text, "stream": "stdout"})
            if i % 500 == 0:
                await asyncio.sleep(0)
        await link.flush()
        out["rss_after_events_mib"] = rss_mib()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
        box = t.outbox
        out.update(rss_end_mib=rss_mib(), rss_peak_mib=rss_mib("VmHWM"), window_mib=box.window_bytes / 2**20,
                   spill_mib=box.spill.bytes / 2**20, held=box.held, dropped=box.dropped, spilled=box.spilled,
                   resent=t.resent)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        t.close()
        out["spill_files_left"] = len(list((Path(home) / "spill").glob("*")))
        return out

    return asyncio.run(main())


def _child(n: int, seconds: float, size: int, home: str, to: str, queue) -> None:
    queue.put(measure(n, seconds, size, home, to))


def in_process(n: int, seconds: float, size: int = 1000, to: str = "ipc") -> dict:
    """:func:`measure` in a fresh process (its RSS is the probe's alone)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as home:
        proc = ctx.Process(target=_child, args=(n, seconds, size, home, to, queue))
        proc.start()
        out = queue.get(timeout=seconds + 600)
        proc.join(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="20000,200000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--to", choices=("ipc", "tcp"), default="ipc")
    args = parser.parse_args()
    print(f"probe memory, controller unreachable ({args.to}), events of {args.size} bytes, "
          f"{args.seconds:g} s after the last")
    print(f"{'events':>8} {'RSS before':>11} {'after':>8} {'end':>8} {'peak':>8} {'window':>8} {'spill':>8} "
          f"{'dropped':>8} {'resent':>8}  (MiB)")
    for n in (int(x) for x in args.events.split(",")):
        m = in_process(n, args.seconds, args.size, args.to)
        print(f"{n:>8} {m['rss_before_mib']:>11.1f} {m['rss_after_events_mib']:>8.1f} {m['rss_end_mib']:>8.1f} "
              f"{m['rss_peak_mib']:>8.1f} {m['window_mib']:>8.1f} {m['spill_mib']:>8.1f} {m['dropped']:>8} "
              f"{m['resent']:>8}")


if __name__ == "__main__":
    main()
