"""listen: the probe's application listens on the lab port (its configuration's, the port it shapes
and captures): nc (``nc -l -- PORT``) for one connection, the probe's own for ``count`` > 1
(probe.endpoints: ``nc -l`` accepts only one).

``count`` (1..:data:`MAX_CONNECTIONS`, default 1) is how many connections the step makes: a listen
serves that many, a connect (tcplab.actions.connect) opens that many. A step without it is the seed's
one connection, and its command carries no ``count``.

``app`` (the step's, set by the scenario when a named connection connects to this listen,
tcplab.actions.conn) runs the probe's own application even for one connection: it is the one that
knows its connections apart.
"""

from __future__ import annotations

from typing import Mapping

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext

MAX_CONNECTIONS = 512  # per step: each connection is one of the probe's file descriptors
COUNT = Arg(int, bounds=(1, MAX_CONNECTIONS))


def check_count(raw: Mapping) -> None:
    count = raw.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CONNECTIONS:
        raise ActionError(f"count must be a whole number of connections from 1 to {MAX_CONNECTIONS}, got {count!r}", field="count")


def count_arg(step: Step) -> dict:
    return {"count": step.count} if step.count != 1 else {}


def app_arg(step: Step) -> dict:
    return {"app": True} if step.app else {}


def from_step(step: Step, ctx: StepContext) -> dict:
    return {**count_arg(step), **app_arg(step)}


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.listen(host.cfg.port, count=args.get("count", 1), app=args.get("app", False))
    host.remember_nc()
    return {}


ACTION = Action("listen", handle, args={"count": COUNT, "app": Arg(bool)}, from_step=from_step, step_fields=("count",),
                check_step=check_count)
