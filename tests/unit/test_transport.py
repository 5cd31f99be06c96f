"""The probe's transport over real ZeroMQ sockets (ipc:// in a temp dir, no root): a test ROUTER
plays the controller. Acknowledgements, resends on a stall (and only then), the welcome's resend,
the bound on unacknowledged events, the hello after silence, and refused frames.

The transport's periods are shortened for the test (HEARTBEAT_S, RESEND_S, SILENCE_S)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import zmq
import zmq.asyncio

from probe import transport as transport_mod
from probe.transport import Transport
from tcplab import wire


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(transport_mod, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(transport_mod, "RESEND_S", 0.4)
    monkeypatch.setattr(transport_mod, "SILENCE_S", 60.0)
    return monkeypatch


class Controller:
    """The controller's side: a ROUTER and a Session; keeps every frame a probe sent, by type."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.session = wire.Session("controller")
        self.frames: list[dict] = []

    async def take(self, timeout: float = 0.05, most: int | None = None) -> list[dict]:
        """Every frame that arrives within ``timeout`` of the previous one (at most ``most``)."""
        got: list[dict] = []
        while (most is None or len(got) < most) and await self.sock.poll(int(timeout * 1000)):
            ident, frame = await self.sock.recv_multipart()
            got.append(self.session.decode(frame, peer=ident))
        self.frames += got
        return got

    async def until(self, pred, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not pred(self.frames):
            assert time.monotonic() < deadline, f"not seen in {timeout} s: {[f['type'] for f in self.frames]}"
            await self.take(0.02)
        return self.frames

    def events(self) -> list[int]:
        """The number of every event received, batch after batch (duplicates included)."""
        return [seq for f in self.frames if f["type"] == "events"
                for seq in range(f["seq"], f["seq"] + len(f["body"]["events"]))]

    async def send(self, type_: str, body: dict) -> None:
        await self.session.send(self.sock, type_, body, to=b"thinkpad")


@contextlib.asynccontextmanager
async def probe(endpoint: str, ctx: zmq.asyncio.Context):
    """A started Transport (hello sent) with its receiver and keepalive tasks, as the probe runs them."""
    t = Transport(endpoint, "thinkpad", hello={"pid": 1, "port": 9090}, ctx=ctx)
    t.connect()
    await t.hello()

    async def pump():
        while True:
            await t.recv()

    tasks = [asyncio.create_task(pump()), asyncio.create_task(t.keepalive())]
    try:
        yield t
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        t.close()


@contextlib.asynccontextmanager
async def link(tmp_path, welcome: bool = True):
    ctx = zmq.asyncio.Context()
    endpoint = f"ipc://{tmp_path}/ctl.sock"
    ctl = Controller(ctx, endpoint)
    try:
        async with probe(endpoint, ctx) as t:
            await ctl.until(lambda fs: any(f["type"] == "hello" for f in fs))
            if welcome:
                await ctl.send("welcome", {"ack": 0})
                await asyncio.wait_for(t.welcomed.wait(), 5)
            yield t, ctl
    finally:
        ctl.sock.close()
        ctx.term()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def events_out(t: Transport, ctl: Controller, n: int) -> None:
    """``n`` events from the probe, each seen by the controller once."""
    for i in range(n):
        await t.event({"kind": "console", "t_ns": i, "text": str(i), "stream": "stdout"})
    await ctl.until(lambda fs: len(ctl.events()) == n)


def test_events_are_kept_until_acknowledged_and_drain_waits_for_the_acks(tmp_path, fast):
    async def main():
        async with link(tmp_path) as (t, ctl):
            await events_out(t, ctl, 5)
            assert ctl.events() == [1, 2, 3, 4, 5] and list(t.unacked) == [1, 2, 3, 4, 5]
            await ctl.send("ack", {"seq": 3})
            assert await t.drain(0.3) is False  # 4 and 5 still held
            assert list(t.unacked) == [4, 5]
            await ctl.send("ack", {"seq": 5})
            assert await t.drain(5) is True
            assert t.resent == 0 and t.dropped == 0
            assert t.counters["events"] == 5 and t.counters["received"] >= 3

    run(main())


def test_a_stall_resends_only_what_was_not_acknowledged(tmp_path, fast):
    async def main():
        async with link(tmp_path) as (t, ctl):
            await events_out(t, ctl, 4)
            await ctl.send("ack", {"seq": 2})  # then the acknowledgements stop moving: a stall
            await ctl.until(lambda fs: len(ctl.events()) >= 6, timeout=5)
            assert ctl.events()[:6] == [1, 2, 3, 4, 3, 4]  # the same events, the same numbers
            first = [f for f in ctl.frames if f["type"] == "events" and f["seq"] == 3]
            assert first[0] == first[1]  # the very frame again (same time stamp and body)
            await ctl.send("ack", {"seq": 4})
            assert await t.drain(5) is True
            before = len(ctl.events())
            await asyncio.sleep(3 * transport_mod.RESEND_S)
            await ctl.take()
            assert len(ctl.events()) == before  # nothing left to resend
            assert t.resent >= 2

    run(main())


def test_a_backlog_that_is_moving_is_not_resent(tmp_path, fast):
    """Acknowledgements that keep moving mean the controller is behind, not gone: no copies."""
    async def main():
        async with link(tmp_path) as (t, ctl):
            await events_out(t, ctl, 12)
            for upto in range(1, 13):  # one ack per 0.1 s, faster than RESEND_S (0.4 s)
                await ctl.send("ack", {"seq": upto})
                await asyncio.sleep(0.1)
                await ctl.take(0.001)
            assert await t.drain(2) is True
            assert ctl.events() == list(range(1, 13)) and t.resent == 0

    run(main())


def test_a_welcome_resends_at_once_what_was_sent_before_it(tmp_path, fast):
    fast.setattr(transport_mod, "RESEND_S", 5.0)  # so a stall's resend cannot be what the test sees

    async def main():
        async with link(tmp_path, welcome=False) as (t, ctl):
            await events_out(t, ctl, 3)
            await ctl.send("welcome", {"ack": 0})  # e.g. a controller that restarted
            await ctl.until(lambda fs: len(ctl.events()) == 6, timeout=2)
            assert ctl.events() == [1, 2, 3, 1, 2, 3] and t.welcomed.is_set()

    run(main())


def test_beyond_max_unacked_the_oldest_are_dropped_and_the_heartbeat_says_so(tmp_path, fast):
    frame = len(wire.Session("thinkpad").batch([{"kind": "console", "t_ns": 0, "text": "0", "stream": "stdout"}])[1])
    fast.setattr(transport_mod, "MAX_UNACKED_BYTES", 3 * frame)  # three one-event batches
    fast.setattr(transport_mod, "MAX_SPILL_BYTES", 0)            # and no spill

    async def main():
        async with link(tmp_path) as (t, ctl):
            for i in range(5):
                await t.event({"kind": "console", "t_ns": i, "text": str(i), "stream": "stdout"})
            assert list(t.unacked) == [3, 4, 5] and t.dropped == 2
            beats = await ctl.until(lambda fs: any(f["type"] == "heartbeat" and f["body"]["dropped"] == 2
                                                   for f in fs))
            beat = [f for f in beats if f["type"] == "heartbeat"][-1]["body"]
            assert beat == {"unacked": 3, "oldest": 3, "dropped": 2,  # the controller may move past 1, 2
                            "spilled": 0, "spill_bytes": 0}

    run(main())


def test_a_silent_controller_gets_a_hello_again(tmp_path, fast):
    fast.setattr(transport_mod, "SILENCE_S", 0.3)

    async def main():
        async with link(tmp_path) as (t, ctl):
            await ctl.until(lambda fs: len([f for f in fs if f["type"] == "hello"]) == 2, timeout=5)
            assert not t.welcomed.is_set()
            assert [f["body"] for f in ctl.frames if f["type"] == "hello"][-1] == {"pid": 1, "port": 9090,
                                                                                 "session": t.session_id, "acked": 0}

    run(main())


def test_a_bad_frame_from_the_controller_is_skipped_and_counted(tmp_path, fast):
    async def main():
        async with link(tmp_path) as (t, ctl):
            await t.event({"kind": "console", "t_ns": 1, "text": "x", "stream": "stdout"})
            await ctl.sock.send_multipart([b"thinkpad", b"\xc1"])
            await ctl.send("ack", {"seq": 1})  # the next good frame is still read
            assert await t.drain(5) is True
            assert t.counters["refused"] == 1

    run(main())


def _acking_controller(endpoint: str, stop) -> None:
    """A controller that reads bursts and acks each (as the bus does), in a process of its own as the
    real one is: in a thread of the test's process it waited for the GIL behind the sending loop,
    up to RESEND_S on a loaded machine, and the probe resent (a flaky test, not a probe's fault)."""
    ctx = zmq.Context()
    sock, session, upto = ctx.socket(zmq.ROUTER), wire.Session("controller"), 0
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    try:
        while not stop.is_set():
            if not sock.poll(10):
                continue
            for _ in range(512):  # a burst, then one ack (as the controller's bus does)
                try:
                    ident, frame = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                env = session.decode(frame, peer=ident)
                if env["type"] == "hello":
                    session.send_blocking(sock, "welcome", {"ack": 0}, to=ident)
                elif env["type"] == "events":
                    upto = env["seq"] + len(env["body"]["events"]) - 1
            session.send_blocking(sock, "ack", {"seq": upto}, to=b"thinkpad")
    finally:
        sock.close()
        ctx.term()


def test_a_burst_of_events_reads_the_acks_as_it_goes(tmp_path, fast):
    """A backlog handed over at once (a queue that is never empty does not yield, nor does a send that
    does not block): the transport still lets its receiver read the acks during the burst, so the
    unacknowledged events stay few and none is given up at MAX_UNACKED_BYTES while the controller keeps up."""
    import multiprocessing

    fast.setattr(transport_mod, "MAX_UNACKED_BYTES", 4000 * 64)  # about 4,000 one-event batches
    fast.setattr(transport_mod, "MAX_SPILL_BYTES", 0)  # and no spill: a burst that read no acks would drop
    mp = multiprocessing.get_context("spawn")
    stop = mp.Event()
    endpoint = f"ipc://{tmp_path}/ctl.sock"
    ctl = mp.Process(target=_acking_controller, args=(endpoint, stop), daemon=True)
    ctl.start()

    async def main():
        ctx = zmq.asyncio.Context()
        try:
            async with probe(endpoint, ctx) as t:
                await asyncio.wait_for(t.welcomed.wait(), 20)  # the spawned process binds first
                for i in range(20_000):
                    await t.event({"kind": "console", "t_ns": i, "text": str(i), "stream": "stdout"})
                assert await t.drain(20) is True
                return t
        finally:
            ctx.term()

    try:
        t = run(main())
    finally:
        stop.set()
        ctl.join(5)
        if ctl.is_alive():
            ctl.kill()
    assert t.dropped == 0 and t.resent == 0
