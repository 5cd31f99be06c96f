"""The issue's attacks on message bodies, each against a real receiver on real ZeroMQ ipc sockets (no
root): a result with id=[1], a list `type`, an event with text as bytes, wall_ns=-1, a state
without local. Each is refused and counted, and the receiver answers the next valid frame: the
controller's probe bus (a whole frame refused, or one event of a batch, its number still taken),
and the probe's transport (frames from its controller)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgpack
import zmq
import zmq.asyncio

from bench.fuzz_frames import FIELDS, nested
from controller.bus import ProbeBus
from controller.fleet import Fleet
from controller.run import Run
from probe.transport import Transport
from tcplab import wire


def _console(text: str = "fine") -> dict:
    return {"kind": "console", "t_ns": time.monotonic_ns(), "text": text, "stream": "stdout"}


ATTACKS = [  # one bad event each, as the issue tried them
    {**_console(), "text": b"INJECTED"},
    {"kind": "packet", "t_ns": 1, "wall_ns": -1, "dir": "in", "src": "10.90.0.2:1", "dst": "10.90.0.1:9090",
     "flags": ["SYN"], "raw": b"\x00" * 60},
    {"kind": "state", "t_ns": 1, "remote": "10.90.0.2:1", "from": "CLOSED", "to": "ESTABLISHED"},
]


def _raw(type_, body) -> bytes:
    return msgpack.packb({"v": 1, "type": type_, "host": "thinkpad", "seq": 1, "time": 1, "body": body})


async def _until(sock, session: wire.Session, type_: str) -> dict:
    while True:
        env = session.decode(await asyncio.wait_for(sock.recv(), 5))
        if env["type"] == type_:
            return env["body"]


@contextlib.asynccontextmanager
async def _bus(tmp_path):
    """A real ProbeBus serving on ipc, and a DEALER speaking as thinkpad (its Session)."""
    ctx = zmq.asyncio.Context()
    bus = ProbeBus(ctx, Fleet())
    bus.bind(f"ipc://{tmp_path}/probes.sock")
    serving = asyncio.create_task(bus.serve())
    probe = ctx.socket(zmq.DEALER)
    probe.setsockopt(zmq.ROUTING_ID, b"thinkpad")
    probe.setsockopt(zmq.LINGER, 0)
    probe.connect(f"ipc://{tmp_path}/probes.sock")
    try:
        yield bus, probe, wire.Session("thinkpad")
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        if bus.run is not None:
            bus.run.close()
        probe.close()
        bus.close(0)
        ctx.term()


def test_the_probe_bus_refuses_each_attack_counts_it_and_serves_the_next_frame(tmp_path):
    async def scenario():
        async with _bus(tmp_path) as (bus, probe, session):
            bus.run = run = Run(tmp_path / "run", ("thinkpad",))
            await session.send(probe, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            await _until(probe, session, "welcome")
            # whole frames: a list type, a result id=[1], an events body that is no batch, a hello's lab_ip "-lk"
            for frame in (_raw(["events"], {}), _raw("result", {"id": [1], "ok": True}), _raw("events", {"events": 3}),
                          _raw("hello", {"pid": 1, "lab_ip": "-lk"})):
                await probe.send(frame)
            # one batch: the three bad events and a good one; all four numbers taken, three refused
            await probe.send(session.batch([*ATTACKS, _console()])[1])
            assert (await _until(probe, session, "ack"))["seq"] == 4
            counters = bus.fleet.counters("thinkpad")
            assert counters["link_frames_refused"] == 4 and counters["link_events_refused"] == 3
            assert bus.session.counters["refused"] == 4
            assert [r["text"] for r in run.trace.records if r["kind"] == "console"] == ["fine"]
            losses = [(r["from"], r["why"]) for r in run.trace.records if r["kind"] == "loss"]
            assert losses == [(1, "refused"), (2, "refused"), (3, "refused")]
            assert bus.lab_ip("thinkpad") != "-lk"

            # and the bus still serves: a command is answered by its result
            async def answer():
                body = await _until(probe, session, "command")
                await session.send(probe, "result", {"id": body["id"], "ok": True, "data": {}})
            answering = asyncio.create_task(answer())
            assert (await bus.command("thinkpad", "listen", {}, 5))["ok"] is True
            await answering
            # a command the probe would refuse is refused here, with its reason, without a frame
            refused = await bus.command("thinkpad", "listen", {"cmd": "sh"}, 5)
            assert refused["ok"] is False and refused["error"] == "listen takes no argument 'cmd'"
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_probe_transport_refuses_bad_frames_from_its_controller_and_reads_the_next(tmp_path):
    async def scenario():
        ctx = zmq.asyncio.Context()
        ctl = ctx.socket(zmq.ROUTER)
        ctl.setsockopt(zmq.LINGER, 0)
        ctl.bind(f"ipc://{tmp_path}/ctl.sock")
        t = Transport(f"ipc://{tmp_path}/ctl.sock", "thinkpad", hello={"pid": 1, "port": 9090}, ctx=ctx,
                      spill_dir=tmp_path / "spill")
        t.connect()
        try:
            await t.hello()
            await asyncio.wait_for(ctl.recv_multipart(), 5)  # its hello: it is connected
            session = wire.Session("controller")
            bad = [_raw(["ack"], {}), _raw("ack", {"seq": [1]}), _raw("ping", {"id": "x"}),
                   _raw("command", {"id": 1, "action": "listen", "args": {"cmd": "sh"}}),
                   _raw("command", {"id": 2, "action": "connect", "args": {"ip": "-lk"}, "shell": True}),
                   _raw("welcome", {"ack": -1})]
            for frame in bad:
                await ctl.send_multipart([b"thinkpad", frame])
            await session.send(ctl, "ping", {"id": 5}, to=b"thinkpad")
            env = await asyncio.wait_for(t.recv(), 5)
            assert (env["type"], env["body"]) == ("ping", {"id": 5})
            assert t.session.counters["refused"] == len(bad) and not t.welcomed.is_set()
        finally:
            t.close()
            ctl.close()
            ctx.term()
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_flood_of_refused_frames_is_counted_each_and_logged_a_few(tmp_path):
    from structlog.testing import capture_logs

    async def scenario():
        async with _bus(tmp_path) as (bus, probe, session):
            with capture_logs() as logs:
                for _ in range(2500):
                    await probe.send(_raw("result", {"id": [1], "ok": True}))
                await session.send(probe, "hello", {"pid": 1})
                await _until(probe, session, "welcome")  # after every refused frame: served
            assert bus.fleet.counters("thinkpad")["link_frames_refused"] == 2500
            logged = [e["refused"] for e in logs if e["event"] == "frame_refused"]
            assert logged == [*range(1, 11), 1000, 2000]
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_lists_nested_as_deep_as_msgpack_allows_are_refused_not_a_recursion_error(tmp_path):
    """repr() of a list nested ~1000 deep raised RecursionError (not a ProtocolError) out of the
    decoder when it named the bad value: one frame ended the bus."""
    async def scenario():
        async with _bus(tmp_path) as (bus, probe, session):
            frames = [nested("thinkpad", field, depth) for field in FIELDS
                      for depth in range(900, 1030, 7)]
            for frame in frames:
                await probe.send(frame)
            await session.send(probe, "hello", {"pid": 1})
            await _until(probe, session, "welcome")
            assert bus.fleet.counters("thinkpad")["link_frames_refused"] == len(frames)
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_probe_answers_a_result_that_would_not_fit_as_a_failure_saying_why():
    """The controller's decode would drop such a result, and its step would wait out the command's
    timeout: the probe cuts a long error and answers what cannot fit as a failure instead."""
    from probe.commands import fitted
    from tcplab.wire import bodies

    long = fitted({"id": 4, "ok": False, "error": "e" * 100_000})
    assert long["error"].endswith(" ... (cut)") and len(long["error"]) <= bodies.TEXT
    bodies.check_body("result", long)
    odd = fitted({"id": 5, "ok": True, "data": {"pid": 7}})
    assert odd == {"id": 5, "ok": False, "error": "the probe's result did not fit the wire: result body field "
                                                  "'data' has no field 'pid'"}
    assert fitted({"id": 6, "ok": True, "data": {}}) == {"id": 6, "ok": True, "data": {}}
