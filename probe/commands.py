"""The probe's commands: a queue taken in order, each command dispatched to its action and answered
by one ``result`` frame (``{"id", "ok", "data"}`` or ``{"id", "ok": False, "error"}``).

A command is checked by the wire (:func:`tcplab.wire.check_command`) before anything runs; a refused
command and a failed action are both answered, never fatal to the probe. The actions act through
the probe's host interface (``ProbeHost``: cfg, shaper, endpoint, emit, netlink, remember_nc,
barrier), so an action's body never reaches into the daemon itself.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import structlog

from tcplab import wire

log = structlog.get_logger("probe.commands")

Reply = Callable[[str, dict], Awaitable[None]]


class Commands:
    """The command queue of one probe; :meth:`run` answers each in the order it arrived."""

    def __init__(self, host: Any, reply: Reply):
        self.host = host
        self.reply = reply
        self.queue: asyncio.Queue[dict] = asyncio.Queue()

    def put(self, body: dict) -> None:
        self.queue.put_nowait(body)

    async def run(self) -> None:
        while True:
            body = await self.queue.get()
            await self.reply("result", await self.answer(body))

    async def answer(self, body: dict) -> dict:
        """The result body for one command body."""
        cid = body.get("id") if isinstance(body.get("id"), int) else -1
        try:
            action, args = wire.check_command(body)
            structlog.contextvars.bind_contextvars(action=action, command=cid)
            data = await execute(self.host, action, args)
            return {"id": cid, "ok": True, "data": data}
        except wire.ProtocolError as e:
            log.warning("command_refused", reason=str(e))
            return {"id": cid, "ok": False, "error": str(e)}
        except Exception as e:  # a failed action is reported to the controller, not fatal
            log.error("command_failed", error=str(e), error_type=type(e).__name__)
            return {"id": cid, "ok": False, "error": f"{type(e).__name__}: {e}"}
        finally:
            structlog.contextvars.unbind_contextvars("action", "command")


async def execute(host: Any, action: str, args: dict) -> dict:
    """Run one checked action on ``host`` (a ProbeHost); its result's ``data``."""
    if action == "shape":
        if args.get("clear"):
            was = host.shaper.backend
            counters = await host.netlink(host.shaper.clear)
            host.emit({"kind": "shaper", "backend": None, "delay_ms": 0, "loss_pct": 0,
                       "cleared": was, "counters": counters})
            return {"backend": None}
        delay_ms, loss = int(round(args.get("delay_ms", 0))), args.get("loss_pct", 0)
        backend = await host.netlink(host.shaper.apply, delay_ms=delay_ms, loss_pct=loss)
        host.emit({"kind": "shaper", "backend": backend, "delay_ms": delay_ms, "loss_pct": loss})
        return {"backend": backend}
    if action == "listen":
        await host.endpoint.listen(host.cfg.port)
        host.remember_nc()
    elif action == "connect":
        await host.endpoint.connect(args["ip"], args.get("port", host.cfg.port))
        host.remember_nc()
    elif action == "send":
        await host.endpoint.send(args["text"])
    elif action == "close":
        await host.endpoint.close()
    elif action == "abort":
        await host.endpoint.abort()
    elif action == "sync":
        await host.barrier()
    return {}
