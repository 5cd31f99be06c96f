"""Clock sync: ping chains that feed each probe's :class:`~controller.clock.ClockEstimate`.

Three moments: a chain of :data:`PINGS` exchanges when a probe says hello and again before a run
(each host of the scenario), and during a run a short chain of :data:`RUN_PINGS` per host every
:data:`PING_EVERY_S`, so that the estimate follows the drift. The bus hands every ``pong`` to
:meth:`ClockSync.pong`; the exchange's four timestamps go to the probe's estimate there.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from controller.bus import ProbeBus

log = structlog.get_logger("controller")

PINGS = 8           # clock exchanges before a run (and at a probe's hello)
PING_EVERY_S = 0.5  # during a run, a chain of RUN_PINGS exchanges per host this often
RUN_PINGS = 3
PONG_WAIT_S = 0.05
MAX_UNANSWERED = 1000


class ClockSync:
    def __init__(self, bus: ProbeBus):
        self.bus = bus
        self.pings: dict[int, tuple[str, int]] = {}      # ping id -> (host, T1)
        self.answers: dict[int, asyncio.Future] = {}     # ping id -> resolved when its pong is in
        self._at_hello: set[asyncio.Task] = set()

    async def chain(self, host: str, n: int) -> None:
        """``n`` clock exchanges, each ping sent as soon as the previous pong is in.

        The first ping of a chain wakes sleeping threads on its way out (zmq's I/O threads, the
        probe's loop) and arrives late: a one-sided delay that biases its offset by ~100 us. The
        rest find every thread awake and travel as fast both ways (~40 us each on ipc); the
        minimum-round-trip filter picks them. T1 is stamped after encoding, right before sending.
        Raises :class:`~controller.bus.NotConnected` when ``host`` is not connected.
        """
        for _ in range(n):
            pid = self.bus.next_id()
            frame = self.bus.frame("ping", {"id": pid})
            answered = asyncio.get_running_loop().create_future()
            self.answers[pid] = answered
            self.pings[pid] = (host, time.monotonic_ns())
            try:
                await self.bus.send_frame(host, frame)
                await asyncio.wait_for(answered, PONG_WAIT_S)
            except asyncio.TimeoutError:
                pass
            finally:
                self.answers.pop(pid, None)
                if len(self.pings) > MAX_UNANSWERED:  # pongs that never came
                    self.pings.clear()

    async def sync(self, host: str) -> None:
        """A full chain (at a hello, before a run); a host that went away is logged, not raised."""
        try:
            await self.chain(host, PINGS)
        except ConnectionError as e:
            log.warning("clock_sync_failed", probe=host, error=str(e))

    def at_hello(self, host: str) -> None:
        """Start a full chain for a probe that just said hello, without holding up the bus."""
        task = asyncio.create_task(self.sync(host))
        self._at_hello.add(task)
        task.add_done_callback(self._at_hello.discard)

    async def follow(self, hosts: tuple[str, ...]) -> None:
        """During a run, a short chain per host every PING_EVERY_S (until cancelled)."""
        while True:
            await asyncio.sleep(PING_EVERY_S)
            for host in hosts:
                if self.bus.connected(host):
                    try:
                        await self.chain(host, RUN_PINGS)
                    except ConnectionError:
                        pass

    def pong(self, host: str, env: dict, received_ns: int) -> None:
        """A pong from ``host`` (its envelope), received at ``received_ns`` (T4)."""
        body = env["body"]
        pid = body.get("id")
        if not isinstance(pid, int) or pid not in self.pings or self.pings[pid][0] != host:
            return  # not a ping of ours to this host (another host cannot answer for it)
        sent = self.pings.pop(pid)
        link = self.bus.fleet.probes.get(host)
        if link is not None:
            rx = body.get("rx_ns")
            link.clock.add(sent[1], env["time"], received_ns, rx if isinstance(rx, int) else None)
        answered = self.answers.get(pid)
        if answered is not None and not answered.done():
            answered.set_result(None)

    async def close(self) -> None:
        """Cancel the chains started at hellos (at shutdown)."""
        for task in list(self._at_hello):
            task.cancel()
        await asyncio.gather(*self._at_hello, return_exceptions=True)
