"""A named connection: what lets a step act on one connection of several on a host.

In a scenario, a ``connect`` with ``connection: NAME`` opens one connection and names it; a later
``send``, ``read``, ``shutdown``, ``keepalive``, ``close`` or ``abort`` with ``connection: NAME`` acts
on that connection alone, on either of its ends (the connecting host's, or the one it connected
to), and an expectation ending in `` on NAME`` counts only that connection's records. Without a
``connection`` a step acts on all of its host's connections, as before, and a ``close`` or an
``abort`` ends the host's application.

A name is the controller's: the probe knows a connection by its address pair. A named connect runs
the probe's own application (``app``: nc makes one connection per process), whose result reports
the new connection's ``local`` and ``remote`` (the kernel chose the port at ``connect()``, before
the handshake); the controller keeps the pair for both ends (controller.run: ``Run.pair``) and
hands each later step's command the pair as its host sees it: ``conn: [local, remote]``.
"""

from __future__ import annotations

import re
from typing import Mapping

from tcplab.actions.action import ActionError, Arg, Step, StepContext
from tcplab.wire import HOST_RE, ProtocolError

FIELD = "connection"    # the step field
ARG = "conn"            # the wire argument: [local, remote], "IP:PORT" each
CONN = Arg(list)
COUNT_LIKE = re.compile(r"^x[0-9]+$")  # `` on x2`` would read as a count
PAIR_ADDR = re.compile(r"^(?:25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})(?:\.(?:25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})){3}"
                       r":(?:[1-9][0-9]{0,4})$")


def check_name(raw: Mapping) -> None:
    """A step's ``connection``, when it has one, is a simple word (a host name's letters)."""
    name = raw.get(FIELD)
    if FIELD in raw and (not isinstance(name, str) or not HOST_RE.match(name) or COUNT_LIKE.match(name)):
        raise ActionError(f"'connection' must name a connection, a simple word (letters, digits, - _ .) that "
                          f"is not x and digits (an expectation's count), got {name!r}", field=FIELD)


def check_arg(args: dict) -> None:
    """The wire's ``conn``: two IPv4 ``IP:PORT`` addresses, the host's local one first."""
    pair = args.get(ARG)
    if ARG in args and (len(pair) != 2 or not all(isinstance(a, str) and PAIR_ADDR.match(a) and
                                                   int(a.rsplit(":", 1)[1]) < 65536 for a in pair)):
        raise ProtocolError(f"{ARG} must be [local, remote], each IPv4 address:port, got {pair!r}")


def conn_arg(step: Step, ctx: StepContext) -> dict:
    """The step's connection as its host sees it, for the command (``{}`` for a step without one)."""
    name = step.connection
    if name is None:
        return {}
    host = step.hosts[0]
    pair = ctx.pair(name, host)
    if pair is None:
        raise ActionError(f"connection {name} has no address pair on {host} (its connect reported none)")
    return {ARG: list(pair)}


def pair_of(args: dict) -> tuple[str, str] | None:
    """The command's connection, for the probe's application (None: every connection)."""
    pair = args.get(ARG)
    return (pair[0], pair[1]) if pair else None
