"""abort: the probe's nc is killed (the kernel resets an open connection); the sequencer's cleanup too."""

from __future__ import annotations

from tcplab.actions.action import Action, ProbeHost


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.abort()
    return {}


ACTION = Action("abort", handle)
