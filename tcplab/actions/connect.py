"""connect: the probe's application connects to another lab host (the step's ``to``) on the run's
lab port: nc (``nc -- IP PORT``) for one connection, the probe's own for ``count`` > 1 (as listen).

The address is the target's lab address from the controller's configuration (the inventory's,
``StepContext.lab_ip``), never what the target says of itself. On the wire it must be a plain IPv4
address (no name, no ``-lk``); the probe checks it again against its own lab network before nc
starts (probe.labnet), and nc's argv ends its options with ``--``.

The port has one source: the probes' configuration, which each reports in its hello; the sequencer
refuses a scenario whose own ``port`` differs before any step, and hands this action the probes'
port (``ctx.port``), never the scenario's. Without one, the probe connects to its own.

With ``connection: NAME`` the step opens one connection and names it (tcplab.actions.conn): the
command carries ``app`` (the probe's own application, which may hold several named connections at
once) and its result reports the connection's ``local`` and ``remote`` address.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext
from tcplab.actions import conn
from tcplab.actions.listen import COUNT, app_arg, check_count, count_arg
from tcplab.wire import HOST_RE, ProtocolError

BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def check_step(raw: Mapping) -> None:
    to = raw.get("to")
    if not isinstance(to, str) or not HOST_RE.match(to):
        raise ActionError("needs 'to' (the host to connect to)", field="to")
    check_count(raw)
    conn.check_name(raw)
    if conn.FIELD in raw and raw.get("count", 1) != 1:
        raise ActionError("a named connection is one connection: 'count' and 'connection' do not go together",
                          field="count")


def from_step(step: Step, ctx: StepContext) -> dict:
    ip = ctx.lab_ip(step.to or "")
    if not ip:
        raise ActionError(f"{step.to} has no lab address in the controller's configuration (hosts)")
    args = {"ip": ip} if ctx.port is None else {"ip": ip, "port": ctx.port}
    return {**args, **count_arg(step), **app_arg(step)}


def unicast_ipv4(value: object) -> bool:
    """``value`` is a unicast IPv4 address written plainly (dotted quad, no leading zero, nothing else)."""
    try:
        addr = ipaddress.IPv4Address(value if isinstance(value, str) else "")
    except ValueError:
        return False
    return str(addr) == value and not (addr.is_unspecified or addr.is_multicast or addr == BROADCAST)


def check(args: dict) -> None:
    if not unicast_ipv4(args["ip"]):
        raise ProtocolError(f"connect ip {args['ip']!r} is not a plain unicast IPv4 address")
    if args.get("app") and args.get("count", 1) != 1:
        raise ProtocolError("connect app (a named connection) opens one connection, not a count")


async def handle(host: ProbeHost, args: dict) -> dict:
    pair = await host.endpoint.connect(args["ip"], args.get("port", host.cfg.port),
                                       lab=(host.cfg.lab_iface, host.cfg.lab_ip), count=args.get("count", 1),
                                       app=args.get("app", False))
    host.remember_nc()
    return {} if pair is None else {"local": pair[0], "remote": pair[1]}


ACTION = Action("connect", handle, args={"ip": Arg(str, required=True), "port": Arg(int, bounds=(1, 65535)),
                                        "count": COUNT, "app": Arg(bool)},
                check=check, from_step=from_step, step_fields=("to", "count", conn.FIELD), check_step=check_step)
