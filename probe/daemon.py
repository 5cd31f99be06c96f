"""The probe daemon: one per lab host, a small composition.

- :class:`~probe.lifecycle.Lifecycle` (uvicorn's shape): ``startup`` first sweeps what a killed probe
  left (:mod:`probe.leftovers`; a ``sweep`` event says what), opens the observers, says in the
  hello what it can do and connects; ``main_loop`` waits for a
  signal; ``shutdown`` stops taking commands, clears shaping, ends nc, stops the capture, drains the
  unacknowledged events with a timeout and closes the socket with a linger. A second signal forces
  the exit (no more waiting, the cleanups still run).
- :class:`~probe.observers.Observers`: sockets, kernel states, packets, netstat panes -> events.
- :class:`~probe.link.Link`: events out in order, commands and pings in.
- :class:`~probe.commands.Commands`: the command queue; each action acts through this class's
  ``ProbeHost`` side (``cfg``, ``shaper``, ``endpoint``, ``emit``, ``netlink``, ``remember_nc``,
  ``barrier``), nothing else of the daemon.
- :class:`~probe.link.StatusFile`: ``connecting`` / ``connected``, for Ansible and the tests.
- :class:`~probe.deadman.DeadMan`: a controller silent for ``DEADMAN_S`` while the probe shapes or
  runs nc -> the probe clears the shaping and ends nc itself (:meth:`Probe.disarm`), and says so.

Command line::

    tcplab-probe start --config PATH   # daemonize; prints {"changed": bool, "pid": N}
    tcplab-probe stop  --config PATH   # prints {"changed": bool}
    tcplab-probe run   --config PATH   # foreground
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import structlog

from probe import config as probe_config
from probe import readiness
from probe import leftovers
from probe.commands import Commands
from probe.deadman import DeadMan
from probe.endpoint import Endpoint
from probe.endpoints import Endpoints
from probe.lifecycle import Lifecycle
from probe.link import Link, StatusFile
from probe.observers import Observers
from probe.shaper import Shaper
from probe.sysctls import Sysctls
from probe.sockapp import SocketApp
from probe.transport import Transport
from tcplab import logs, pidfile
from tcplab.actions import ACTIONS
from tcplab.actions import abort as abort_action
from tcplab.actions import sysctl as sysctl_action

log = structlog.get_logger("probe")

STEP_S = 5.0   # each cleanup step of the shutdown
DRAIN_S = 3.0  # the unacknowledged events, at the end
WORK = ("deadman", "commands", "sockets", "kstates", "status")  # stopped first; the link's tasks last


class Probe(Lifecycle):
    def __init__(self, cfg: probe_config.ProbeConfig):
        super().__init__()
        self.cfg = cfg
        self.shaper = Shaper(ifname=cfg.lab_iface, port=cfg.port, backend=cfg.shaper_backend)
        self.sysctls = Sysctls(cfg.home)
        self.endpoint = Endpoints(Endpoint(on_console=self._console, nc=cfg.nc, pid_dir=cfg.home),
                                  SocketApp(on_console=self._console))
        self.transport = Transport(cfg.controller, cfg.host, hello={
            "lab_ip": cfg.lab_ip, "port": cfg.port, "iface": cfg.lab_iface, "pid": os.getpid(),
            "actions": sorted(ACTIONS)}, curve=cfg.curve, spill_dir=cfg.spill_dir)
        self.commands = Commands(self, self.transport.send)
        self.link = Link(self.transport, self.commands.put)
        self.observers = Observers(cfg.host, cfg.port, cfg.lab_ip, cfg.lab_iface, self.emit,
                                   current_pid=lambda: self.endpoint.pid)
        self.status = StatusFile(cfg.status_path, cfg.controller)
        self.deadman = DeadMan(lambda: self.transport.last_heard, self.armed, self.disarm, self.emit)
        self.connected = False
        # pyroute2's synchronous classes run an event loop of their own and refuse to run in a
        # thread whose loop is running: every shaper call goes to this one worker thread.
        self._netlink = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tcplab-netlink")

    # --- what an action may use (tcplab.actions' ProbeHost) ---------------------------------
    def emit(self, body: dict) -> None:
        self.link.emit(body)

    async def netlink(self, fn, /, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the netlink worker thread, with the bound log context."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._netlink, partial(ctx.run, fn, *args, **kwargs))

    def remember_nc(self) -> None:
        self.observers.remember_nc()

    async def barrier(self) -> None:
        """The sync action: one last look at the states, fresh capture stats, the counters, then
        every event so far on the wire before the result, so the controller has them all."""
        await self.observers.settle()
        await self.observers.fresh_capture_stats()
        self.emit({"kind": "counters", "counters": self.counters()})
        await self.link.flush()

    def counters(self) -> dict[str, int]:
        """What the probe dropped, missed or refused so far (the evidence of a trace's completeness),
        flat: the state observers' and the link's (``transport_dropped``, ``transport_refused`` ...)."""
        link = {f"transport_{k}": int(v) for k, v in self.transport.counters.items()}
        return {**self.observers.counters(), **link}

    # --- the dead-man switch ----------------------------------------------------------------
    def armed(self) -> bool:
        """Something a silent controller would leave on the host: shaping, a running nc, or TCP
        knobs the run changed."""
        return self.shaper.backend is not None or self.endpoint.running or bool(self.sysctls.saved)

    async def disarm(self) -> list[str]:
        """Clear the shaping and end nc, as the controller's ``shape clear`` and ``abort`` would
        (the same handlers: the trace gets the same shaper record); what was undone. A step that
        fails is logged and the other still runs."""
        steps = []
        if self.shaper.backend is not None:
            steps.append((f"shaping {self.shaper.backend} on {self.cfg.lab_iface} port {self.cfg.port}",
                          "shape", {"clear": True}))
        if self.endpoint.running:
            steps.append((self.endpoint.describe(), "abort", dict(abort_action.END)))
        if self.sysctls.saved:
            steps.append((f"sysctls {', '.join(sorted(self.sysctls.saved))}", "sysctl", dict(sysctl_action.RESTORE)))
        cleared = []
        for what, action, args in steps:
            try:
                await ACTIONS[action].handle(self, args)
                cleared.append(what)
            except Exception as e:
                log.error("disarm_step_failed", step=what, error=repr(e))
        return cleared

    def _console(self, text: str, stream: str, local: str | None = None, remote: str | None = None) -> None:
        body = {"kind": "console", "text": text, "stream": stream}
        if local is not None:  # the probe's application: which of its connections printed it
            body.update(local=local, remote=remote)
        self.emit(body)

    # --- lifecycle --------------------------------------------------------------------------
    async def startup(self) -> None:
        self.cfg.home.mkdir(parents=True, exist_ok=True)
        removed = await leftovers.sweep(self.netlink, self.cfg.host, self.cfg.lab_iface, self.cfg.port, self.cfg.home)
        if removed:  # kept until a controller acknowledges it, like every event
            self.emit(leftovers.event(removed))
        self.status.write("connecting")
        await self.observers.open()
        hello = self.transport.hello_body
        hello["observers"] = self.observers.names
        # which backend will shape, or why none can: in the hello, so the controller refuses the run first
        hello["shaping"] = await asyncio.to_thread(readiness.check, self.cfg.port, self.cfg.shaper_backend)
        self.transport.connect()
        self.connected = True
        await self.transport.hello()
        self.spawn(self.link.receive(), "receive")
        self.spawn(self.link.send_events(), "sender")
        self.spawn(self.transport.keepalive(), "keepalive")
        self.spawn(self.commands.run(), "commands")
        self.spawn(self.deadman.watch(), "deadman")
        self.spawn(self.observers.watch_sockets(self.cfg.poll_hz), "sockets")
        self.spawn(self.status.follow(self.transport.welcomed), "status")
        if self.observers.kstates is not None:
            self.spawn(self.observers.read_kstates(), "kstates")
        log.info("probe_started", host=self.cfg.host, controller=self.cfg.controller, port=self.cfg.port)

    async def shutdown(self) -> None:
        log.info("probe_stopping", forced=self.force_exit.is_set())
        self.link.accepting = False
        await self.stop_tasks(WORK)
        await self.bounded(self.netlink(self.shaper.clear), STEP_S, "shaper")
        await self.bounded(self.endpoint.abort(reset=False), STEP_S, "endpoint")
        await self.bounded(asyncio.to_thread(self.sysctls.restore), STEP_S, "sysctls")
        await self.bounded(self.observers.stop_capture(), STEP_S, "capture")
        await self.bounded(self.observers.close_kstates(), STEP_S, "kstates")
        # events made while stopping still go out; then the acks, bounded, and not at all once forced
        if self.connected:
            await self.bounded(self.link.drain(DRAIN_S), DRAIN_S + 1, "drain", forced_s=0)
        await self.stop_tasks()
        self.transport.close()
        self.status.remove()
        self._netlink.shutdown(wait=False)
        log.info("probe_stopped", unacked=len(self.transport.unacked), dropped=self.transport.dropped,
                 forced=self.force_exit.is_set())


def _serve(cfg: probe_config.ProbeConfig) -> int:
    logs.configure(host=cfg.host, component="probe")
    return asyncio.run(Probe(cfg).serve())


def main(argv: list[str] | None = None) -> int:
    return pidfile.main("tcplab-probe", "probe.daemon", argv, probe_config.load, _serve,
                        prepare=lambda cfg: cfg.home.mkdir(parents=True, exist_ok=True))


if __name__ == "__main__":
    sys.exit(main())
