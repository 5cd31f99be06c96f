"""The sync barrier's counters event (issue 9 seam 4), over a real ZeroMQ socket, without root.

A real :class:`probe.daemon.Probe` (nothing started but its link: no capture, no tracefs, no
shaping) sends its events to a ROUTER the test binds, as the controller does. The barrier must put
a ``counters`` event on the wire after every event emitted before it, flat ``str -> int``, with
the counters the state merger, the kernel-states reader and the transport keep.
"""

from __future__ import annotations

import asyncio
import socket

import zmq
import zmq.asyncio

from probe.config import ProbeConfig
from probe.daemon import Probe
from tcplab import wire

SEAM_KEYS = {"statemerge_dropped_foreign", "statemerge_dropped_unresolved", "kstates_missed_pages",
             "transport_dropped"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _events(router: zmq.asyncio.Socket, quiet_s: float = 0.3) -> list[dict]:
    out = []
    while await router.poll(int(quiet_s * 1000)):
        ident, frame = await router.recv_multipart()
        env = wire.decode(frame)
        assert ident == b"thinkpad"
        if env["type"] == "events":
            out += env["body"]["events"]
    return out


def test_the_barrier_sends_the_counters_after_every_earlier_event(tmp_path):
    endpoint = f"ipc://{tmp_path}/controller.sock"
    cfg = ProbeConfig(path=tmp_path / "probe.yml", host="thinkpad", controller=endpoint, lab_ip="127.0.0.1",
                      lab_iface="lo", port=_free_port(), home=tmp_path)

    async def scenario() -> list[dict]:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.bind(endpoint)
        probe = Probe(cfg)
        probe.transport.connect()
        sender = asyncio.create_task(probe.link.send_events())
        try:
            probe.emit({"kind": "console", "text": "Hello\n", "stream": "stdout"})
            probe.observers.merger.dropped_foreign = 2
            probe.observers.merger.dropped_unresolved = 1
            probe.transport.dropped = 5
            await asyncio.wait_for(probe.barrier(), 5)
            assert probe.link.events.empty()  # all handed to the transport before the barrier returned
            return await _events(router)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            probe.transport.close()
            probe._netlink.shutdown()
            router.close(linger=0)
            ctx.term()

    events = asyncio.run(scenario())
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "console" and kinds[-1] == "counters" and kinds.count("counters") == 1, kinds
    counters = events[-1]
    assert set(counters) == {"kind", "t_ns", "counters"}
    assert isinstance(counters["t_ns"], int) and counters["t_ns"] >= events[0]["t_ns"]
    flat = counters["counters"]
    assert SEAM_KEYS <= set(flat)
    assert all(isinstance(k, str) and type(v) is int for k, v in flat.items()), flat
    assert {k: flat[k] for k in SEAM_KEYS} == {"statemerge_dropped_foreign": 2, "statemerge_dropped_unresolved": 1,
                                               "kstates_missed_pages": 0, "transport_dropped": 5}
    assert flat["transport_events"] == len(events) - 1  # the events sent before the counters were read
