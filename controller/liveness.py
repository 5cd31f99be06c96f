"""Liveness: the controller's heartbeat to every probe, and the probes that stopped answering.

- Every :data:`HEARTBEAT_S` the controller sends each probe that answers a ``heartbeat`` (body
  ``{}``, or ``{"run": id}`` during a run). The probe's transport notes every frame it hears
  (``last_heard``): its dead-man switch (probe/deadman.py) clears its shaping and ends its
  endpoints when the controller has been silent too long. A probe answers nothing to it: its own
  heartbeat goes out every second anyway.
- A probe from which no frame came for :data:`controller.fleet.ALIVE_S` (3 s) is *silent*. It is
  reported once, within :data:`TICK_S` of that: a ``probe_silent`` log event; during a run it
  is in, a fact for run.json (``hosts.<h>.silences``) and the step in progress fails naming it
  (:meth:`controller.run.Run.note_silent` wakes the expectation wait); every command waiting on
  it fails at once with :class:`ProbeSilent` instead of waiting out its timeout. A silent probe is
  sent nothing until it speaks again (``probe_back``): a stopped process's queue would only grow.
  A probe silent during a run may come back still shaped, its nc running (a stopped process's
  dead-man switch cannot fire, and the frames queued for it refresh its ``last_heard`` at once):
  :attr:`Liveness.on_silent` and :attr:`Liveness.on_back` let the controller clear it then
  (controller.recovery's :class:`~controller.recovery.Cleanup`).

The silence is measured from the last frame, so "reported within 3 s of the probe stopping"
holds for a probe whose heartbeats came every second: its last one came at most 1 s before it
stopped, the report ALIVE_S after that, plus at most one tick.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable

import structlog

from controller.fleet import ALIVE_S
from tcplab.errors import TcplabError

if TYPE_CHECKING:
    from controller.bus import ProbeBus

log = structlog.get_logger("controller")

HEARTBEAT_S = 1.0  # the controller's heartbeat to each probe
TICK_S = 0.1       # how often silences are looked for (the report's lateness, at most)


class ProbeSilent(TcplabError, ConnectionError):
    """A probe that stopped answering while the controller waited on it (the message names it)."""


def silence(host: str, silent_s: float) -> str:
    """The one-line reason a silent probe gives a failed step or command."""
    return f"{host} stopped answering (nothing heard from it for {silent_s:.1f} s)"


class Liveness:
    def __init__(self, bus: ProbeBus):
        self.bus = bus
        self.silent: dict[str, str] = {}  # host -> why it is silent (as reported), until it speaks again
        self._beat_at = 0.0
        self.on_silent: Callable[[str], None] = lambda host: None  # a host of the run in progress fell silent
        self.on_back: Callable[[str], None] = lambda host: None    # a silent host speaks again

    async def serve(self) -> None:
        """Heartbeats and silences until cancelled."""
        while True:
            await self.check()
            now = time.monotonic()
            if now >= self._beat_at:
                self._beat_at = now + HEARTBEAT_S
                await self.beat()
            await asyncio.sleep(TICK_S)

    async def beat(self) -> None:
        """One heartbeat to every probe that answers."""
        run = self.bus.run
        body = {"run": run.id} if run is not None else {}
        for host in list(self.bus.fleet.probes):
            if host in self.silent:
                continue
            try:  # bounded: a send never holds up the silences
                await asyncio.wait_for(self.bus.send(host, "heartbeat", body), HEARTBEAT_S)
            except (ConnectionError, asyncio.TimeoutError) as e:
                log.debug("heartbeat_not_sent", probe=host, error=str(e) or type(e).__name__)

    async def check(self) -> None:
        """Report the probes that fell silent and the ones that speak again; fail what waits on a silent one."""
        now = time.monotonic()
        for host, link in list(self.bus.fleet.probes.items()):
            quiet_s = now - link.last_seen
            if quiet_s >= ALIVE_S and host not in self.silent:
                await self._fell_silent(host, quiet_s)
            elif quiet_s < ALIVE_S and host in self.silent:
                del self.silent[host]
                log.info("probe_back", probe=host)
                self.on_back(host)
                run = self.bus.run
                if run is not None and host in run.hosts:
                    run.note_back(host)
        for host, why in self.silent.items():
            self._fail_waiting(host, why)

    async def _fell_silent(self, host: str, quiet_s: float) -> None:
        why = self.silent[host] = silence(host, quiet_s)
        run = self.bus.run
        in_run = run is not None and host in run.hosts
        log.warning("probe_silent", probe=host, silent_s=round(quiet_s, 3), run=run.id if in_run else None)
        if in_run:
            self.on_silent(host)
            await run.note_silent(host, why, quiet_s)

    def _fail_waiting(self, host: str, why: str) -> None:
        for asked, fut in list(self.bus.pending.values()):
            if asked == host and not fut.done():
                fut.set_exception(ProbeSilent(why))
