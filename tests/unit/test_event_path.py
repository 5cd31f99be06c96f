"""The event path end to end over real ZeroMQ sockets (ipc:// and tcp://127.0.0.1, no root): a real
probe Transport and Link, a real ProbeBus with its Fleet and a Run writing the trace.

Batches keep the order and the numbering; a controller that is unreachable costs a bounded window
and the spill on disk, and once it is back everything arrives, in order, once; a restarted probe
with the same pid is a new session whose first events are kept; a gap that cannot be filled and a
refused event are ``loss`` records in the trace and counts in run.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
import zmq
import zmq.asyncio

from bench.event_path import endpoint
from controller import scenario
from controller.bus import ProbeBus
from controller.finish import finish_run
from controller.fleet import Fleet, counted_since
from controller.run import Run
from probe import transport as transport_mod
from probe.link import Link
from probe.transport import Transport
from tcplab import wire

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("thinkpad", "raspberrypi")  # the seed scenario's (finish_run writes run.json for both)


def address(kind: str, tmp_path: Path) -> str:
    return endpoint(kind, tmp_path, "probes")


@contextlib.asynccontextmanager
async def controller(run_dir: Path, where: str):
    """A ProbeBus serving at ``where`` with a run open (every event counts, whatever its time)."""
    ctx = zmq.asyncio.Context()
    bus = ProbeBus(ctx, Fleet(admit=HOSTS))
    bus.bind(where)
    bus.run = Run(run_dir, HOSTS)
    bus.run.start_ns = 0
    serving = asyncio.create_task(bus.serve())
    try:
        yield bus
    finally:
        await cancel(serving)
        bus.run.close()
        bus.close(0)
        ctx.term()


@contextlib.asynccontextmanager
async def probe(where: str, spill_dir: Path, pid: int = 1):
    """A probe's Transport and Link with their tasks, as probe/daemon.py runs them."""
    ctx = zmq.asyncio.Context()
    t = Transport(where, "thinkpad", hello={"pid": pid, "lab_ip": "10.90.0.1", "port": 9090}, ctx=ctx,
                  spill_dir=spill_dir)
    link = Link(t, lambda command: None)
    t.connect()
    await t.hello()
    tasks = [asyncio.create_task(c) for c in (link.receive(), link.send_events(), t.keepalive())]
    try:
        yield t, link
    finally:
        await cancel(*tasks)
        t.close()
        ctx.term()


async def cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def console(i: int, pad: int = 0) -> dict:
    return {"kind": "console", "text": f"{i:06d}" + "x" * pad, "stream": "stdout"}


async def until(pred, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


def texts(run: Run) -> list[int]:
    return [int(r["text"][:6]) for r in run.trace.records if r["kind"] == "console"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(transport_mod, "HEARTBEAT_S", 0.1)
    return monkeypatch


@pytest.mark.parametrize("kind", ["ipc", "tcp"])
def test_batches_keep_the_order_and_the_numbering(tmp_path, fast, kind):
    n = 5000
    where = address(kind, tmp_path)

    async def main():
        async with controller(tmp_path / "run", where) as bus, probe(where, tmp_path / "spill") as (t, link):
            await asyncio.wait_for(t.welcomed.wait(), 10)
            for i in range(n):
                link.emit(console(i))
                if i % 700 == 0:  # bursts of different lengths: batches of many sizes
                    await asyncio.sleep(0.01)
            await until(lambda: len(bus.run.trace.records) >= n, what="every event in the trace")
            assert await link.drain(10) is True
            frames = t.session.counters["sent"]
            return texts(bus.run), bus.fleet.probes["thinkpad"].upto, bus.fleet.counters("thinkpad"), frames

    got, upto, counters, frames = run(main())
    assert got == list(range(n)) and upto == n
    assert counters["link_duplicates"] == 0 and counters["link_events_refused"] == 0
    assert frames < n / 4  # many events per frame (hello and heartbeats included)


@pytest.mark.parametrize("kind", ["ipc", "tcp"])
def test_an_unreachable_controller_costs_a_bounded_window_and_the_spill_then_all_arrives_once(tmp_path, fast, kind):
    fast.setattr(transport_mod, "MAX_UNACKED_BYTES", 512 << 10)
    n, where, spill = 20_000, address(kind, tmp_path), tmp_path / "spill"

    async def main():
        async with probe(where, spill) as (t, link):
            for i in range(n):  # 1 kB events, nobody listening
                link.emit(console(i, pad=1000))
                if i % 500 == 0:
                    await asyncio.sleep(0)
            await link.flush()
            box = t.outbox
            held = {"window": box.window_bytes, "spill": box.spill.bytes, "held": box.held, "dropped": box.dropped,
                    "files": sorted(p.name for p in spill.iterdir())}
            async with controller(tmp_path / "run", where) as bus:
                await until(lambda: len(bus.run.trace.records) >= n, 30, "every event once the controller is back")
                assert await t.drain(10) is True
                await until(lambda: bus.fleet.counters("thinkpad")["link_probe_spilled"] > 0, 5, "spill reported")
                left = sorted(p.name for p in spill.iterdir())
                return held, texts(bus.run), bus.fleet.counters("thinkpad"), t.counters, left

    held, got, counters, probe_counters, left = run(main())
    assert held["window"] <= (512 << 10) + transport_mod.BATCH_BYTES  # memory: the window's bound (and one batch)
    assert held["spill"] > 15 * (1 << 20) and held["files"] and held["held"] == n and held["dropped"] == 0
    assert got == list(range(n))                         # everything, in order, each once in the trace
    assert probe_counters["spilled"] > 15_000 and probe_counters["dropped"] == 0
    assert counters["link_probe_spilled"] == probe_counters["spilled"] and counters["link_given_up"] == 0
    assert left == []                                    # the spill's files are gone once read back


def test_a_restarted_probe_with_the_same_pid_is_a_new_session_and_its_first_events_are_kept(tmp_path, fast):
    where = address("ipc", tmp_path)

    async def main():
        async with controller(tmp_path / "run", where) as bus:
            sessions = []
            for first in (0, 100):  # the same pid twice: a probe restarted in a namespace gets its pid again
                async with probe(where, tmp_path / "spill", pid=4242) as (t, link):
                    await asyncio.wait_for(t.welcomed.wait(), 10)
                    for i in range(first, first + 5):
                        link.emit(console(i))
                    assert await link.drain(10) is True
                    sessions.append(t.session_id)
                await asyncio.sleep(0.2)  # its socket gone before the next one connects
            return texts(bus.run), bus.fleet.counters("thinkpad"), sessions

    got, counters, sessions = run(main())
    assert sessions[0] != sessions[1] and all(len(s) == 32 for s in sessions)
    assert got == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]  # the second's 1..5 are not "duplicates"
    assert counters["link_restarts"] == 1 and counters["link_duplicates"] == 0


class _Dealer:
    """A probe's DEALER that sends exactly the frames the test says."""

    def __init__(self, ctx, where: str):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, b"thinkpad")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(where)
        self.session = wire.Session("thinkpad")

    async def batch(self, first: int, events: list[dict]) -> None:
        await self.sock.send(wire.encode(wire.make("events", "thinkpad", first, {"events": events})))

    async def until(self, type_: str, pred=lambda body: True) -> dict:
        while True:
            env = self.session.decode(await asyncio.wait_for(self.sock.recv(), 5))
            if env["type"] == type_ and pred(env["body"]):
                return env["body"]


def test_a_gap_given_up_and_a_refused_event_are_loss_records_and_run_json_counts(tmp_path):
    where = address("ipc", tmp_path)
    scn = scenario.parse(yaml.safe_load((REPO / "scenarios" / "seed.yml").read_text())).bound()  # the seed's hosts
    t_ns = time.monotonic_ns

    async def main():
        async with controller(tmp_path / "run", where) as bus:
            before = bus.fleet.counters("thinkpad")
            ctx = zmq.asyncio.Context()
            probe = _Dealer(ctx, where)
            try:
                await probe.session.send(probe.sock, "hello", {"pid": 1, "session": "a" * 32, "lab_ip": "10.90.0.1"})
                await probe.until("welcome")
                bad = {"kind": "console", "t_ns": t_ns(), "text": b"bytes, not text", "stream": "stdout"}
                await probe.batch(1, [console(1) | {"t_ns": t_ns()}, bad])          # 2 is refused
                assert (await probe.until("ack"))["seq"] == 2                      # and counts as received
                await probe.batch(5, [console(5) | {"t_ns": t_ns()}])              # 3 and 4 never come
                assert (await probe.until("ack"))["seq"] == 2
                await probe.session.send(probe.sock, "heartbeat", {"oldest": 5, "dropped": 2, "spilled": 0,
                                                                   "spill_bytes": 0, "unacked": 1})
                assert (await probe.until("ack", lambda b: b["seq"] == 5))["seq"] == 5
            finally:
                probe.sock.close()
                ctx.term()
            counted = {"thinkpad": counted_since(before, bus.fleet.counters("thinkpad"))}
            seq = SimpleNamespace(error=None, failed_step=None, unmet=[], port=9090)
            path = finish_run(bus.run, scn, seq, True, 0.0, {}, {}, link_counters=counted)
            bus.run.close = lambda: None  # finished: the fixture's close is done
            return path

    path = run(main())
    trace = [json.loads(line) for line in path.read_text().splitlines()]
    losses = [{k: r.get(k) for k in ("host", "from", "to", "why")} for r in trace if r["kind"] == "loss"]
    assert losses == [{"host": "thinkpad", "from": 2, "to": 2, "why": "refused"},
                      {"host": "thinkpad", "from": 3, "to": 4, "why": "given_up"}]
    refusal = next(r for r in trace if r["kind"] == "loss" and r["why"] == "refused")
    assert "text" in refusal["detail"]  # the reason names the field
    assert [int(r["text"]) for r in trace if r["kind"] == "console"] == [1, 5]
    counters = json.loads((path.parent / "run.json").read_text())["hosts"]["thinkpad"]["counters"]
    assert counters["link_given_up"] == 2 and counters["link_events_refused"] == 1
    assert counters["link_probe_dropped"] == 2  # the heartbeat's own total
    summary = (path.parent / "summary.txt").read_text()
    assert "link_given_up 2" in summary and "link_events_refused 1" in summary


def test_a_restarted_probe_s_unfilled_gap_of_its_old_session_is_a_loss_record(tmp_path):
    where = address("ipc", tmp_path)
    t_ns = time.monotonic_ns

    async def main():
        async with controller(tmp_path / "run", where) as bus:
            ctx = zmq.asyncio.Context()
            probe = _Dealer(ctx, where)
            try:
                hello = {"pid": 1, "lab_ip": "10.90.0.1"}
                await probe.session.send(probe.sock, "hello", {**hello, "session": "a" * 32})
                await probe.until("welcome")
                await probe.batch(1, [console(1) | {"t_ns": t_ns()}])
                await probe.batch(4, [console(4) | {"t_ns": t_ns()}])   # 2 and 3 are still on their way
                assert (await probe.until("ack"))["seq"] == 1
                await probe.session.send(probe.sock, "hello", {**hello, "session": "b" * 32})  # killed, restarted
                assert await probe.until("welcome") == {"ack": 0}
            finally:
                probe.sock.close()
                ctx.term()
            losses = [r for r in bus.run.trace.records if r["kind"] == "loss"]
            return losses, bus.fleet.counters("thinkpad")

    losses, counters = run(main())
    assert [(r["from"], r["to"], r["why"]) for r in losses] == [(2, 3, "given_up")]
    assert "restarted" in losses[0]["detail"]
    assert counters["link_given_up"] == 2 and counters["link_restarts"] == 1


def test_the_probe_s_memory_stays_bounded_while_its_controller_is_unreachable():
    """bench.probe_memory in a process of its own: 20,000 and 60,000 1 kB events to nobody (20 and 60
    MB), then the stall's resends: the peak RSS is the same for both, the rest is on disk."""
    from bench.probe_memory import in_process
    small, big = in_process(20_000, 2.5), in_process(60_000, 2.5)
    for m in (small, big):
        assert m["rss_peak_mib"] - m["rss_before_mib"] < 40, m  # seen before the bounds: +324 MiB in 30 s
        assert m["window_mib"] <= 8.5 and m["dropped"] == 0 and m["held"] == m["events"], m
        assert m["spill_files_left"] == 0, m  # removed at exit
    assert big["spill_mib"] > 45 and big["rss_peak_mib"] - small["rss_peak_mib"] < 10, (small, big)


def test_beyond_the_spill_the_oldest_are_dropped_and_what_never_comes_is_a_loss_record(tmp_path, fast):
    """Window and spill full with the controller away: the oldest batches go (counted by the probe), the
    rest arrive in order once it is back, and what never came is a loss record and a count. (libzmq
    may still hold the first SNDHWM frames the probe handed it: those arrive, and are no loss.)"""
    fast.setattr(transport_mod, "MAX_UNACKED_BYTES", 64 << 10)
    fast.setattr(transport_mod, "MAX_SPILL_BYTES", 256 << 10)
    n, where = 20_000, address("ipc", tmp_path)

    async def main():
        async with probe(where, tmp_path / "spill") as (t, link):
            for i in range(n):
                link.emit(console(i, pad=1000))
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await link.flush()
            dropped, oldest = t.outbox.dropped, t.outbox.oldest
            async with controller(tmp_path / "run", where) as bus:
                await until(lambda: bus.fleet.probes.get("thinkpad") and bus.fleet.probes["thinkpad"].upto >= n,
                            30, "every number received or given up")
                assert await t.drain(10) is True
                losses = [r for r in bus.run.trace.records if r["kind"] == "loss"]
                return dropped, oldest, texts(bus.run), losses, bus.fleet.counters("thinkpad")

    dropped, oldest, got, losses, counters = run(main())
    assert dropped > n / 2 and oldest == dropped + 1          # the oldest went, all of them first
    assert got == sorted(set(got)) and set(range(dropped, n)) <= set(got)  # in order, once; the newest all
    lost = set(range(1, n + 1)) - {i + 1 for i in got}        # event numbers (the i-th event is number i+1)
    assert lost and len(lost) <= dropped
    assert {s for r in losses for s in range(r["from"], r["to"] + 1)} == lost
    assert all(r["why"] == "given_up" for r in losses)
    assert counters["link_given_up"] == len(lost) and counters["link_probe_dropped"] == dropped


def test_a_restarted_controller_takes_the_probe_s_acked_events_for_delivered_not_for_a_gap(tmp_path, fast):
    """The hello after a controller's silence says what an earlier controller acknowledged: the new one
    starts its count there, so the events it never saw are no loss (they are the old run's)."""
    fast.setattr(transport_mod, "SILENCE_S", 0.5)
    where = address("ipc", tmp_path)

    async def main():
        async with probe(where, tmp_path / "spill") as (t, link):
            async with controller(tmp_path / "run1", where) as first:
                await asyncio.wait_for(t.welcomed.wait(), 10)
                for i in range(300):
                    link.emit(console(i))
                assert await link.drain(10) is True
            await until(lambda: not t.welcomed.is_set(), 10, "the probe notices the silence")
            async with controller(tmp_path / "run2", where) as second:
                await asyncio.wait_for(t.welcomed.wait(), 10)
                for i in range(300, 310):
                    link.emit(console(i))
                assert await link.drain(10) is True
                await asyncio.sleep(0.3)  # a heartbeat or two (its oldest: 301)
                losses = [r for r in second.run.trace.records if r["kind"] == "loss"]
                return texts(first.run), texts(second.run), second.fleet.counters("thinkpad"), losses, t.acked

    got1, got2, counters, losses, acked = run(main())
    assert got1 == list(range(300)) and got2 == list(range(300, 310)) and acked == 310
    assert counters["link_given_up"] == 0 and losses == []
