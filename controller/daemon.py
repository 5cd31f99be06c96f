"""The controller daemon: the probes' ROUTER, the CLI's control socket, and one run at a time.

- Probes connect (DEALER, routing id = host name) to ``bind``. A ``hello`` registers a probe
  and is answered ``welcome``; events are acknowledged cumulatively (``ack``); ``result`` frames
  resolve the command that asked for them; ``pong`` frames feed the probe's clock estimate.
- The ``tcplab`` CLI talks to ``ipc://HOME/control.sock``: ``run`` (a scenario as a dict) answered
  by ``progress`` frames and one ``done``; ``status`` answered by ``state``.

Command line::

    tcplab-controller start --config PATH   # daemonize; prints {"changed": bool, "pid": N}
    tcplab-controller stop  --config PATH
    tcplab-controller run   --config PATH   # foreground
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time

import structlog
import zmq
import zmq.asyncio

from controller import config as controller_config
from controller import scenario
from controller.finish import finish_run
from controller.fleet import Fleet
from controller.readiness import cannot_shape
from controller.run import Run, new_run_dir
from controller.sequencer import Sequencer, refusal
from tcplab import logs, pidfile, wire

log = structlog.get_logger("controller")

PINGS = 8           # clock exchanges before a run (and at a probe's hello)
BURST = 512  # frames handled before acks go out and other tasks get a turn
PING_EVERY_S = 0.5  # during a run, a chain of RUN_PINGS exchanges per host this often
RUN_PINGS = 3
PONG_WAIT_S = 0.05


class Controller:
    def __init__(self, cfg: controller_config.ControllerConfig):
        self.cfg = cfg
        self.ctx = zmq.asyncio.Context()
        self.probes = self.ctx.socket(zmq.ROUTER)
        self.probes.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.probes.setsockopt(zmq.LINGER, 500)
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 500)
        self.fleet = Fleet()
        self.seq = 0
        self.ids = itertools.count(1)  # command and ping ids
        self.pending: dict[int, asyncio.Future] = {}
        self._ack_due: set[str] = set()  # probes owed an ack at the end of this burst
        self.pings: dict[int, tuple[str, int]] = {}
        self.answers: dict[int, asyncio.Future] = {}  # ping id -> resolved when its pong is in
        self.run: Run | None = None
        self.run_task: asyncio.Task | None = None
        self.stopping = asyncio.Event()

    # --- sending ------------------------------------------------------------------------------
    def _frame(self, type_: str, body: dict) -> bytes:
        self.seq += 1
        return wire.encode(wire.make(type_, "controller", self.seq, body))

    async def _to_probe(self, host: str, type_: str, body: dict) -> None:
        try:
            await self.probes.send_multipart([host.encode(), self._frame(type_, body)])
        except zmq.ZMQError as e:  # EHOSTUNREACH: no such peer (ROUTER_MANDATORY)
            raise ConnectionError(f"{host} is not connected") from e

    # --- the Bus the sequencer uses -------------------------------------------------------------
    def lab_ip(self, host: str) -> str | None:
        link = self.fleet.probes.get(host)
        return link.lab_ip if link else None

    def lab_port(self, host: str) -> int | None:
        link = self.fleet.probes.get(host)
        return link.hello.get("port") if link else None

    def connected(self, host: str) -> bool:
        link = self.fleet.probes.get(host)
        return bool(link and link.alive)

    async def command(self, host: str, action: str, args: dict, timeout: float) -> dict:
        cid = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[cid] = fut
        try:
            await self._to_probe(host, "command", {"id": cid, "action": action, "args": args})
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer to {action} within {timeout:g} s") from None
        finally:
            self.pending.pop(cid, None)

    async def _ping_chain(self, host: str, n: int) -> None:
        """``n`` clock exchanges, each ping sent as soon as the previous pong is in.

        The first ping of a chain wakes sleeping threads on its way out (zmq's I/O threads, the
        probe's loop) and arrives late: a one-sided delay that biases its offset by ~100 us. The
        rest find every thread awake and travel as fast both ways (~40 us each on ipc); the
        minimum-round-trip filter picks them. T1 is stamped after encoding, right before sending.
        """
        for _ in range(n):
            pid = next(self.ids)
            frame = self._frame("ping", {"id": pid})
            answered = asyncio.get_running_loop().create_future()
            self.answers[pid] = answered
            self.pings[pid] = (host, time.monotonic_ns())
            try:
                await self.probes.send_multipart([host.encode(), frame])
                await asyncio.wait_for(answered, PONG_WAIT_S)
            except zmq.ZMQError as e:
                raise ConnectionError(f"{host} is not connected") from e
            except asyncio.TimeoutError:
                pass
            finally:
                self.answers.pop(pid, None)
                if len(self.pings) > 1000:  # pongs that never came
                    self.pings.clear()

    async def sync_clock(self, host: str) -> None:
        try:
            await self._ping_chain(host, PINGS)
        except ConnectionError as e:
            log.warning("clock_sync_failed", probe=host, error=str(e))

    async def _keep_pinging(self, hosts: tuple[str, ...]) -> None:
        """During a run, a short chain per host every PING_EVERY_S: the estimate follows drift."""
        while True:
            await asyncio.sleep(PING_EVERY_S)
            for host in hosts:
                if self.connected(host):
                    try:
                        await self._ping_chain(host, RUN_PINGS)
                    except ConnectionError:
                        pass

    # --- receiving ----------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        """Frames come in bursts: take what is queued without waiting (up to BURST), then send
        each probe one cumulative ack for the burst rather than one per event."""
        while True:
            msg = await self.probes.recv_multipart()
            for _ in range(BURST):
                await self._on_frame(msg[0], msg[1], time.monotonic_ns())
                try:
                    msg = await self.probes.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
            for host in sorted(self._ack_due):
                link = self.fleet.probes.get(host)
                try:
                    if link is not None:
                        await self._to_probe(host, "ack", {"seq": link.upto})
                except ConnectionError as e:
                    log.warning("probe_gone", probe=host, error=str(e))
            self._ack_due.clear()

    async def _on_frame(self, ident: bytes, frame: bytes, received: int) -> None:
        try:
            env = wire.decode(frame)
            if env["host"] != ident.decode(errors="replace"):
                raise wire.ProtocolError(f"host {env['host']!r} does not match routing id {ident!r}")
        except wire.ProtocolError as e:
            log.warning("frame_refused", peer=ident.decode(errors="replace"), reason=str(e))
            return
        try:
            await self._on_probe(env, received)
        except ConnectionError as e:  # it went away between its frame and our answer
            log.warning("probe_gone", probe=env["host"], error=str(e))

    async def _on_probe(self, env: dict, received: int) -> None:
        host, kind, body = env["host"], env["type"], env["body"]
        if kind == "hello":
            link = self.fleet.hello(host, body)
            log.info("probe_hello", probe=host, lab_ip=link.lab_ip, pid=body.get("pid"))
            await self._to_probe(host, "welcome", {"ack": link.upto})
            asyncio.create_task(self.sync_clock(host))
            return
        link = self.fleet.seen(host)
        if link is None:  # we restarted and it has not said hello yet: it will, after SILENCE_S
            return
        if kind == "event":
            if link.receive(env["seq"]) and self.run is not None:
                await self.run.add_event(host, body, link.clock)
            self._ack_due.add(host)
        elif kind == "heartbeat":
            if isinstance(body.get("oldest"), int):
                link.give_up_below(body["oldest"])
            self._ack_due.add(host)
        elif kind == "result":
            fut = self.pending.get(body.get("id"))
            if fut is not None and not fut.done():
                fut.set_result(body)
        elif kind == "pong":
            sent = self.pings.pop(body.get("id"), None)
            if sent is not None and sent[0] == host:
                rx = body.get("rx_ns")
                link.clock.add(sent[1], env["time"], received, rx if isinstance(rx, int) else None)
            answered = self.answers.get(body.get("id"))
            if answered is not None and not answered.done():
                answered.set_result(None)

    async def _control_loop(self) -> None:
        while True:
            ident, frame = (await self.control.recv_multipart())[:2]
            try:
                env = wire.decode(frame)
            except wire.ProtocolError as e:
                log.warning("control_frame_refused", reason=str(e))
                continue
            if env["type"] == "status":
                await self._reply(ident, "state", {"probes": self.fleet.status(),
                                                   "running": self.run.id if self.run else None})
            elif env["type"] == "run":
                if self.run_task is not None and not self.run_task.done():
                    await self._reply(ident, "done", {"ok": False, "error": f"busy with run {self.run.id}"})
                    continue
                self.run_task = asyncio.create_task(self._run(ident, env["body"]))

    async def _reply(self, ident: bytes, type_: str, body: dict) -> None:
        await self.control.send_multipart([ident, self._frame(type_, body)])

    # --- a run ---------------------------------------------------------------------------------
    async def _run(self, ident: bytes, body: dict) -> None:
        try:
            scn = scenario.parse(body.get("scenario"), source="scenario")
            if body.get("delay") is not None:
                scn = scn.with_delay(float(body["delay"]))
        except (scenario.ScenarioError, TypeError, ValueError) as e:
            await self._reply(ident, "done", {"ok": False, "error": str(e)})
            return
        refused = refusal(scn, self) or cannot_shape(scn, {h: p.hello for h, p in self.fleet.probes.items()})
        if refused:  # before a run directory, a step or a command: nothing has started
            log.warning("run_refused", scenario=scn.name, error=refused)
            await self._reply(ident, "done", {"ok": False, "error": refused})
            return
        for host in scn.hosts:
            if self.connected(host):
                await self.sync_clock(host)
        run_dir = new_run_dir(self.cfg.runs_dir, scn.name)
        self.run = run = Run(run_dir, scn.hosts)
        structlog.contextvars.bind_contextvars(run=run.id)
        log.info("run_started", scenario=scn.name, delay=scn.delay, dir=str(run_dir))

        async def progress(p: dict) -> None:
            await self._reply(ident, "progress", {"run": run.id, **p})

        await progress({"event": "run_started", "dir": str(run_dir), "steps": len(scn.steps)})
        seq = Sequencer(scn, run, self, progress)
        started = time.time()
        ok = False
        pinger = asyncio.create_task(self._keep_pinging(scn.hosts))
        try:
            ok = await seq.execute()
        finally:
            pinger.cancel()
            self.run = None
            path = finish_run(run, scn, seq, ok, started, {h: p.clock for h, p in self.fleet.probes.items()},
                              {h: self.lab_ip(h) for h in scn.hosts})
            log.info("run_finished", ok=ok, error=seq.error, trace=str(path))
            structlog.contextvars.unbind_contextvars("run")
        await self._reply(ident, "done", {"ok": ok, "error": seq.error, "dir": str(run_dir), "run": run.id})

    # --- lifecycle ------------------------------------------------------------------------------
    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.cfg.home.mkdir(parents=True, exist_ok=True)
        self.cfg.control_path.unlink(missing_ok=True)
        self.probes.bind(self.cfg.bind)
        self.control.bind(f"ipc://{self.cfg.control_path}")
        log.info("controller_started", bind=self.cfg.bind, control=str(self.cfg.control_path))
        tasks = [asyncio.create_task(self._probe_loop()), asyncio.create_task(self._control_loop())]
        stop = asyncio.create_task(self.stopping.wait())
        code = 0
        try:
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception():
                    log.error("controller_task_crashed", error=repr(task.exception()))
                    code = 1
        finally:
            log.info("controller_stopping")
            if self.run_task is not None and not self.run_task.done():
                self.run_task.cancel()  # the run's finally still writes its trace and report
                await asyncio.gather(self.run_task, return_exceptions=True)
            for task in (*tasks, stop):
                task.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)
            self.probes.close(linger=500)
            self.control.close(linger=500)
            self.ctx.term()
            self.cfg.control_path.unlink(missing_ok=True)
            log.info("controller_stopped")
        return code


def _serve(cfg: controller_config.ControllerConfig) -> int:
    logs.configure(host="controller", component="controller")
    return asyncio.run(Controller(cfg).serve())


def main(argv: list[str] | None = None) -> int:
    return pidfile.main("tcplab-controller", "controller.daemon", argv, controller_config.load, _serve)


if __name__ == "__main__":
    sys.exit(main())
