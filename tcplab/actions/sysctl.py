"""sysctl: change a host's TCP knobs for the run (``set``), or put back what the run changed
(``restore``, what the sequencer's cleanup sends). The probe checks each name and value
(tcplab/tcpknobs.py: the per-namespace ``net.ipv4.tcp_*`` knobs a run may change; probe/sysctls.py), saves the old value
before the first change, and records both in the trace. In a scenario::

    - action: sysctl
      host: raspberrypi
      set: {tcp_syn_retries: 2}      # tcp_rmem / tcp_wmem take [min, default, max]
"""

from __future__ import annotations

from typing import Mapping

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext
from tcplab.tcpknobs import SysctlError, check as check_knob
from tcplab.wire import ProtocolError

MAX_KNOBS = 32


def _check_values(values: object, error: type[Exception]) -> None:
    if not isinstance(values, dict) or not values or len(values) > MAX_KNOBS:
        raise error(f"set must be a map of 1 to {MAX_KNOBS} TCP sysctls to their values")
    for name, value in values.items():
        try:
            check_knob(name, value)
        except SysctlError as e:
            raise error(str(e)) from None


def check(args: dict) -> None:
    if args.get("restore"):
        if len(args) > 1:
            raise ProtocolError("sysctl restore takes no other argument")
        return
    if "set" not in args:
        raise ProtocolError("sysctl needs 'set' or 'restore'")
    _check_values(args["set"], ProtocolError)


def check_step(raw: Mapping) -> None:
    def refuse(message: str) -> ActionError:
        return ActionError(message, field="set")
    if "set" not in raw:
        raise ActionError("needs 'set', a map of TCP sysctls to their values (e.g. {tcp_syn_retries: 2})")
    _check_values(dict(raw["set"]) if isinstance(raw["set"], dict) else raw["set"], refuse)


def from_step(step: Step, ctx: StepContext) -> dict:
    return {"set": {name: list(v) if isinstance(v, tuple) else v for name, v in step.settings}}


async def handle(host: ProbeHost, args: dict) -> dict:
    if args.get("restore"):
        restored = host.sysctls.restore()
        if restored:
            host.emit({"kind": "sysctl", "restored": True, "values": restored})
        return {}
    host.emit({"kind": "sysctl", "values": host.sysctls.set(args["set"])})
    return {}


#: what puts a host's knobs back (the cleanups')
RESTORE = {"restore": True}

ACTION = Action("sysctl", handle, args={"set": Arg(dict), "restore": Arg(bool)}, check=check,
                from_step=from_step, step_fields=("set",), check_step=check_step)
