"""connect: the probe's nc connects to another lab host (the step's ``to``) on the run's lab port.

The port has one source: the probes' configuration, which each reports in its hello; the sequencer
refuses a scenario whose own ``port`` differs before any step, and hands this action the probes'
port (``ctx.port``), never the scenario's. Without one, the probe connects to its own.
"""

from __future__ import annotations

from typing import Mapping

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext
from tcplab.wire import HOST_RE


def check_step(raw: Mapping) -> None:
    to = raw.get("to")
    if not isinstance(to, str) or not HOST_RE.match(to):
        raise ActionError("needs 'to' (the host to connect to)")


def from_step(step: Step, ctx: StepContext) -> dict:
    ip = ctx.lab_ip(step.to or "")
    if not ip:
        raise ActionError(f"{step.to} is not connected, so its address is unknown")
    return {"ip": ip} if ctx.port is None else {"ip": ip, "port": ctx.port}


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.connect(args["ip"], args.get("port", host.cfg.port))
    host.remember_nc()
    return {}


ACTION = Action("connect", handle, args={"ip": Arg(str, required=True), "port": Arg(int, bounds=(1, 65535))},
                from_step=from_step, step_fields=("to",), check_step=check_step)
