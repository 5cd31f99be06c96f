"""sync: a barrier. The probe takes one last look (kernel states, sockets, fresh capture counters,
its own counters) and answers only once every event so far is on the wire, so the controller holds
them all when it sees the result. The sequencer sends it after a run; a scenario step cannot.
"""

from __future__ import annotations

from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.barrier()
    return {}


ACTION = Action("sync", handle, in_scenario=False)
