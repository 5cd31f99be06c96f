"""abort: the application ends at once with its connections reset (an RST, not a FIN: SO_LINGER 0,
probe/linger.py for nc); the sequencer's cleanup and the dead-man switch end a host's application
this way too. The result's ``reset`` says whether the connections could be reset (False: the
kernel refused to lend nc's socket, and it ended with a FIN; absent: nothing ran)."""

from __future__ import annotations

from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    reset = await host.endpoint.abort()
    return {} if reset is None else {"reset": reset}


ACTION = Action("abort", handle)
