"""Every action a probe performs, each defined once, in its own module (pyroute2's plugin registry:
one module per qdisc, one table that names them).

An action module holds its wire arguments and their checks, how a scenario step becomes them
(``from_step``) and the probe's handler (:class:`~tcplab.actions.action.Action`). The scenario
format, the sequencer, the wire check of a command and the probe's dispatch all read this one
registry, so nothing else names an action. To add one: write ``tcplab/actions/<name>.py`` ending
in ``ACTION = Action("<name>", handle, ...)`` and add its name to :data:`NAMES` (one entry).

The probe executes these and nothing else: no shell strings.
"""

from __future__ import annotations

from importlib import import_module

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, StepContext
from tcplab.wire import ProtocolError

#: The registry: one module per name, in the order a scenario's error message lists them.
NAMES = ("shape", "sysctl", "listen", "connect", "send", "read", "shutdown", "keepalive", "close", "abort", "sync")

ACTIONS: dict[str, Action] = {name: import_module(f"tcplab.actions.{name}").ACTION for name in NAMES}


def scenario_actions() -> tuple[str, ...]:
    """The actions a scenario step may name (sync is the sequencer's own)."""
    return tuple(name for name, a in ACTIONS.items() if a.in_scenario)


def check_command(body: dict) -> tuple[str, dict]:
    """Check a ``command`` body ``{"id": int, "action": str, "args": {...}}``.

    Returns ``(action, args)``; raises :class:`~tcplab.wire.ProtocolError` naming the offending part.
    """
    cid = body.get("id")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise ProtocolError(f"command id must be an integer, got {cid!r}")
    name = body.get("action")
    action = ACTIONS.get(name) if isinstance(name, str) else None
    if action is None:
        raise ProtocolError(f"unknown action {name!r} (known: {', '.join(sorted(ACTIONS))})")
    return name, action.check_args(body.get("args", {}))


__all__ = ["ACTIONS", "NAMES", "Action", "ActionError", "Arg", "ProbeHost", "StepContext", "check_command",
           "scenario_actions"]
