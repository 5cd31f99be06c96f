"""shape: egress delay (and loss) on the probe's lab port, or ``clear`` to remove it.

A scenario's shape step may act on several hosts; its delay is the step's own or the scenario's.
"""

from __future__ import annotations

from tcplab.actions.action import Action, Arg, ProbeHost, Step, StepContext
from tcplab.wire import ProtocolError

MAX_DELAY_MS = 60_000


def check(args: dict) -> None:
    if args.get("clear"):
        return
    delay = args.get("delay_ms", 0)
    if not 0 <= delay <= MAX_DELAY_MS:
        raise ProtocolError(f"shape delay_ms {delay} is outside 0..{MAX_DELAY_MS}")
    loss = args.get("loss_pct", 0)
    if not 0 <= loss <= 100:
        raise ProtocolError(f"shape loss_pct {loss} is outside 0..100")


def from_step(step: Step, ctx: StepContext) -> dict:
    if step.clear:
        return {"clear": True}
    delay = step.delay if step.delay is not None else ctx.delay
    return {"delay_ms": int(round(delay * 1000)), "loss_pct": step.loss}


async def handle(host: ProbeHost, args: dict) -> dict:
    if args.get("clear"):
        was = host.shaper.backend
        counters = await host.netlink(host.shaper.clear)
        host.emit({"kind": "shaper", "backend": None, "delay_ms": 0, "loss_pct": 0,
                   "cleared": was, "counters": counters})
        return {"backend": None}
    delay_ms, loss = int(round(args.get("delay_ms", 0))), args.get("loss_pct", 0)
    backend = await host.netlink(host.shaper.apply, delay_ms=delay_ms, loss_pct=loss)
    host.emit({"kind": "shaper", "backend": backend, "delay_ms": delay_ms, "loss_pct": loss})
    return {"backend": backend}


ACTION = Action("shape", handle, args={"delay_ms": Arg((int, float)), "loss_pct": Arg((int, float)),
                                       "clear": Arg(bool)},
                check=check, from_step=from_step, one_host=False)
