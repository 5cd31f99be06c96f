"""keepalive: TCP keepalive on the application's connection (SO_KEEPALIVE with TCP_KEEPIDLE,
TCP_KEEPINTVL, TCP_KEEPCNT): after ``idle`` seconds without a segment from the peer the kernel sends
a probe (an ACK one byte behind, no data; Wireshark's keep_alive), the peer answers (keep_alive_ack)
and the wait starts again; an unanswered probe is repeated every ``interval`` seconds, and after
``probes`` unanswered ones the kernel resets the connection (an RST, and ETIMEDOUT for the
application). For nc, which has no such option, the probe sets it on nc's own socket
(probe/linger.py). In a scenario::

    - action: keepalive
      host: raspberrypi
      idle: 2
      interval: 1
      probes: 3
"""

from __future__ import annotations

from typing import Mapping

from tcplab.actions import conn
from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext

# the field -> (the wire argument, low, high): the kernel's own bounds (MAX_TCP_KEEPIDLE etc.)
FIELDS = {"idle": ("idle_s", 1, 32767), "interval": ("interval_s", 1, 32767), "probes": ("probes", 1, 127)}


def check_step(raw: Mapping) -> None:
    conn.check_name(raw)
    for key, (_, lo, hi) in FIELDS.items():
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            unit = "probes" if key == "probes" else "seconds"
            raise ActionError(f"needs '{key}', a whole number of {unit} from {lo} to {hi}, got {value!r}",
                              field=key)


def from_step(step: Step, ctx: StepContext) -> dict:
    assert step.keepalive is not None
    return {**{arg: v for (arg, _, _), v in zip(FIELDS.values(), step.keepalive)}, **conn.conn_arg(step, ctx)}


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.keepalive(args["idle_s"], args["interval_s"], args["probes"], conn=conn.pair_of(args))
    return {}


ACTION = Action("keepalive", handle,
                args={**{arg: Arg(int, required=True, bounds=(lo, hi)) for arg, lo, hi in FIELDS.values()},
                      conn.ARG: conn.CONN},
                check=conn.check_arg, from_step=from_step, step_fields=(*FIELDS, conn.FIELD), check_step=check_step)
