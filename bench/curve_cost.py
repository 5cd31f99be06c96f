"""What CurveZMQ costs on the probe -> controller path: frames/s of bare pyzmq, DEALER -> ROUTER, the
sender in a process of its own, the receiver an asyncio loop that reads as the bus does (a burst
with NOBLOCK after each wait), over ipc and tcp (loopback):

- ``plain``:            no Curve, ``recv_multipart()`` (bytes);
- ``curve``:            Curve on both sides, the same read;
- ``curve+user-id``:    Curve, and what the bus does per frame with Curve: ``copy=False``, the frame's
                        ``User-Id`` (the key's host) compared with the routing id, then the bytes.

    .venv/bin/python -m bench.curve_cost [--frames 200000] [--size 600]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

import zmq
import zmq.asyncio

from controller.keys import make_keys
from tcplab.wire import curve

MODES = ("plain", "curve", "curve+user-id")


def _sender(endpoint: str, keys_dir: str | None, frames: int, size: int, go) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.ROUTING_ID, b"thinkpad")
    s.setsockopt(zmq.SNDHWM, 0)
    if keys_dir:
        curve.client(s, curve.load_probe_keys(keys_dir, "thinkpad"))
    s.connect(endpoint)
    payload = b"x" * size
    s.send(payload)  # the handshake, then the timed frames
    go.wait()
    for _ in range(frames):
        s.send(payload)
    s.close(linger=-1)
    ctx.term()


async def _receive(endpoint: str, keys_dir: str | None, mode: str, frames: int, size: int) -> float:
    ctx = zmq.asyncio.Context()
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.RCVHWM, 0)
    auth = None
    if keys_dir:
        keys = curve.load_controller_keys(keys_dir, ["thinkpad"])
        auth = curve.Authenticator(ctx, keys)
        auth.start()
        curve.server(r, keys)
    r.bind(endpoint)
    go = multiprocessing.Event()
    p = multiprocessing.Process(target=_sender, args=(endpoint, keys_dir, frames, size, go))
    p.start()
    await r.recv_multipart()
    copy = mode != "curve+user-id"
    got, refused = 0, 0
    go.set()
    t0 = time.perf_counter()
    while got < frames:
        msg = await r.recv_multipart(copy=copy)
        while True:
            if not copy:
                if msg[-1].get("User-Id") != msg[0].bytes.decode():
                    refused += 1
                msg = [f.bytes for f in msg]
            got += 1
            try:
                msg = await r.recv_multipart(flags=zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                break
    rate = frames / (time.perf_counter() - t0)
    p.join()
    r.close(linger=0)
    if auth:
        auth.stop()
    ctx.term()
    assert refused == 0
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.curve_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=600, help="bytes per frame (a batch of a few events)")
    ap.add_argument("--repeat", type=int, default=3, help="best of")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tcplab-curve-") as d:
        make_keys(Path(d) / "keys", ["controller", "thinkpad"])
        for transport in ("ipc", "tcp"):
            rates = {}
            for mode in MODES:
                endpoint = f"ipc://{d}/{mode}.sock" if transport == "ipc" else "tcp://127.0.0.1:47190"
                keys_dir = str(Path(d) / "keys") if mode != "plain" else None
                rates[mode] = max(asyncio.run(_receive(endpoint, keys_dir, mode, args.frames, args.size))
                                  for _ in range(args.repeat))
            for mode in MODES:
                print(f"{transport}  {mode:14} {rates[mode]:10,.0f} frames/s  {rates[mode] / rates['plain']:.2f}x plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
