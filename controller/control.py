"""The control server: the ``tcplab`` CLI's ipc socket (``HOME/control/control.sock``, a ROUTER; its
directory 0700 and the socket 0600 whatever the umask, see controller/controlsock.py).

- ``status`` is answered ``state``: every probe the fleet knows (alive, lab address, clock) and
  the run in progress, if any.
- ``run`` (a scenario as a dict, and a delay) goes to the :class:`~controller.runner.ScenarioRunner`;
  its ``progress`` frames and its one ``done`` go back to the CLI that asked. A run that cannot
  start now (another is in progress, the controller is stopping) is answered ``done`` at once.
- ``cancel`` (the CLI's Ctrl-C) cancels the run in progress, if the CLI that sends it is the one
  that asked for it or names its id (``{"run": id}``): the steps stop, every host's nc is ended
  and its shaping cleared, run.json says ``cancelled``; the ``done`` goes to the CLI that asked.
  Anything else is logged and ignored (the run's own ``done`` may be on its way).

A frame that does not follow the wire format is refused (logged) and the server goes on. A reply
that would not fit the wire (a field over its bound in :mod:`tcplab.wire.bodies`, a frame over the
size limit) is cut down until it does (:func:`fitted`: a status lists as many probes as fit and says
how many it left out; a long error is shortened), never an exception out of the server.
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
from tcplab import logs, wire
from tcplab.wire import bodies

log = structlog.get_logger("controller")

CUT_TEXT = 4096  # what is kept of a text that did not fit a reply

CANCELLED_BY_CLI = "run cancelled from the CLI (Ctrl-C)"


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
        self.asked: bytes | None = None  # the CLI whose run is the runner's latest

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
        """One frame to the CLI ``ident``, cut down to fit if it does not (a 1.2 MB status reply
        used to end the controller in ``encode``); one that cannot be made to fit is dropped, logged."""
        try:
            frame = self._frame(type_, body)
        except wire.ProtocolError as e:
            log.warning("control_reply_cut", type=type_, reason=str(e))
            try:
                frame = self._frame(type_, fitted(type_, body, self._fits))
            except wire.ProtocolError as e:
                log.error("control_reply_dropped", type=type_, reason=str(e))
                return
        await self.session.send_frame(self.sock, frame, to=ident)

    def _frame(self, type_: str, body: dict) -> bytes:
        bodies.check_body(type_, body)  # what the CLI's decode will check: refused here, not there
        return self.session.frame(type_, body)

    def _fits(self, type_: str, body: dict) -> bool:
        try:
            bodies.check_body(type_, body)
            wire.encode(wire.make(type_, self.session.host, self.session.seq + 1, body))
        except wire.ProtocolError:
            return False
        return True

    async def serve(self) -> None:
        """Answer the CLI until cancelled."""
        while True:
            parts = await self.sock.recv_multipart()
            ident = parts[0]
            try:
                env = self.session.decode(parts[-1])
            except wire.ProtocolError as e:
                refused = self.session.counters["refused"]
                if logs.sampled(refused):
                    log.warning("control_frame_refused", reason=str(e), refused=refused)
                continue
            if env["type"] == "status":
                await self.reply(ident, "state", {"probes": self.fleet.status(), "running": self.runner.running})
            elif env["type"] == "run":
                refused = self.runner.start(env["body"], partial(self.reply, ident))
                if refused:
                    await self.reply(ident, "done", {"ok": False, "error": refused})
                else:
                    self.asked = ident
            elif env["type"] == "cancel":
                self.cancel(ident, env["body"].get("run"))

    def cancel(self, ident: bytes, run: str | None) -> None:
        mine = ident == self.asked or (run is not None and run == self.runner.running)
        if mine and self.runner.cancel(CANCELLED_BY_CLI):
            log.warning("run_cancel_asked", run=self.runner.running)
        else:
            log.info("run_cancel_ignored", run=run, running=self.runner.running)


def cut(text: str, keep: int = CUT_TEXT) -> str:
    return text if len(text) <= keep else f"{text[:keep]} ... ({len(text) - keep} characters cut)"


def fitted(type_: str, body: dict, fits) -> dict:
    """``body`` cut down until ``fits(type_, body)``: a ``state`` keeps the probes whose entries are
    well formed, as many as fit, and counts the rest in ``omitted``; other replies keep their
    fields that fit, texts shortened to :data:`CUT_TEXT`."""
    if type_ == "state":
        probes = body.get("probes", {})
        spec = bodies.BODIES["state"].checks["probes"].spec[2]  # one probe's entry
        good = [h for h in sorted(probes) if bodies.HOST.ok(h) and spec.ok(probes[h])][:bodies.MAX_PROBES]
        lo, hi = 0, len(good)  # the most probes that fit: at least none
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(type_, {**body, "probes": {h: probes[h] for h in good[:mid]}, "omitted": 0}):
                lo = mid
            else:
                hi = mid - 1
        return {**body, "probes": {h: probes[h] for h in good[:lo]}, "omitted": len(probes) - lo}
    spec = bodies.BODIES.get(type_)
    out = {}
    for key, value in body.items():
        value = cut(value) if isinstance(value, str) else value
        if spec is not None and key in spec.checks and spec.checks[key].ok(value):
            out[key] = value
    return out
