"""close: the probe's nc ends its side of the connection in order (FIN), as when stdin closes."""

from __future__ import annotations

from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.close()
    return {}


ACTION = Action("close", handle)
