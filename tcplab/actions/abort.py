"""abort: the application ends at once with its connections reset (an RST, not a FIN: SO_LINGER 0,
probe/linger.py for nc), what a scenario's abort step asks. With ``reset: false`` it is ended as a
killed process is (its kernel closes its connections in order: a FIN): how the sequencer's cleanup,
the restarted controller's and the dead-man switch end whatever still runs, so that a failed run's
film ends with the application ended, not with resets nobody asked for. The result's ``reset`` says
whether the connections were reset (False: not asked, or the kernel refused to lend nc's socket and
it ended with a FIN; absent: nothing ran). With ``connection`` (tcplab.actions.conn) only that
connection is reset and the application goes on with the others."""

from __future__ import annotations

from tcplab.actions import conn
from tcplab.actions.action import Action, Arg, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    reset = await host.endpoint.abort(reset=args.get("reset", True), conn=conn.pair_of(args))
    return {} if reset is None else {"reset": reset}


#: the arguments that end an application without resetting it (the cleanups')
END = {"reset": False}

ACTION = Action("abort", handle, args={"reset": Arg(bool), conn.ARG: conn.CONN}, check=conn.check_arg,
                from_step=conn.conn_arg, step_fields=(conn.FIELD,), check_step=conn.check_name)
