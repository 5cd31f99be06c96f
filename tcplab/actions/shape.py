"""shape: impair the probe's lab port on its egress (:class:`tcplab.impairment.Impairment`: delay,
jitter, loss, duplicate, reorder, corrupt, rate), change it in place, or ``clear`` it.

A scenario's shape step may act on several hosts; each host's shaping is of what that host sends,
so the direction is the host's. Its fields, in a scenario's units::

    delay: 0.5        # seconds (default: the scenario's delay)
    jitter: 0.1       # seconds, +- around the delay (at most the delay)
    loss: 5           # percent of packets dropped
    duplicate: 1      # percent sent twice
    reorder: 25       # percent sent at once, overtaking the delayed ones (needs a delay)
    corrupt: 2        # percent with one bit flipped (the peer's TCP drops them)
    rate: 64kbit      # the link's speed: a number of kbit/s, or tc's 64kbit / 2mbit / 1gbit
    clear: true       # remove it all (no other field)

Each field a step leaves out is off (0) except the delay. The probe answers with its backend and
records, in the trace, what the backend accepted: netem's parameters read back from the kernel, or
the delay line's own.
"""

from __future__ import annotations

import math
from typing import Mapping

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext
from tcplab.impairment import PARAMS, Impairment, ImpairmentError, rate_kbit
from tcplab.wire import ProtocolError

MAX_DELAY_MS = PARAMS["delay_ms"][3]
# the step's field -> (the wire parameter, its scale from the step's unit)
STEP_PARAMS = {"delay": ("delay_ms", 1000), "jitter": ("jitter_ms", 1000), "loss": ("loss_pct", 1),
               "duplicate": ("duplicate_pct", 1), "reorder": ("reorder_pct", 1), "corrupt": ("corrupt_pct", 1),
               "rate": ("rate_kbit", 1)}
UNITS = {"delay": "seconds", "jitter": "seconds", "rate": "kbit/s, or like 64kbit, 2mbit"}


def check(args: dict) -> None:
    if args.get("clear"):
        if len(args) > 1:
            raise ProtocolError("shape clear takes no other argument")
        return
    try:
        Impairment.from_args(args)
    except ImpairmentError as e:
        raise ProtocolError(f"shape {e}") from None


def step_params(raw: Mapping) -> dict:
    """A step's shaping fields as wire parameters (the delay only when the step gives one);
    raises ActionError naming the field."""
    out = {}
    for key, (param, scale) in STEP_PARAMS.items():
        if key not in raw:
            continue
        value = raw[key]
        _, unit, lo, hi, whole = PARAMS[param]
        try:
            if key == "rate":
                value = rate_kbit(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"got {value!r}")
            value = value * scale
            if whole:
                value = int(round(value))
            if not lo <= value <= hi:
                raise ValueError(f"got {raw[key]!r}")
        except ValueError as e:
            raise ActionError(f"{key} must be a number from {_n(lo / scale)} to {_n(hi / scale)} ({UNITS.get(key, unit)}), "
                              f"{e}", field=key) from None
        out[param] = value
    return out


def _n(x: float) -> str:
    return f"{int(x)}" if x == int(x) else f"{x:g}"


def check_step(raw: Mapping) -> None:
    clear = raw.get("clear", False)
    if not isinstance(clear, bool):
        raise ActionError(f"clear must be true or false, got {clear!r}", field="clear")
    given = sorted(k for k in STEP_PARAMS if k in raw)
    if clear and given:
        raise ActionError(f"a clear takes no {given[0]!r}: it removes all shaping", field=given[0])
    params = step_params(raw)
    if "delay_ms" in params:  # with the step's own delay the whole impairment is known now
        fits(params)


def fits(params: dict) -> Impairment:
    """The impairment of ``params`` (wire units, the delay included), or ActionError naming the step
    field that does not fit with the delay, in a scenario's words."""
    try:
        return Impairment.from_args(params)
    except ImpairmentError as e:
        if e.field == "jitter_ms":
            why = (f"jitter {_n(params['jitter_ms'] / 1000)} s is larger than the delay "
                   f"{_n(params['delay_ms'] / 1000)} s: a packet cannot leave before it was sent")
        elif e.field == "reorder_pct":
            why = "reorder needs a delay: a reordered packet is one sent at once, overtaking the delayed ones"
        else:
            why = str(e)
        raise ActionError(why, field=next(k for k, (p, _) in STEP_PARAMS.items() if p == e.field)) from None


def impairment(step: Step, delay_s: float) -> Impairment:
    """The step's impairment with the scenario's delay where the step gives none."""
    params = dict(step.shaping)
    params["delay_ms"] = int(round((step.delay if step.delay is not None else delay_s) * 1000))
    return fits(params)


def from_step(step: Step, ctx: StepContext) -> dict:
    if step.clear:
        return {"clear": True}
    return impairment(step, ctx.delay).args()


async def handle(host: ProbeHost, args: dict) -> dict:
    if args.get("clear"):
        was = host.shaper.backend
        counters = await host.netlink(host.shaper.clear)
        host.emit({"kind": "shaper", "backend": None, "delay_ms": 0, "loss_pct": 0,
                   "cleared": was, "counters": counters})
        return {"backend": None}
    imp = Impairment.from_args(args)
    backend = await host.netlink(host.shaper.apply, imp)
    accepted = await host.netlink(host.shaper.accepted)
    host.emit({"kind": "shaper", "backend": backend, **imp.args(), "accepted": accepted})
    return {"backend": backend}


ACTION = Action("shape", handle,
                args={**{p: Arg(int if whole else (int, float), bounds=(lo, hi))
                         for p, (_, _, lo, hi, whole) in PARAMS.items()}, "clear": Arg(bool)},
                check=check, from_step=from_step, one_host=False,
                step_fields=(*STEP_PARAMS, "clear"), check_step=check_step)
