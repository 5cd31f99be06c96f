"""Runs a scenario's steps in order against the probes and records each step in the trace.

Each step: a ``step`` record with status ``start``; the action sent to its host(s) (a command
the probe answers with a result); then a wait until every expectation is met or the step's
timeout passes; then a ``step`` record ``ok`` or ``failed`` with an error naming the host, the
step and what was observed instead. The first failed step ends the run. A host of the run that
stops answering (controller.liveness: nothing from it for 3 s) fails the step in progress at once,
naming it, rather than its timeout later. :meth:`Sequencer.cancel` (the CLI's Ctrl-C, a controller
stopping) interrupts the steps. Whatever happened, the sequencer then, on every connected host at
once, ends every nc, clears the shaping and waits for a ``sync`` so that all the host's events are
in before the trace is closed.

Before the first step it checks the lab port (controller.scenario.port_conflict): every probe
reports the port it listens, shapes and captures on in its hello, and a scenario whose ``port``
differs is refused with one line naming both ports; nothing is sent to a probe then. A connect
goes to that one port, so the inventory's ``tcplab_lab_port`` is the port's single source.

A step becomes a command through its action's ``from_step`` (:mod:`tcplab.actions`, the one
registry): the sequencer knows no action by name but ``wait`` (no command) and its cleanup.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol

import structlog

from controller.run import Run
from controller.scenario import Scenario, Step, port_conflict
from controller.trace.schema import StepStatus
from tcplab import actions
from tcplab.actions import abort, sysctl
from tcplab.errors import TcplabError

log = structlog.get_logger("controller.sequencer")

COMMAND_TIMEOUT_S = 15.0
CLEANUP_TIMEOUT_S = 5.0  # an abort or a clear, each host at once (a silent host fails sooner: liveness)


class StepFailed(TcplabError):
    """A step that failed; the message names the step, the host and what was observed."""


class Bus(Protocol):
    """How the sequencer reaches the probes (the controller daemon implements it)."""

    def lab_ip(self, host: str) -> str | None: ...     # the configured address (the inventory's), never a hello's
    def connected(self, host: str) -> bool: ...
    def lab_port(self, host: str) -> int | None: ...   # the port the probe's hello reported
    async def command(self, host: str, action: str, args: dict, timeout: float) -> dict: ...


def refusal(scn: Scenario, bus: Bus) -> str | None:
    """Why the scenario cannot start on these probes (one line), or None: a host not connected, or a
    lab port that is not the probes' (the controller asks before it makes a run directory)."""
    missing = [h for h in scn.hosts if not bus.connected(h)]
    if missing:
        return f"not connected to the controller: {', '.join(missing)}"
    return port_conflict(scn, {h: bus.lab_port(h) for h in scn.hosts})


def run_port(scn: Scenario, bus: Bus) -> int | None:
    """The lab port of a run that :func:`refusal` let through: the probes' (which equals the scenario's)."""
    return next((bus.lab_port(h) for h in scn.hosts), scn.port)


class Sequencer:
    def __init__(self, scenario: Scenario, run: Run, bus: Bus,
                 progress: Callable[[dict], Awaitable[None]] | None = None):
        self.scenario = scenario
        self.run = run
        self.bus = bus
        self.progress = progress
        self.error: str | None = None
        self.failed_step: int | None = None
        self.unmet: list[dict] = []            # the failed step's expectations against what was seen (Run.explain)
        self.port: int | None = scenario.port   # the lab port the run uses, once checked
        self.cancelled: str | None = None       # why the steps were cancelled (:meth:`cancel`), if they were
        self._steps: asyncio.Future | None = None
        run.delay_s = scenario.delay
        run.jitter_s = max((dict(s.shaping).get("jitter_ms", 0) / 1000 for s in scenario.steps), default=0.0)

    async def _report(self, **body) -> None:
        if self.progress is not None:
            await self.progress(body)

    async def execute(self) -> bool:
        self.error = refusal(self.scenario, self.bus)
        if self.error:
            log.warning("run_refused", error=self.error)
            await self._report(event="run_failed", error=self.error)
            return False
        self.port = run_port(self.scenario, self.bus)
        if self.cancelled:  # before its first step: nothing to clean up
            self.error = self.cancelled
            return False
        self._steps = asyncio.ensure_future(self._all_steps())
        try:
            await self._steps
            return True
        except StepFailed as e:
            self.error = str(e)
            return False
        except asyncio.CancelledError:
            if self.cancelled is None or not self._steps.cancelled():  # this task itself was cancelled
                raise
            self.error = self.cancelled
            return False
        finally:
            await self._cleanup()

    def cancel(self, why: str) -> bool:
        """Stop the steps (the one in progress is interrupted); the cleanup still runs. Before the
        steps begin, they never will (:meth:`execute` sees ``cancelled``). False once they ended."""
        if self._steps is not None and self._steps.done():
            return False
        self.cancelled = why
        log.warning("run_cancelled", error=why)
        if self._steps is not None:
            self._steps.cancel()
        return True

    async def _all_steps(self) -> None:
        for step in self.scenario.steps:
            await self._step(step)

    async def _record(self, step: Step, status: StepStatus, error: str | None = None) -> float:
        """The step's record in the run's trace and its progress line to the CLI; the record's ``t``."""
        rec = await self.run.add_step(step, status, error)
        extra = {} if error is None else {"error": error}
        await self._report(event="step", index=step.index, total=len(self.scenario.steps), action=step.action,
                           target=step.target, status=status.value, **extra)
        return rec["t"]

    async def _step(self, step: Step) -> None:
        since = await self._record(step, StepStatus.START)
        structlog.contextvars.bind_contextvars(step=step.index)
        try:
            self._check_silent(step)
            await self._act(step)
            timeout = self.scenario.timeout(step)
            unmet = await self.run.wait_for(step.expect, since, timeout)
            self._check_silent(step)
            if unmet:
                self.unmet = [{"step": step.index, **self.run.explain(e, since)} for e in unmet]
                hosts = list(dict.fromkeys(e.host for e in unmet))
                missed = [e for e in unmet if self.run.verdict(e, since) is False]
                waiting = [e for e in unmet if e not in missed]
                what = [f"{e} came at {self.run.hits(e, since)[e.count - 1] - since:.3f} s" for e in missed]
                if waiting:  # the timeout ran out only when no time was missed first
                    what.append(("" if missed else f"after {timeout:g} s ")
                                + f"still waiting for {', '.join(str(e) for e in waiting)}")
                raise StepFailed(f"step {step.index} ({step.action} on {step.target}): {'; '.join(what)}; observed "
                                 + " | ".join(self.run.observed(h, since) for h in hosts))
        except StepFailed as e:
            self.failed_step = step.index
            log.warning("step_failed", error=str(e))
            await self._record(step, StepStatus.FAILED, str(e))
            raise
        except asyncio.CancelledError:
            if self.cancelled is not None:  # the step in progress ends in the trace, naming why
                await self._record(step, StepStatus.FAILED, self.cancelled)
            raise
        finally:
            structlog.contextvars.unbind_contextvars("step")
        await self._record(step, StepStatus.OK)

    def _check_silent(self, step: Step) -> None:
        """A host of the run that stopped answering fails the step (controller.liveness)."""
        if self.run.silent:
            raise StepFailed(f"step {step.index} ({step.action} on {step.target}): "
                             + "; ".join(self.run.silent.values()))

    async def _act(self, step: Step) -> None:
        action = actions.ACTIONS.get(step.action)
        if action is None:  # a wait: its duration, then its expectations
            if step.duration:
                await asyncio.sleep(step.duration)
                self._check_silent(step)
            return
        ctx = actions.StepContext(lab_ip=self.bus.lab_ip, port=self.port, delay=self.scenario.delay, pair=self.run.pair)
        try:
            args = action.from_step(step, ctx)
        except actions.ActionError as e:
            raise StepFailed(f"step {step.index} ({step.action} on {step.target}): {e}") from e
        for host in step.hosts:
            try:
                result = await self.bus.command(host, step.action, args, COMMAND_TIMEOUT_S)
            except (TimeoutError, ConnectionError) as e:
                why = self.run.silent.get(host) or f"{host} did not answer ({e})"  # silent: liveness said why
                raise StepFailed(f"step {step.index} ({step.action} on {step.target}): {why}") from e
            if not result.get("ok"):
                raise StepFailed(f"step {step.index} ({step.action} on {step.target}): {host} refused: "
                                 f"{result.get('error')}")
            if step.action == "connect" and step.connection is not None:
                self._name(step, host, result.get("data") or {})

    def _name(self, step: Step, host: str, data: dict) -> None:
        """A named connect's result: the connection's address pair, kept for both of its ends."""
        if not (data.get("local") and data.get("remote")):
            raise StepFailed(f"step {step.index} ({step.action} on {step.target}): {host} did not report "
                             f"connection {step.connection}'s addresses")
        self.run.note_pair(step.connection or "", host, step.to or "", data["local"], data["remote"])
        log.info("connection_named", connection=step.connection, host=host, local=data["local"], remote=data["remote"])

    async def _cleanup(self) -> None:
        """Every connected host at once: its nc ended, its shaping cleared, its TCP knobs restored,
        then its sync."""
        await asyncio.gather(*(self._clean(h) for h in self.scenario.hosts if self.bus.connected(h)))

    async def _clean(self, host: str) -> None:
        for action, args, timeout in (("abort", dict(abort.END), CLEANUP_TIMEOUT_S),
                                      ("shape", {"clear": True}, CLEANUP_TIMEOUT_S),
                                      ("sysctl", dict(sysctl.RESTORE), CLEANUP_TIMEOUT_S),
                                      ("sync", {}, COMMAND_TIMEOUT_S)):
            try:
                result = await self.bus.command(host, action, args, timeout)
                if not result.get("ok"):
                    log.error("cleanup_refused", host=host, action=action, error=result.get("error"))
            except (TimeoutError, ConnectionError) as e:
                log.error("cleanup_failed", host=host, action=action, error=str(e))
