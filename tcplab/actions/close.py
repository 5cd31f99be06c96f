"""close: the application ends its side of its connections in order (FIN): nc as the seed's user
ends it (Ctrl-C), the probe's application each of its connections and its listener. With
``connection`` (tcplab.actions.conn) only that connection is closed (a FIN) and the application goes
on with the others."""

from __future__ import annotations

from tcplab.actions import conn
from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.close(conn=conn.pair_of(args))
    return {}


ACTION = Action("close", handle, args={conn.ARG: conn.CONN}, check=conn.check_arg, from_step=conn.conn_arg,
                step_fields=(conn.FIELD,), check_step=conn.check_name)
