"""One run at a time: a scenario from the CLI through to its finished run directory.

The order, each step before the next: parse the scenario (a bad one is answered ``done`` with its
one-line error); refuse what cannot start (a host not connected, a lab port that is not the
probes', a host that must shape but cannot: before a run directory, a step or a command); sync
the clocks of the scenario's hosts; make the run directory and the :class:`~controller.run.Run`
the probe bus adds events to; the sequencer's steps, with the clocks followed meanwhile; then
:func:`controller.finish.finish_run` (also when the run failed or was cancelled), which gets the
controller's counters of each host for this run (:func:`controller.fleet.counted_since`).

Progress and the final ``done`` go back through ``reply`` (the control server's, bound to the CLI
that asked). :meth:`ScenarioRunner.cancel` (the CLI's ``cancel``, on Ctrl-C) stops the steps: the
sequencer's cleanup still ends every nc, clears every host's shaping and syncs, the trace is still
written, run.json's status is ``cancelled``. At shutdown :meth:`ScenarioRunner.drain` refuses new
runs and cancels the one in progress the same way; a second signal (or the drain timeout) cuts the
cleanup short. A run's directory holds a marker while it runs (controller.recovery): a controller
killed mid-run leaves it, and the next one to start marks that run failed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Awaitable, Callable

import structlog

from controller import readiness, recovery, scenario
from controller.bus import ProbeBus
from controller.clocksync import ClockSync
from controller.finish import finish_run
from controller.fleet import counted_since
from controller.lifecycle import Lifecycle
from controller.run import Run, new_run_dir
from controller.sequencer import Sequencer, refusal, run_port
from controller.trace.schema import RunStatus

log = structlog.get_logger("controller")

Reply = Callable[[str, dict], Awaitable[None]]

CANCELLED = "run cancelled: the controller is stopping"


class ScenarioRunner:
    def __init__(self, runs_dir: Path, bus: ProbeBus, clock: ClockSync, roles: dict[str, str] | None = None,
                 lab_hosts: tuple[str, ...] = ()):
        self.runs_dir = runs_dir
        self.roles = roles or {}          # role -> host (the configuration's): what a scenario's server is
        self.lab_hosts = lab_hosts
        self.bus = bus
        self.clock = clock
        self.task: asyncio.Task | None = None
        self.seq: Sequencer | None = None  # the run's, once it has one
        self.closed = False
        self._why = CANCELLED  # what a run cancelled before its steps is answered

    @property
    def running(self) -> str | None:
        """The id of the run in progress (its directory's name), or None."""
        return self.bus.run.id if self.bus.run is not None else None

    def start(self, body: dict, reply: Reply) -> str | None:
        """Start the run ``body`` asks for; why not (one line) if it cannot start now."""
        if self.closed:
            return "the controller is stopping"
        if self.task is not None and not self.task.done():
            return f"busy with run {self.running}" if self.running else "busy with a run that is starting"
        self.seq, self._why = None, CANCELLED
        self.task = asyncio.create_task(self._run(body, reply))
        return None

    def cancel(self, why: str) -> bool:
        """Cancel the run in progress: its steps stop, its cleanup (every nc ended, shaping cleared on
        every host) and its finish (run.json status cancelled, ``why`` its error) still run. Before
        its steps (parse, refusal, clock sync) nothing needs cleaning: the task is cancelled. False
        when no run is in progress."""
        task = self.task
        if task is None or task.done():
            return False
        if self.seq is None:
            self._why = why
            task.cancel()
            return True
        return self.seq.cancel(why)

    def refusal(self, scn: scenario.Scenario) -> str | None:
        """Why ``scn`` cannot start on the probes connected now, or None."""
        return refusal(scn, self.bus) or readiness.shaping_refusal(scn, self.bus.shaping_unavailable)

    async def _run(self, body: dict, reply: Reply) -> None:
        where: dict = {}  # the run's directory and id, once it has them
        try:
            done = await self._attempt(body, reply, where)
        except asyncio.CancelledError:  # cancelled or the controller is stopping: the CLI still gets its done
            await reply("done", {"ok": False, "error": self._why, **where})
            raise
        except Exception as e:  # a bug, or the disk (a run directory, its marker): the CLI still gets its done
            log.exception("run_failed_to_run", error=repr(e))
            done = {"ok": False, "error": f"the run could not go on: {e!r}", **where}
        await reply("done", done)

    async def _attempt(self, body: dict, reply: Reply, where: dict) -> dict:
        """Parse, refuse, sync the clocks, run; the ``done`` body."""
        try:
            scn = scenario.parse(body.get("scenario"), source="scenario").bound(self.roles, self.lab_hosts)
            if body.get("delay") is not None:
                scn = scn.with_delay(float(body["delay"]))
        except (scenario.ScenarioError, TypeError, ValueError) as e:
            return {"ok": False, "error": str(e)}
        refused = self.refusal(scn)
        if refused:  # before a run directory, a step or a command: nothing has started
            log.warning("run_refused", scenario=scn.name, error=refused)
            return {"ok": False, "error": refused}
        for host in scn.hosts:
            if self.bus.connected(host):
                await self.clock.sync(host)
        run = Run(new_run_dir(self.runs_dir, scn.name), scn.hosts)
        where.update(dir=str(run.dir), run=run.id)
        ok, error = await self._execute(scn, run, reply)
        return {"ok": ok, "error": error, **where}

    async def _execute(self, scn: scenario.Scenario, run: Run, reply: Reply) -> tuple[bool, str | None]:
        self.bus.run = run
        structlog.contextvars.bind_contextvars(run=run.id)
        log.info("run_started", scenario=scn.name, delay=scn.delay, dir=str(run.dir))
        fleet = self.bus.fleet
        before = {h: fleet.counters(h) for h in scn.hosts}

        async def progress(p: dict) -> None:
            await reply("progress", {"run": run.id, **p})

        seq = self.seq = Sequencer(scn, run, self.bus, progress)
        started = time.time()
        ok, status = False, None
        follow = asyncio.create_task(self.clock.follow(scn.hosts))
        try:  # from here on bus.run is reset and the run finished whatever happens
            recovery.mark_started(run.dir, {"scenario": scn.to_dict(), "delay_s": scn.delay, "start_ns": run.start_ns,
                                            "port": run_port(scn, self.bus),
                                            "hosts": {h: self.bus.lab_ip(h) for h in scn.hosts}})
            await progress({"event": "run_started", "dir": str(run.dir), "steps": len(scn.steps)})
            ok = await seq.execute()
        except asyncio.CancelledError:
            status = RunStatus.CANCELLED
            raise
        finally:
            follow.cancel()
            self.bus.run = None
            if seq.cancelled:
                status = RunStatus.CANCELLED
            counted = {h: counted_since(before[h], fleet.counters(h)) for h in scn.hosts}
            try:
                path = finish_run(run, scn, seq, ok, started, {h: p.clock for h, p in fleet.probes.items()},
                                  {h: self.bus.lab_ip(h) for h in scn.hosts}, link_counters=counted, status=status)
            except Exception as e:  # a bug at the finish: the CLI still gets its done, naming it
                log.exception("run_finish_failed", error=repr(e))
                ok, seq.error = False, f"the run's finish failed: {e!r}"
            else:
                if run.rfc is not None and not run.rfc["ok"]:  # the check failed the run (controller.rfc9293)
                    ok = False
                log.info("run_finished", ok=ok, error=seq.error, trace=str(path),
                         counters={h: {k: v for k, v in c.items() if v} for h, c in counted.items()})
            recovery.mark_finished(run.dir)
            structlog.contextvars.unbind_contextvars("run")
        return ok, seq.error

    async def drain(self, lifecycle: Lifecycle, timeout: float) -> str | None:
        """Refuse new runs; cancel the one in progress and wait for its cleanup and finish, up to
        ``timeout`` s or a second signal, then cut it short. None if it ended on its own, else why
        it was cut short (``"signal"``, ``"timeout"``)."""
        self.closed = True
        task = self.task
        if task is None or task.done():
            return None
        self.cancel(CANCELLED)  # the sequencer's cleanup still runs; then the run's finish
        why = await lifecycle.wait_forced(task, timeout)
        if why is not None:
            log.warning("run_cut_short", reason=why)
        while not task.done():  # each cancel interrupts what the cleanup awaits: abort, clear, sync
            task.cancel()
            await asyncio.wait({task}, timeout=0.2)
        await asyncio.gather(task, return_exceptions=True)
        return why
