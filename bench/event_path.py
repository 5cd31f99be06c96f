"""Event path: events per second from a probe's Transport into the controller's trace, CurveZMQ on.

    .venv/bin/python -m bench.event_path [--events N] [--transports ipc,tcp] [--profile DIR]

The tcplab row, per transport (ipc:// and tcp://127.0.0.1): a probe-side
:class:`probe.transport.Transport` in its own process (a Curve client) sends N events (the sizes of
real state and packet records, handed over as the probe's link does, :data:`probe.link.TAKE` at a
time) to a real :class:`controller.daemon.Controller` (a Curve server with its authenticator) with
a run open; it counts until the N-th record is in the trace. The events go through the batching,
msgpack, Curve, the wire checks (every event checked), acknowledgements, the clock mapping, the
trace writer and the pcap files.

The baseline rows, measured in the same run over the same transport: the very frames the
Transport makes (its Outbox's batches) sent bare with pyzmq, DEALER -> ROUTER, the receiver only
counting, once with Curve (the ratio printed is against this one) and once without (for scale);
and with Curve, the receiver msgpack-decoding each frame: the ceiling of any Python receiver that
reads the events (msgpack alone costs about 1.6 us an event here, where bare pyzmq moves one in
0.3 us), so the 0.5x issue 10 asks for is out of reach of a receiver that looks at each event.

``--profile DIR``: cProfile of both tcplab processes (``DIR/controller.prof``, ``DIR/probe.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing as mp
import socket
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

STATE = {"kind": "state", "local": "10.90.0.1:9090", "remote": "10.90.0.2:41234", "from": "SYN_RECEIVED",
         "to": "ESTABLISHED", "source": "inet_diag"}
PACKET = {"kind": "packet", "dir": "out", "src": "10.90.0.1:9090", "dst": "10.90.0.2:41234",
          "flags": ["PSH", "ACK"], "seq": 1, "ack": 1, "len": 6, "payload": "Hello\n", "win": 502,
          "raw": bytes(72), "wall_ns": 0, "frame_len": 72}
HOST = "thinkpad"


def bodies(n: int):
    for i in range(n):
        body = dict(PACKET if i % 2 else STATE)
        body["t_ns"] = time.monotonic_ns()
        if body["kind"] == "packet":
            body["wall_ns"] = time.time_ns()
        yield body


def keys():
    """A controller's and a probe's Curve keys (tcplab.wire.curve.Keys), made for this run."""
    from tcplab.wire.curve import CONTROLLER, Keys
    cpub, csec = zmq.curve_keypair()
    ppub, psec = zmq.curve_keypair()
    return (Keys(CONTROLLER, cpub, csec, {HOST: ppub}), Keys(HOST, ppub, psec, {CONTROLLER: cpub}))


def endpoint(kind: str, root: Path, name: str) -> str:
    """An ipc path in ``root``, or a tcp port of 127.0.0.1 that was free a moment ago."""
    if kind == "ipc":
        return f"ipc://{root}/{name}.sock"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def frames(n: int) -> tuple[list[bytes], int]:
    """The frames a Transport makes of n events (its outbox's batches) and their events."""
    from probe.link import TAKE
    from probe.outbox import Outbox
    from tcplab import wire
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as tmp:
        box = Outbox(wire.Session(HOST), tmp, max_bytes=1 << 40, max_spill=0, batch_bytes=_batch_bytes())
        chunk: list[dict] = []
        for body in bodies(n):
            chunk.append(body)
            if len(chunk) == TAKE:
                box.add(chunk)
                chunk = []
        if chunk:
            box.add(chunk)
        return [b.frame for b in box.window], sum(b.count for b in box.window)


def _batch_bytes() -> int:
    from probe.transport import BATCH_BYTES
    return BATCH_BYTES


# --- the tcplab path ----------------------------------------------------------------------------
def _probe(address: str, n: int, probe_keys, profile: str | None) -> None:
    from probe.link import TAKE
    from probe.transport import Transport

    async def main() -> None:
        t = Transport(address, HOST, hello={"lab_ip": "10.90.0.1", "pid": 1}, curve=probe_keys)
        t.connect()
        await t.hello()
        keep = asyncio.create_task(t.keepalive())
        recv = asyncio.create_task(_recv(t))
        await asyncio.wait_for(t.welcomed.wait(), 10)
        chunk: list[dict] = []
        for body in bodies(n):
            chunk.append(body)
            if len(chunk) == TAKE:
                await t.events(chunk)
                chunk = []
        if chunk:
            await t.events(chunk)
        await t.drain(300)
        keep.cancel()
        recv.cancel()
        t.close()

    async def _recv(t) -> None:
        while True:
            await t.recv()

    _profiled(profile, lambda: asyncio.run(main()))


def _profiled(path: str | None, fn) -> None:
    if path is None:
        fn()
        return
    prof = cProfile.Profile()
    prof.runcall(fn)
    prof.dump_stats(path)


async def tcplab_rate(kind: str, n: int, profile: Path | None) -> float:
    from controller.config import ControllerConfig
    from controller.daemon import Controller
    from controller.run import Run

    ctl_keys, probe_keys = keys()
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as tmp:
        root = Path(tmp)
        address = endpoint(kind, root, "probes")
        cfg = ControllerConfig(path=root / "c.yml", bind=address, home=root / "home", runs_dir=root / "runs",
                               hosts=(HOST,), curve=ctl_keys)
        ctl = Controller(cfg)
        serve = asyncio.create_task(ctl.serve())
        await asyncio.sleep(0.2)
        run_dir = root / "runs" / "bench"
        run_dir.mkdir(parents=True)
        ctl.run = Run(run_dir, (HOST,))
        ctl.run.start_ns = 0  # every event counts, whatever its time
        proc = mp.get_context("spawn").Process(
            target=_probe, args=(address, n, probe_keys, str(profile / f"probe-{kind}.prof") if profile else None))
        proc.start()
        while HOST not in ctl.fleet.probes:
            if not proc.is_alive():
                raise RuntimeError(f"probe process ended before saying hello (exit {proc.exitcode})")
            await asyncio.sleep(0.01)
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        start = time.perf_counter()
        while len(ctl.run.trace.records) < n:
            await asyncio.sleep(0.005)
            if not proc.is_alive() and len(ctl.run.trace.records) < n:
                raise RuntimeError(f"probe process ended after {len(ctl.run.trace.records)} of {n} events")
        elapsed = time.perf_counter() - start
        if prof:
            prof.disable()
            prof.dump_stats(str(profile / f"controller-{kind}.prof"))
        proc.join(60)
        ctl.run.close()
        ctl.stopping.set()
        await serve
    return n / elapsed


# --- the baseline -------------------------------------------------------------------------------
def _push(address: str, payload: list[bytes], client) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    if client is not None:
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = client
    s.connect(address)
    for f in payload:
        s.send(f)
    s.close(linger=-1)
    ctx.term()


def baseline_rate(kind: str, payload: list[bytes], events: int, curve: bool, unpack: bool = False) -> float:
    """Events per second of ``payload`` (``events`` in all) sent bare, the receiver only counting
    (``unpack``: and msgpack-decoding each frame, the least any receiver that reads events does)."""
    ctl_keys, probe_keys = keys()
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as tmp:
        address = endpoint(kind, Path(tmp), "bare")
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        if curve:
            router.curve_server = True
            router.curve_publickey, router.curve_secretkey = ctl_keys.public, ctl_keys.secret
        router.bind(address)
        client = (probe_keys.public, probe_keys.secret, ctl_keys.public) if curve else None
        proc = mp.get_context("spawn").Process(target=_push, args=(address, payload, client))
        proc.start()
        router.recv_multipart()  # the first frame starts the clock: its events are not counted
        start = time.perf_counter()
        for _ in range(len(payload) - 1):
            msg = router.recv_multipart()
            if unpack:
                msgpack.unpackb(msg[-1], raw=False)
        elapsed = time.perf_counter() - start
        proc.join(30)
        router.close()
        ctx.term()
    return events * (len(payload) - 1) / len(payload) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--transports", default="ipc,tcp")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of both processes here")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    payload, events = frames(args.events)
    sizes = sorted(len(f) for f in payload)
    print(f"event path, {events} events (state and packet records) in {len(payload)} batches of "
          f"{sizes[0]}-{sizes[-1]} bytes, CurveZMQ on")
    print(f"{'path':<58} {'events/s':>10} {'vs baseline':>12}")
    for kind in args.transports.split(","):
        plain = baseline_rate(kind, payload, events, curve=False)
        base = baseline_rate(kind, payload, events, curve=True)
        unpacked = baseline_rate(kind, payload, events, curve=True, unpack=True)
        ours = asyncio.run(tcplab_rate(kind, events, args.profile))
        print(f"{f'baseline: bare pyzmq DEALER/ROUTER, same frames, {kind}, no Curve':<58} {plain:>10.0f} "
              f"{plain / base:>11.2f}x")
        print(f"{f'baseline: bare pyzmq DEALER/ROUTER, same frames, {kind}, Curve':<58} {base:>10.0f} {1.0:>11.2f}x")
        print(f"{f'  the same, the receiver msgpack-decoding each frame':<58} {unpacked:>10.0f} "
              f"{unpacked / base:>11.3f}x")
        print(f"{f'tcplab: Transport -> Controller -> trace, {kind}, Curve':<58} {ours:>10.0f} {ours / base:>11.3f}x")


if __name__ == "__main__":
    main()
