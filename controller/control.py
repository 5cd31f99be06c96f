"""The control server: the ``tcplab`` CLI's ipc socket (``HOME/control/control.sock``, a ROUTER; its
directory 0700 and the socket 0600 whatever the umask, see controller/controlsock.py).

- ``status`` is answered ``state``: every probe the fleet knows (alive, lab address, clock) and
  the run in progress, if any.
- ``run`` (a scenario as a dict, and a delay) goes to the :class:`~controller.runner.ScenarioRunner`;
  its ``progress`` frames and its one ``done`` go back to the CLI that asked. A run that cannot
  start now (another is in progress, the controller is stopping) is answered ``done`` at once.

A frame that does not follow the wire format is refused (logged) and the server goes on.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import structlog
import zmq
import zmq.asyncio

from controller import controlsock
from controller.fleet import Fleet
from controller.runner import ScenarioRunner
from tcplab import wire

log = structlog.get_logger("controller")


class ControlServer:
    def __init__(self, ctx: zmq.asyncio.Context, path: Path, fleet: Fleet, runner: ScenarioRunner):
        self.path = path
        self.endpoint = f"ipc://{path}"
        self.bound = False
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 500)
        wire.limit(self.sock)
        self.session = wire.Session("controller")
        self.fleet = fleet
        self.runner = runner

    def bind(self) -> None:
        controlsock.prepare(self.path)  # a 0700 directory of ours; a socket a killed controller left goes
        self.sock.bind(self.endpoint)
        controlsock.secure(self.path)
        self.bound = True

    def close(self, linger_ms: int = 500) -> None:
        self.sock.close(linger=linger_ms)
        if self.bound:  # not another controller's, when this one could not start
            self.path.unlink(missing_ok=True)

    async def reply(self, ident: bytes, type_: str, body: dict) -> None:
        await self.session.send(self.sock, type_, body, to=ident)

    async def serve(self) -> None:
        """Answer the CLI until cancelled."""
        while True:
            parts = await self.sock.recv_multipart()
            ident = parts[0]
            try:
                env = self.session.decode(parts[-1])
            except wire.ProtocolError as e:
                log.warning("control_frame_refused", reason=str(e))
                continue
            if env["type"] == "status":
                await self.reply(ident, "state", {"probes": self.fleet.status(), "running": self.runner.running})
            elif env["type"] == "run":
                refused = self.runner.start(env["body"], partial(self.reply, ident))
                if refused:
                    await self.reply(ident, "done", {"ok": False, "error": refused})
