"""The controller daemon: a small composition, started, run and stopped in uvicorn's shape.

- :class:`~controller.bus.ProbeBus` — the probes' ROUTER at ``bind``: hellos, events and their
  acks, command results; the sequencer's ``Bus``.
- :class:`~controller.clocksync.ClockSync` — ping chains at a hello, before a run and during it.
- :class:`~controller.control.ControlServer` — the ``tcplab`` CLI's ``ipc://HOME/control.sock``:
  ``status``, and ``run`` (answered by ``progress`` frames and one ``done``).
- :class:`~controller.runner.ScenarioRunner` — one run at a time: parse, refuse, sequencer, finish.
- :class:`~controller.liveness.Liveness` — heartbeats; a probe silent for 3 s fails what waits on it.
- :mod:`~controller.recovery` — the runs a killed controller left marked failed at startup.
- :mod:`~controller.aftermath` — what their probes did meanwhile (a dead-man switch's clear, nc's
  end), added to those runs' traces once each probe is back and clean.
- :class:`~controller.lifecycle.Lifecycle` — ``startup -> main_loop -> shutdown``; a first
  SIGTERM/SIGINT stops, a second forces (exit codes there).

Shutdown: the runner refuses new runs and cancels the one in progress, whose cleanup (every nc
ended, shaping cleared, a sync) and finish (trace, run.json, film) are waited for up to
:data:`DRAIN_S`: less than the 10 s after which ``tcplab-controller stop`` sends SIGKILL, so the
trace is written even when a probe no longer answers. A second signal cuts the wait short. Then
the loops are cancelled and the sockets closed (linger 0 when forced), the control socket removed.

Command line::

    tcplab-controller start --config PATH   # daemonize; prints {"changed": bool, "pid": N}
    tcplab-controller stop  --config PATH
    tcplab-controller run   --config PATH   # foreground
"""

from __future__ import annotations

import asyncio
import sys

import structlog
import zmq
import zmq.asyncio

from controller import config as controller_config
from controller import controlsock
from controller.bus import ProbeBus
from controller.clocksync import ClockSync
from controller.control import ControlServer
from controller.fleet import Fleet
from controller.lifecycle import Lifecycle
from controller.liveness import Liveness
from controller.aftermath import Aftermath
from controller.recovery import Cleanup, recover
from controller.run import Run
from controller.runner import ScenarioRunner
from tcplab import logs, pidfile
from tcplab.errors import TcplabError

log = structlog.get_logger("controller")

SYNC_TIMEOUT_S = 15.0  # a host of an interrupted run: every event it holds on the wire (the sync barrier)
DRAIN_S = 8.0  # a cancelled run's cleanup and finish, at most (pidfile.stop kills after 10 s)


class StartupError(TcplabError, OSError):
    """The controller could not open its sockets (exit code 1, one line in its log)."""


class Controller:
    def __init__(self, cfg: controller_config.ControllerConfig):
        self.cfg = cfg
        self.ctx = zmq.asyncio.Context()
        self.fleet = Fleet(admit=cfg.hosts)  # the inventory's lab hosts, from the role
        self.bus = ProbeBus(self.ctx, self.fleet, curve=cfg.curve)  # CurveZMQ when keys_dir is set
        self.bus.addresses = dict(cfg.addresses)  # where a connect goes: the inventory's, never a hello's
        self.clock = ClockSync(self.bus)
        self.aftermath = Aftermath()
        self.cleanup = Cleanup(self.bus, set(), after=self._after_cleanup)
        self.bus.on_outside = self.aftermath.hold
        self.bus.on_hello = self._at_hello
        self.liveness = Liveness(self.bus)
        self.liveness.on_silent, self.liveness.on_back = self.cleanup.owe, self.cleanup.reached
        self.bus.on_pong = self.clock.pong
        self.runner = ScenarioRunner(cfg.runs_dir, self.bus, self.clock, cfg.roles, cfg.hosts)
        self.control = ControlServer(self.ctx, cfg.control_path, self.fleet, self.runner)
        self.lifecycle = Lifecycle()
        self._tasks: list[asyncio.Task] = []

    async def _after_cleanup(self, host: str) -> None:
        """A host of an interrupted run is clean: what it did meanwhile into that run's trace."""
        if host in self.aftermath.runs:
            try:  # every event the probe holds on the wire first: what it did meanwhile is among them
                result = await self.bus.command(host, "sync", {}, SYNC_TIMEOUT_S)
            except (TimeoutError, ConnectionError) as e:
                log.error("aftermath_sync_failed", probe=host, error=str(e))
                return
            if not result.get("ok"):
                log.error("aftermath_sync_refused", probe=host, error=result.get("error"))
                return
            await self.clock.sync(host)
            probe = self.fleet.probes.get(host)
            if probe is not None:
                await self.aftermath.complete(host, probe.clock)

    def _at_hello(self, host: str) -> None:
        self.clock.at_hello(host)
        self.cleanup.reached(host)

    @property
    def stopping(self) -> asyncio.Event:
        """Set to stop the daemon (what the first signal does)."""
        return self.lifecycle.should_exit

    @property
    def run(self) -> Run | None:
        """The run in progress, whose events the bus adds (a benchmark sets one directly)."""
        return self.bus.run

    @run.setter
    def run(self, run: Run | None) -> None:
        self.bus.run = run

    async def serve(self) -> int:
        return await self.lifecycle.serve(self.startup, self.main_loop, self.shutdown)

    def startup(self) -> None:
        self.cfg.home.mkdir(parents=True, exist_ok=True)
        endpoint = self.cfg.bind
        try:
            self.bus.bind(endpoint)
            endpoint = self.control.endpoint
            self.control.bind()
        except (zmq.ZMQError, controlsock.ControlSocketError) as e:
            raise StartupError(f"cannot bind {endpoint}: {e.strerror}") from e
        self.aftermath.runs = recover(self.cfg.runs_dir)
        self.cleanup.owed = set(self.aftermath.runs)
        log.info("controller_started", bind=self.cfg.bind, control=str(self.cfg.control_path),
                 owed_cleanup=sorted(self.cleanup.owed))

    async def main_loop(self) -> bool:
        """Serve the probes and the CLI until asked to stop; True if one of them crashed."""
        self._tasks = [asyncio.create_task(self.bus.serve()), asyncio.create_task(self.control.serve()),
                       asyncio.create_task(self.liveness.serve())]
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([stop, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        crashed = False
        for task in done:
            if task is not stop and not task.cancelled() and task.exception():
                log.error("controller_task_crashed", error=repr(task.exception()))
                crashed = True
        return crashed

    async def shutdown(self) -> None:
        log.info("controller_stopping")
        cut = await self.runner.drain(self.lifecycle, DRAIN_S)
        await self.clock.close()
        await self.cleanup.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        linger = 0 if self.lifecycle.force_exit.is_set() else 500
        self.bus.close(linger)
        self.control.close(linger)
        self.ctx.term()
        log.info("controller_stopped", run_cut_short=cut, forced=self.lifecycle.force_exit.is_set(),
                 probe_frames=self.bus.session.counters, control_frames=self.control.session.counters)


def _serve(cfg: controller_config.ControllerConfig) -> int:
    logs.configure(host="controller", component="controller")
    try:
        return asyncio.run(Controller(cfg).serve())
    except StartupError as e:
        log.error("controller_start_failed", error=str(e))
        return 1


def main(argv: list[str] | None = None) -> int:
    return pidfile.main("tcplab-controller", "controller.daemon", argv, controller_config.load, _serve)


if __name__ == "__main__":
    sys.exit(main())
