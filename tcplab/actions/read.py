"""read: the application stops reading its connection (``reading: false``), or goes on
(``reading: true``). A slow reader: what arrives stays in its socket's receive buffer, the window it
advertises shrinks to zero (Wireshark's zero_window), and the sender's kernel probes it (zero-window
probes, on the persist timer) until the reader goes on and a window update opens it again. nc is
held with SIGSTOP and let go with SIGCONT; the probe's application stops calling recv."""

from __future__ import annotations

from typing import Mapping

from tcplab.actions import conn
from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext


def check_step(raw: Mapping) -> None:
    conn.check_name(raw)
    if not isinstance(raw.get("reading"), bool):
        raise ActionError(f"needs 'reading', true or false (on or off), got {raw.get('reading')!r}", field="reading")


def from_step(step: Step, ctx: StepContext) -> dict:
    return {"on": bool(step.reading), **conn.conn_arg(step, ctx)}


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.read(args["on"], conn=conn.pair_of(args))
    return {}


ACTION = Action("read", handle, args={"on": Arg(bool, required=True), conn.ARG: conn.CONN}, check=conn.check_arg,
                from_step=from_step, step_fields=("reading", conn.FIELD), check_step=check_step)
