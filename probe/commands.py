"""The probe's commands: a queue taken in order, each command dispatched to its action and answered
by one ``result`` frame (``{"id", "ok", "data"}`` or ``{"id", "ok": False, "error"}``).

A command is checked against its action's arguments (:func:`tcplab.actions.check_command`) before
anything runs, then handed to that action's handler from the one registry (:data:`tcplab.actions.ACTIONS`);
a refused command and a failed action are both answered, never fatal to the probe. Handlers act
through the probe's host interface (:class:`tcplab.actions.ProbeHost`: cfg, shaper, endpoint, emit,
netlink, remember_nc, barrier), so an action's body never reaches into the daemon itself.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import structlog

from tcplab import actions, wire
from tcplab.wire import bodies
from tcplab.actions import ProbeHost

log = structlog.get_logger("probe.commands")

Reply = Callable[[str, dict], Awaitable[None]]


class Commands:
    """The command queue of one probe; :meth:`run` answers each in the order it arrived."""

    def __init__(self, host: ProbeHost, reply: Reply):
        self.host = host
        self.reply = reply
        self.queue: asyncio.Queue[dict] = asyncio.Queue()

    def put(self, body: dict) -> None:
        self.queue.put_nowait(body)

    async def run(self) -> None:
        while True:
            body = await self.queue.get()
            await self.reply("result", fitted(await self.answer(body)))

    async def answer(self, body: dict) -> dict:
        """The result body for one command body."""
        cid = body.get("id") if isinstance(body.get("id"), int) else -1
        try:
            action, args = actions.check_command(body)
            structlog.contextvars.bind_contextvars(action=action, command=cid)
            data = await actions.ACTIONS[action].handle(self.host, args)
            return {"id": cid, "ok": True, "data": data}
        except wire.ProtocolError as e:
            log.warning("command_refused", reason=str(e))
            return {"id": cid, "ok": False, "error": str(e)}
        except Exception as e:  # a failed action is reported to the controller, not fatal
            log.error("command_failed", error=str(e), error_type=type(e).__name__)
            return {"id": cid, "ok": False, "error": f"{type(e).__name__}: {e}"}
        finally:
            structlog.contextvars.unbind_contextvars("action", "command")


def fitted(result: dict) -> dict:
    """``result`` as the controller's decode will take it: an error cut to its bound, and a result
    that still does not fit answered as a failure saying why (not dropped there, unanswered)."""
    if isinstance(result.get("error"), str) and len(result["error"]) > bodies.TEXT:
        result = {**result, "error": result["error"][:bodies.TEXT - 20] + " ... (cut)"}
    try:
        bodies.check_body("result", result)
    except wire.ProtocolError as e:
        log.error("result_does_not_fit", reason=str(e))
        return {"id": result["id"] if bodies.BODIES["result"].checks["id"].ok(result.get("id")) else -1,
                "ok": False, "error": f"the probe's result did not fit the wire: {e}"}
    return result

