"""Event path: events per second from a probe's Transport into the controller's trace.

    .venv/bin/python -m bench.event_path [--events N]

The tcplab row: a probe-side :class:`probe.transport.Transport` (its frames from a wire Session) in
its own process sends N events (the sizes of real state and packet records) to a real
:class:`controller.daemon.Controller` with a run open; it counts until the N-th record is in
``trace.partial.jsonl``. The events go through msgpack, the wire checks, acknowledgements, the
clock mapping and the trace writer.

The baseline row, measured in the same run: a bare pyzmq PUSH -> PULL of the same msgpack'd
frames, the receiver only counting. The ratio says what the checks, acks and the trace cost.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import zmq

from tcplab import wire

STATE = {"kind": "state", "local": "10.90.0.1:9090", "remote": "10.90.0.2:41234", "from": "SYN_RECEIVED",
         "to": "ESTABLISHED", "source": "inet_diag"}
PACKET = {"kind": "packet", "dir": "out", "src": "10.90.0.1:9090", "dst": "10.90.0.2:41234",
          "flags": ["PSH", "ACK"], "seq": 1, "ack": 1, "len": 6, "payload": "Hello\n", "win": 502,
          "raw": bytes(72), "wall_ns": 0, "linktype": 1}


def bodies(n: int):
    for i in range(n):
        body = dict(PACKET if i % 2 else STATE)
        body["t_ns"] = time.monotonic_ns()
        if body["kind"] == "packet":
            body["wall_ns"] = time.time_ns()
        yield body


def _probe(endpoint: str, n: int) -> None:
    from probe.transport import Transport

    async def main() -> None:
        t = Transport(endpoint, "thinkpad", hello={"lab_ip": "10.90.0.1", "pid": 1})
        t.connect()
        await t.hello()
        keep = asyncio.create_task(t.keepalive())
        recv = asyncio.create_task(_drain_recv(t))
        await asyncio.wait_for(t.welcomed.wait(), 10)
        for body in bodies(n):
            await t.event(body)
        await t.drain(120)
        keep.cancel()
        recv.cancel()
        t.close()

    async def _drain_recv(t) -> None:
        while True:
            await t.recv()

    asyncio.run(main())


async def tcplab_rate(n: int) -> float:
    from controller.config import ControllerConfig
    from controller.daemon import Controller
    from controller.run import Run

    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as tmp:
        root = Path(tmp)
        endpoint = f"ipc://{root}/probes.sock"
        cfg = ControllerConfig(path=root / "c.yml", bind=endpoint, home=root / "home", runs_dir=root / "runs")
        ctl = Controller(cfg)
        serve = asyncio.create_task(ctl.serve())
        await asyncio.sleep(0.2)
        run_dir = root / "runs" / "bench"
        run_dir.mkdir(parents=True)
        ctl.run = Run(run_dir, ("thinkpad",))
        ctl.run.start_ns = 0  # every event counts, whatever its time
        proc = mp.get_context("spawn").Process(target=_probe, args=(endpoint, n))
        proc.start()
        while "thinkpad" not in ctl.fleet.probes:
            if not proc.is_alive():
                raise RuntimeError(f"probe process ended before saying hello (exit {proc.exitcode})")
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        while len(ctl.run.trace.records) < n:
            await asyncio.sleep(0.005)
            if not proc.is_alive() and len(ctl.run.trace.records) < n:
                raise RuntimeError(f"probe process ended after {len(ctl.run.trace.records)} of {n} events")
        elapsed = time.perf_counter() - start
        proc.join(30)
        ctl.run.close()
        ctl.stopping.set()
        await serve
    return n / elapsed


def _push(endpoint: str, frames: list[bytes]) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(endpoint)
    for f in frames:
        s.send(f)
    s.close(linger=-1)
    ctx.term()


def baseline_rate(n: int) -> float:
    session = wire.Session("thinkpad")  # the same numbered, checked frames the Transport makes
    frames = [session.frame("event", b) for b in bodies(n)]
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as tmp:
        endpoint = f"ipc://{tmp}/pull.sock"
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)
        pull.bind(endpoint)
        proc = mp.get_context("spawn").Process(target=_push, args=(endpoint, frames))
        proc.start()
        pull.recv()
        start = time.perf_counter()
        for _ in range(n - 1):
            pull.recv()
        elapsed = time.perf_counter() - start
        proc.join(30)
        pull.close()
        ctx.term()
    return (n - 1) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    frame_sizes = sorted({len(wire.Session("thinkpad").frame("event", b)) for b in bodies(2)})
    base = baseline_rate(args.events)
    ours = asyncio.run(tcplab_rate(args.events))
    print(f"event path, {args.events} events of {frame_sizes[0]}-{frame_sizes[-1]} bytes (state and packet records)")
    print(f"{'path':<52} {'events/s':>10} {'vs baseline':>12}")
    print(f"{'baseline: bare pyzmq PUSH/PULL, same frames, ipc':<52} {base:>10.0f} {1.0:>11.2f}x")
    print(f"{'tcplab: Transport -> Controller -> trace.jsonl, ipc':<52} {ours:>10.0f} {ours / base:>11.2f}x")


if __name__ == "__main__":
    main()
