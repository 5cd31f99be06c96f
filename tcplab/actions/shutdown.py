"""shutdown: half-close. The application shuts the sending side of its connection (shutdown(2)
with SHUT_WR): its kernel sends a FIN (FIN_WAIT1, then FIN_WAIT2 once it is acknowledged) while the
application goes on reading; the peer sees end-of-file but may still send, and what it sends is
printed here (RFC 9293 3.6: a connection closed in one direction only). For nc, which has no such
call, the probe shuts nc's own socket from outside (probe/linger.py); the probe's application for
many connections shuts each of them, or the one named (``connection``, tcplab.actions.conn)."""

from __future__ import annotations

from tcplab.actions import conn
from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.shutdown(conn=conn.pair_of(args))
    return {}


ACTION = Action("shutdown", handle, args={conn.ARG: conn.CONN}, check=conn.check_arg, from_step=conn.conn_arg,
                step_fields=(conn.FIELD,), check_step=conn.check_name)
