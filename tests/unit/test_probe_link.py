"""probe/link.py over real ZeroMQ, without root: a real Transport (the probe's DEALER) and a ROUTER
the test holds as the controller, which acknowledges nothing unless told to."""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio

from probe.link import STOPPING, Link
from probe.transport import Transport
from tcplab import wire


async def _pair(tmp_path, commands: list[dict]):
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    endpoint = f"ipc://{tmp_path}/controller.sock"
    router.bind(endpoint)
    transport = Transport(endpoint, "thinkpad", hello={}, ctx=ctx)
    transport.connect()
    return ctx, router, transport, Link(transport, commands.append)


async def _close(ctx, router, transport, *tasks) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    transport.close()
    router.close(linger=0)
    ctx.term()


@pytest.mark.parametrize("after_s", [0.0, 0.1])
def test_a_drain_without_acks_waits_its_timeout_and_ends_at_once_when_cancelled(tmp_path, after_s):
    """``after_s`` 0: cancelled as it starts (a forced exit), where 3.11's wait_for lost the cancel."""
    async def scenario() -> tuple[bool, float, float]:
        ctx, router, transport, link = await _pair(tmp_path, [])
        sender = asyncio.create_task(link.send_events())
        loop = asyncio.get_running_loop()
        link.emit({"kind": "console", "text": "x", "stream": "stdout"})
        t0 = loop.time()
        drained = await link.drain(0.3)
        waited = loop.time() - t0
        drain = asyncio.create_task(link.drain(5.0))  # a forced exit cancels the drain
        await asyncio.sleep(after_s)
        t0 = loop.time()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        cancelled_in = loop.time() - t0
        await _close(ctx, router, transport, sender)
        return drained, waited, cancelled_in

    drained, waited, cancelled_in = asyncio.run(scenario())
    assert drained is False and 0.3 <= waited < 1.0
    assert cancelled_in < 0.1, cancelled_in


def test_an_acknowledged_event_drains_at_once(tmp_path):
    async def scenario() -> bool:
        ctx, router, transport, link = await _pair(tmp_path, [])
        tasks = [asyncio.create_task(link.send_events()), asyncio.create_task(link.receive())]
        link.emit({"kind": "console", "text": "x", "stream": "stdout"})
        await link.flush()
        ident, frame = await asyncio.wait_for(router.recv_multipart(), 2)
        assert wire.decode(frame)["body"]["events"][0]["kind"] == "console"
        await wire.Session("controller").send(router, "ack", {"seq": 1}, to=ident)
        drained = await link.drain(2.0)
        await _close(ctx, router, transport, *tasks)
        return drained

    assert asyncio.run(scenario()) is True


def test_commands_go_to_the_queue_until_stopping_then_are_refused(tmp_path):
    commands: list[dict] = []

    async def scenario() -> dict:
        ctx, router, transport, link = await _pair(tmp_path, commands)
        receiver = asyncio.create_task(link.receive())
        await transport.send("hello", {})  # the ROUTER learns the probe's routing id
        ident, _ = await asyncio.wait_for(router.recv_multipart(), 2)
        controller = wire.Session("controller")
        await controller.send(router, "command", {"id": 1, "action": "listen", "args": {}}, to=ident)
        for _ in range(100):
            if commands:
                break
            await asyncio.sleep(0.01)
        link.accepting = False
        await controller.send(router, "command", {"id": 2, "action": "listen", "args": {}}, to=ident)
        _, frame = await asyncio.wait_for(router.recv_multipart(), 2)
        await _close(ctx, router, transport, receiver)
        return wire.decode(frame)

    reply = asyncio.run(scenario())
    assert [c["id"] for c in commands] == [1]
    assert reply["type"] == "result" and reply["body"] == {"id": 2, "ok": False, "error": STOPPING}
