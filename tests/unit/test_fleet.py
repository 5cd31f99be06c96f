"""The fleet's event bookkeeping (gaps, duplicates, given-up events, restarts) and its counters, then
the same through the real probe bus: a DEALER on a real ZeroMQ ipc socket, no root."""

import asyncio
import contextlib
import time

import msgpack
import pytest
import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from controller.bus import ProbeBus
from controller.fleet import COUNTERS, Fleet, counted_since
from tcplab import wire


def test_a_gap_holds_the_ack_until_the_resend_fills_it():
    fleet = Fleet()
    link = fleet.hello("thinkpad", {"pid": 1})
    assert [link.receive(s) for s in (1, 2, 4, 5)] == [True] * 4
    assert link.upto == 2 and link.pending == {4, 5}
    assert link.receive(3) and link.upto == 5 and link.pending == set()


def test_duplicates_are_dropped_and_counted_per_host():
    fleet = Fleet()
    link = fleet.hello("thinkpad", {"pid": 1})
    link.receive(1), link.receive(3)
    assert not link.receive(1) and not link.receive(3)   # below upto, and above the gap
    assert link.duplicates == 2 and fleet.counters("thinkpad")["link_duplicates"] == 2
    assert fleet.counters("raspberrypi") == {name: 0 for name in COUNTERS}


def test_give_up_below_counts_only_what_never_came():
    fleet = Fleet()
    link = fleet.hello("thinkpad", {"pid": 1})
    for s in (1, 2, 5, 7):
        link.receive(s)
    # the probe holds nothing below 7 any more: 3, 4 and 6 never came, 5 did
    assert link.give_up_below(7) == 3
    assert link.upto == 7 and link.pending == set()       # 7 was held: the ack moves past it
    assert fleet.counters("thinkpad")["link_given_up"] == 3
    assert link.give_up_below(5) == 0 and link.upto == 7  # an older heartbeat changes nothing
    assert link.receive(8) and link.upto == 8


S1, S2 = "1" * 32, "2" * 32  # two probe processes' sessions


def test_a_restarted_probe_counts_from_one_and_its_host_keeps_its_counters():
    fleet = Fleet()
    old = fleet.hello("thinkpad", {"pid": 1, "lab_ip": "10.90.0.1", "session": S1})
    old.receive(1), old.receive(1)
    assert fleet.hello("thinkpad", {"pid": 1, "session": S1}) is old
    assert fleet.counters("thinkpad")["link_restarts"] == 0
    new = fleet.hello("thinkpad", {"pid": 1, "lab_ip": "10.90.0.1", "session": S2})  # the same pid, restarted
    assert new is not old and new.upto == 0 and new.receive(1)  # its 1 is new, not a duplicate
    assert fleet.probes["thinkpad"] is new
    counters = fleet.counters("thinkpad")
    assert counters["link_restarts"] == 1 and counters["link_duplicates"] == 1


def test_frames_before_hello_and_refused_frames_are_counted_and_a_run_gets_its_share():
    fleet = Fleet()
    before = fleet.counters("thinkpad")
    assert fleet.seen("thinkpad") is None                # we restarted; it has not said hello
    fleet.refused("thinkpad")
    fleet.refused("not a host name!")                    # anyone can pick a routing id: not counted
    share = counted_since(before, fleet.counters("thinkpad"))
    assert share == {**{n: 0 for n in COUNTERS}, "link_frames_before_hello": 1, "link_frames_refused": 1}
    assert "not a host name!" not in fleet._counters
    assert fleet.connected("thinkpad") is False and fleet.hello("thinkpad", {"pid": 1}) and fleet.connected("thinkpad")


class _Probe:
    """A DEALER that speaks the wire like a probe, with its own Session."""

    def __init__(self, ctx, endpoint: str, host: str = "thinkpad"):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, host.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.session = wire.Session(host)

    async def event(self, seq: int, count: int = 1) -> None:
        """A batch of ``count`` events numbered from ``seq``."""
        body = {"events": [{"kind": "console", "t_ns": time.monotonic_ns(), "text": "x", "stream": "stdout"}
                           for _ in range(count)]}
        await self.sock.send(wire.encode(wire.make("events", self.session.host, seq, body)))

    async def until(self, type_: str) -> dict:
        while True:
            env = self.session.decode(await asyncio.wait_for(self.sock.recv(), 5))
            if env["type"] == type_:
                return env["body"]


@contextlib.asynccontextmanager
async def _bus_and_probe(tmp_path, fleet: Fleet | None = None, serve: bool = True):
    """A real ProbeBus on an ipc socket (serving at once, or when the test calls ``bus.start()``),
    and a probe's DEALER connected to it."""
    ctx = zmq.asyncio.Context()
    bus = ProbeBus(ctx, fleet or Fleet())
    bus.bind(f"ipc://{tmp_path}/probes.sock")
    tasks: list[asyncio.Task] = []
    bus.start = lambda: tasks.append(asyncio.create_task(bus.serve()))
    if serve:
        bus.start()
    probe = _Probe(ctx, f"ipc://{tmp_path}/probes.sock")
    try:
        yield bus, probe
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        probe.sock.close()
        bus.close(0)
        ctx.term()


def test_refused_frames_of_names_the_inventory_lacks_are_strangers_not_table_entries():
    fleet = Fleet(admit=("thinkpad",))
    for name in ("ghost1", "ghost2", "thinkpad"):
        fleet.refused(name)
    assert fleet.strangers == 2 and fleet.counters("thinkpad")["link_frames_refused"] == 1
    assert set(fleet._counters) == {"thinkpad"}


def test_what_a_probe_did_by_itself_outside_a_run_is_in_the_controller_s_log(tmp_path):
    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            await probe.until("welcome")
            body = {"events": [{"kind": "deadman", "t_ns": 1, "silent_s": 5.1, "cleared": ["shaping", "nc"]},
                               {"kind": "console", "t_ns": 2, "text": "x", "stream": "stdout"}]}
            with capture_logs() as logs:
                await probe.sock.send(wire.encode(wire.make("events", "thinkpad", 1, body)))
                assert (await probe.until("ack"))["seq"] == 2
            said = [e for e in logs if e["event"] == "probe_acted_outside_run"]
            assert said == [{"event": "probe_acted_outside_run", "probe": "thinkpad", "kind": "deadman",
                             "silent_s": 5.1, "cleared": ["shaping", "nc"], "log_level": "warning"}]
    asyncio.run(scenario())


def test_the_bus_acks_only_contiguous_events_and_moves_past_what_the_probe_gave_up(tmp_path):
    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            assert await probe.until("welcome") == {"ack": 0}
            acks = []
            for seq in (1, 2, 4, 4):  # 3 is lost on the way, 4 comes twice
                await probe.event(seq)
                acks.append((await probe.until("ack"))["seq"])
            assert acks == [1, 2, 2, 2]
            await probe.session.send(probe.sock, "heartbeat", {"oldest": 4})  # it gave 3 up
            assert (await probe.until("ack"))["seq"] == 4
            counters = bus.fleet.counters("thinkpad")
            assert counters["link_duplicates"] == 1 and counters["link_given_up"] == 1
            assert bus.connected("thinkpad") and bus.lab_ip("thinkpad") is None  # no configured address
            assert bus.lab_port("thinkpad") == 9090 and bus.shaping_unavailable("thinkpad") is None
            # restarted: a new session starts again from 1, and is welcomed with nothing held
            await probe.session.send(probe.sock, "hello", {"pid": 2, "lab_ip": "10.90.0.1", "port": 9090,
                                                           "session": S2})
            assert await probe.until("welcome") == {"ack": 0}
            await probe.event(1)
            assert (await probe.until("ack"))["seq"] == 1
            assert bus.fleet.counters("thinkpad")["link_restarts"] == 1
    asyncio.run(scenario())


def test_a_command_is_answered_by_its_result_and_a_silent_probe_times_out(tmp_path):
    from controller.bus import NoAnswer, NotConnected
    from tcplab.errors import TcplabError

    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            await probe.session.send(probe.sock, "hello", {"pid": 1, "shaping": {"backend": None, "reason": "no tc"}})
            await probe.until("welcome")
            assert bus.shaping_unavailable("thinkpad") == "no tc"

            async def answer():
                body = await probe.until("command")
                await probe.session.send(probe.sock, "result", {"id": body["id"], "ok": True, "data": {"backend": "netem"}})
                return body

            answering = asyncio.create_task(answer())
            result = await bus.command("thinkpad", "listen", {}, 5)
            assert result["ok"] is True and result["data"] == {"backend": "netem"}
            assert (await answering)["action"] == "listen" and bus.pending == {}
            with pytest.raises(NoAnswer, match="no answer to close within 0.2 s") as timed_out:
                await bus.command("thinkpad", "close", {}, 0.2)  # nobody answers this one
            assert isinstance(timed_out.value, TimeoutError) and isinstance(timed_out.value, TcplabError)
            with pytest.raises(NotConnected, match="^raspberrypi is not connected$") as gone:
                await bus.command("raspberrypi", "listen", {}, 1)
            assert isinstance(gone.value, ConnectionError)
            assert bus.pending == {}
    asyncio.run(scenario())


def test_a_command_to_a_probe_that_reads_nothing_fails_within_its_timeout(tmp_path):
    """The timeout covers the command's send: a probe whose queue is full (it reads nothing) fails
    the command in its timeout; the send used to wait outside it, forever. Meanwhile the bus's acks
    to the probe are never waited on (NOBLOCK), so the bus serves on."""
    from controller.bus import NoAnswer

    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            bus.sock.setsockopt(zmq.SNDHWM, 1)
            probe.sock.setsockopt(zmq.RCVHWM, 1)
            await probe.session.send(probe.sock, "hello", {"pid": 1, "session": S1})
            await probe.until("welcome")
            frame = bus.frame("ping", {"id": 1})
            for _ in range(100_000):  # the probe reads nothing: fill its queue
                try:
                    await bus.session.send_frame(bus.sock, frame, to=b"thinkpad", flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(NoAnswer, match="no answer to close within 0.3 s"):
                await asyncio.wait_for(bus.command("thinkpad", "close", {}, 0.3), 5)  # old code: waits forever
            assert loop.time() - t0 < 2.0 and bus.pending == {}
    asyncio.run(scenario())


def test_a_burst_longer_than_the_bus_takes_at_once_loses_no_frame(tmp_path):
    """More than BURST frames queued at once: the bus acks every one of them, in order, with no gap
    (it used to take the frame after a full burst off the socket and drop it)."""
    from controller.bus import BURST

    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            assert await probe.until("welcome") == {"ack": 0}
            n = 2 * BURST + 3
            for seq in range(1, n + 1):  # queued faster than the bus takes them
                await probe.event(seq)
            last = 0
            while last < n:
                last = (await probe.until("ack"))["seq"]
            assert last == n and bus.fleet.probes["thinkpad"].upto == n
            assert bus.fleet.counters("thinkpad")["link_duplicates"] == 0
    asyncio.run(scenario())


def test_other_tasks_get_a_turn_between_bursts(tmp_path):
    """A flood of frames does not starve the daemon's other tasks (the control server, the run):
    a ready socket's recv returns without yielding, so the bus yields after each burst."""
    from controller.bus import BURST

    async def scenario():
        async with _bus_and_probe(tmp_path, serve=False) as (bus, probe):
            n = 3 * BURST  # under the two sockets' high-water marks (1000 each): queued without blocking
            await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            for seq in range(1, n + 1):
                await probe.event(seq)
            await asyncio.sleep(0.3)  # everything queued at the bus before it reads the first frame
            bus.start()
            seen: list[int] = []

            async def ticker():
                while not seen or seen[-1] < n:
                    link = bus.fleet.probes.get("thinkpad")
                    seen.append(link.upto if link else 0)
                    await asyncio.sleep(0)
            await asyncio.wait_for(ticker(), 10)
            assert any(0 < s < n for s in seen), seen[:5]
    asyncio.run(scenario())


def test_a_probe_the_inventory_lacks_is_not_welcomed_and_nothing_of_it_is_kept(tmp_path):
    """The controller's config lists the inventory's lab hosts (the role writes them): a hello
    under any other name gets no welcome, no link and no counters."""
    async def scenario():
        async with _bus_and_probe(tmp_path, Fleet(admit=("raspberrypi",))) as (bus, probe):  # probe: thinkpad
            await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(probe.until("welcome"), 0.5)
            assert bus.fleet.probes == {} and bus.fleet.strangers == 1 and not bus.connected("thinkpad")
            await probe.session.send(probe.sock, "heartbeat", {"oldest": 1})  # and what it sends after
            await probe.event(1)
            for _ in range(50):
                if bus.fleet.strangers == 3:
                    break
                await asyncio.sleep(0.01)
            assert bus.fleet.strangers == 3
            assert "thinkpad" not in bus.fleet._counters
    asyncio.run(scenario())


def test_hostile_frames_are_refused_and_the_bus_goes_on_serving(tmp_path):
    """A `type` that is a list (it used to raise TypeError out of the bus), a result with a list
    id, a result forged by another host for thinkpad's command, and a frame over the size limit
    (libzmq disconnects its sender before holding it): each is dropped; thinkpad is still served."""
    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "port": 9090})
            await probe.until("welcome")
            ctx = probe.sock.context  # the bus's own context: closed with it
            other = _Probe(ctx, f"ipc://{tmp_path}/probes.sock", host="raspberrypi")
            big = _Probe(ctx, f"ipc://{tmp_path}/probes.sock", host="raspberrypi")
            try:
                await other.session.send(other.sock, "hello", {"pid": 2, "lab_ip": "10.90.0.2", "port": 9090})
                await other.until("welcome")
                await probe.sock.send(msgpack.packb({"v": 1, "type": ["event"], "host": "thinkpad", "seq": 1,
                                                     "time": 1, "body": {}}))
                await big.sock.send(b"\x00" * (wire.MAX_FRAME + 1))
                await probe.session.send(probe.sock, "result", {"id": [1], "ok": True})

                async def forge_then_answer():
                    body = await probe.until("command")
                    await other.session.send(other.sock, "result", {"id": body["id"], "ok": False, "error": "forged"})
                    await asyncio.sleep(0.1)
                    await probe.session.send(probe.sock, "result", {"id": body["id"], "ok": True})
                answering = asyncio.create_task(forge_then_answer())
                result = await bus.command("thinkpad", "listen", {}, 5)
                await answering
                assert result == {"id": result["id"], "ok": True}  # thinkpad's own answer, not the forgery
                assert bus.fleet.counters("thinkpad")["link_frames_refused"] == 2  # the list type, the list id
                await probe.event(1)
                assert (await probe.until("ack"))["seq"] == 1  # still served
            finally:
                other.sock.close()
                big.sock.close()
    asyncio.run(scenario())


def test_a_probe_that_reads_nothing_does_not_stop_the_bus_for_the_others(tmp_path):
    """Its unread acks fill the ROUTER's queue for it (1,000 frames): the bus does not wait on it (it
    used to: every probe's frames then waited), its acks are counted as unsent, the other is served."""
    async def scenario():
        async with _bus_and_probe(tmp_path) as (bus, probe):
            stuck = probe.sock.context.socket(zmq.DEALER)
            for option, value in ((zmq.ROUTING_ID, b"raspberrypi"), (zmq.RCVHWM, 1), (zmq.RCVBUF, 1024),
                                  (zmq.LINGER, 0)):
                stuck.setsockopt(option, value)
            stuck.connect(f"ipc://{tmp_path}/probes.sock")
            session = wire.Session("raspberrypi")
            try:
                await probe.session.send(probe.sock, "hello", {"pid": 1, "lab_ip": "10.90.0.1", "session": S1})
                await probe.until("welcome")
                await session.send(stuck, "hello", {"pid": 2, "lab_ip": "10.90.0.2", "session": S2})
                for _ in range(20_000):  # raspberrypi reads nothing: every heartbeat owes it an ack
                    await asyncio.wait_for(session.send(stuck, "heartbeat", {"oldest": 1}), 5)
                    await asyncio.sleep(0)
                await probe.event(1)
                assert (await probe.until("ack"))["seq"] == 1  # still served
                assert bus.fleet.counters("raspberrypi")["link_acks_unsent"] > 0
            finally:
                stuck.close()
    asyncio.run(scenario())
