"""listen: the probe's nc listens on the lab port (its configuration's, the port it shapes and captures)."""

from __future__ import annotations

from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.listen(host.cfg.port)
    host.remember_nc()
    return {}


ACTION = Action("listen", handle)
