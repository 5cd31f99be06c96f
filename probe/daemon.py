"""The probe daemon: one per lab host.

Lifecycle (as uvicorn's server): start (sweep what a killed probe left, connect, start the
observers), run (commands in order, events out), stop (signal handlers only set a flag; stop
taking commands, clear shaping, end nc, stop capture, drain unacknowledged events with a
timeout, close the socket with a linger).

It executes the fixed set of actions in :data:`tcplab.wire.ACTIONS` and nothing else.

Command line::

    tcplab-probe start --config PATH   # daemonize; prints {"changed": bool, "pid": N}
    tcplab-probe stop  --config PATH   # prints {"changed": bool}
    tcplab-probe run   --config PATH   # foreground
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import structlog

from probe import config as probe_config
from probe import readiness
from tcplab import logs, pidfile, wire
from probe.capture import Capture
from probe.commands import Commands
from probe.endpoint import Endpoint
from probe.endpoint import sweep as sweep_endpoints
from probe.kstates import KernelStates, KStatesError
from probe.shaper import Shaper
from probe.shaper import sweep as sweep_shaping
from probe.sockets import SocketWatcher
from probe.statemerge import StateMerger
from probe.transport import Transport

log = structlog.get_logger("probe")

NETSTAT_EVERY_S = 1.0
DRAIN_S = 3.0


class Probe:
    def __init__(self, cfg: probe_config.ProbeConfig):
        self.cfg = cfg
        self.stopping = asyncio.Event()
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.shaper = Shaper(ifname=cfg.lab_iface, port=cfg.port, backend=cfg.shaper_backend)
        self.watcher = SocketWatcher(cfg.port)
        self.endpoint = Endpoint(on_console=self._console, nc=cfg.nc, pid_dir=cfg.home)
        self.capture: Capture | None = None
        # States: the tracepoint (exact kernel times) merged with inet_diag (what it cannot see);
        # without tracefs the merger passes inet_diag's changes through at once.
        self.kstates: KernelStates | None = None
        self.merger = StateMerger(hold_ns=0)
        self._nc_pids: set[int] = set()
        self.transport = Transport(cfg.controller, cfg.host, hello={
            "lab_ip": cfg.lab_ip, "port": cfg.port, "iface": cfg.lab_iface, "pid": os.getpid(),
            "actions": sorted(wire.ACTIONS), "observers": ["inet_diag", "capture", "console"],
        })
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats_arrived = asyncio.Event()
        # pyroute2's synchronous classes run an event loop of their own and refuse to run in a
        # thread whose loop is running: every shaper call goes to this one worker thread.
        self.commands = Commands(self, self.transport.send)
        self._netlink = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tcplab-netlink")

    async def netlink(self, fn, /, *args, **kwargs):
        ctx = contextvars.copy_context()  # keep the bound log context (host, action) in the worker
        return await asyncio.get_running_loop().run_in_executor(self._netlink, partial(ctx.run, fn, *args, **kwargs))

    # --- events -----------------------------------------------------------------------------
    def emit(self, body: dict) -> None:
        body.setdefault("t_ns", time.monotonic_ns())
        self.events.put_nowait(body)

    def _console(self, text: str, stream: str) -> None:
        self.emit({"kind": "console", "text": text, "stream": stream})

    def _packets(self, batch: list[dict]) -> None:  # called from the capture thread
        # One hand-over per batch (up to 256): a wake-up per packet costs more than decoding it.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put_all, batch)

    def _put_all(self, batch: list[dict]) -> None:
        for body in batch:
            self.events.put_nowait(body)
            if body["dir"] == "in" and "FIN" in body["flags"]:  # dates an orphan's TIME_WAIT (statemerge rule 6)
                self.merger.add_fin(body["dst"], body["src"], body["t_ns"])

    def _capture_stats(self, stats: dict) -> None:  # the kernel's counters, once a second
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put_stats, stats)

    def _put_stats(self, stats: dict) -> None:
        self.events.put_nowait(stats)
        self._stats_arrived.set()

    async def _send_events(self) -> None:
        while True:
            body = await self.events.get()
            try:
                await self.transport.event(body)
            finally:
                self.events.task_done()

    async def _watch_sockets(self) -> None:
        period = 1.0 / self.cfg.poll_hz
        last_rows_key: object = None
        last_rows_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            changes, rows = self.watcher.poll()
            self._merge_poll(changes)
            # A row "changes" when anything but its countdown changes; a pane is sent at least once a second.
            key = [(r["local"], r["foreign"], r["state"], r["recv_q"], r["send_q"], r["timer"].split(" ")[0])
                   for r in rows]
            now = loop.time()
            if key != last_rows_key or now - last_rows_at >= NETSTAT_EVERY_S:
                self.emit({"kind": "netstat", "rows": rows})
                last_rows_key, last_rows_at = key, now
            await asyncio.sleep(period)

    def _merge_poll(self, changes: list[dict], force: bool = False) -> None:
        now = time.monotonic_ns()
        self.merger.add_poll(changes[0]["t_ns"] if changes else now, changes, self.watcher.last_dump_ns)
        for rec in self.merger.flush(now, force=force):
            self.emit(rec)

    def remember_nc(self) -> None:  # its listener's last event may be read after the next nc started
        if self.endpoint.pid:
            self._nc_pids.add(self.endpoint.pid)

    def _owned_pids(self) -> set[int]:  # called from the tracefs reader thread
        pid = self.endpoint.pid
        return self._nc_pids | {pid} if pid else self._nc_pids

    def _kernel_events(self, events: list[dict]) -> None:
        for ev in events:
            (self.merger.add_tracepoint if ev["kind"] == "tracepoint" else self.merger.add_kernel)(ev)

    async def _read_kstates(self) -> None:
        assert self.kstates is not None
        while True:
            self._kernel_events(await asyncio.to_thread(self.kstates.read, 0.1))

    def _open_kstates(self) -> None:
        try:
            self.kstates = KernelStates(self.cfg.host, self.cfg.port, self.cfg.lab_ip, self._owned_pids).open()
        except KStatesError as e:
            log.warning("tracefs_unavailable", error=str(e), fallback="inet_diag")
            return
        self.merger = StateMerger()
        self.transport.hello_body["observers"].insert(1, "tracefs")

    # --- commands (probe/commands.py) -------------------------------------------------------
    async def _receive(self) -> None:
        while True:
            env = await self.transport.recv()
            rx_ns = time.monotonic_ns()  # NTP's T2; the pong's envelope time is T3 (controller/clock.py)
            kind = env["type"]
            if kind == "command":
                self.commands.put(env["body"])
            elif kind == "ping":
                await self.transport.send("pong", {"id": env["body"].get("id"), "t0": env["time"], "rx_ns": rx_ns})

    async def barrier(self) -> None:
        """The sync action: one last look at the states, fresh capture stats and the counters, then
        every event so far is on the wire before the result, so the controller has them all."""
        if self.kstates is not None:
            self._kernel_events(await asyncio.to_thread(self.kstates.read, 0))
        changes, _ = self.watcher.poll()
        self._merge_poll(changes, force=True)
        if self.capture is not None:  # fresh kernel counters, after the packets handed over so far
            self._stats_arrived.clear()
            self.capture.request_stats()
            try:
                await asyncio.wait_for(self._stats_arrived.wait(), 1.0)
            except asyncio.TimeoutError:
                log.warning("capture_stats_late")
        self.emit({"kind": "counters", "counters": self.counters()})
        await self.events.join()

    def counters(self) -> dict[str, int]:
        """What the probe dropped or missed so far: the evidence of a trace's completeness."""
        return {"statemerge_dropped_foreign": self.merger.dropped_foreign,
                "statemerge_dropped_unresolved": self.merger.dropped_unresolved,
                "kstates_missed_pages": self.kstates.missed_pages if self.kstates is not None else 0,
                "transport_dropped": self.transport.dropped}

    # --- lifecycle --------------------------------------------------------------------------
    def _write_status(self, text: str) -> None:
        tmp = self.cfg.status_path.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(self.cfg.status_path)

    async def _report_status(self) -> None:
        while True:
            await self.transport.welcomed.wait()
            self._write_status(f"connected {self.cfg.controller}")
            while self.transport.welcomed.is_set():
                await asyncio.sleep(0.2)
            self._write_status(f"connecting {self.cfg.controller}")

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.stopping.set)
        self.cfg.home.mkdir(parents=True, exist_ok=True)
        self._write_status(f"connecting {self.cfg.controller}")
        removed = await self.netlink(sweep_shaping, ifname=self.cfg.lab_iface, port=self.cfg.port)
        removed += [f"nc pid {p}" for p in sweep_endpoints(self.cfg.home)]
        if removed:
            log.warning("leftovers_swept", removed=removed)
        self.capture = Capture(self.cfg.lab_iface, self.cfg.port, self.cfg.lab_ip, None,
                               on_packets=self._packets, on_stats=self._capture_stats)
        await asyncio.to_thread(self.capture.start)
        await asyncio.to_thread(self._open_kstates)
        # which backend will shape, or why none can: in the hello, so the controller refuses the run first
        self.transport.hello_body["shaping"] = await asyncio.to_thread(
            readiness.check, self.cfg.port, self.cfg.shaper_backend)
        self.transport.connect()
        await self.transport.hello()
        tasks = [asyncio.create_task(c) for c in (
            self._receive(), self.commands.run(), self._watch_sockets(), self._report_status())]
        if self.kstates is not None:
            tasks.append(asyncio.create_task(self._read_kstates()))
        sender = asyncio.create_task(self._send_events())
        keepalive = asyncio.create_task(self.transport.keepalive())
        log.info("probe_started", host=self.cfg.host, controller=self.cfg.controller, port=self.cfg.port)
        code = 0
        try:
            done, _ = await asyncio.wait([asyncio.create_task(self.stopping.wait()), *tasks, sender, keepalive],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() if not task.cancelled() else None:
                    log.error("probe_task_crashed", error=repr(task.exception()))
                    code = 1
        finally:
            log.info("probe_stopping")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()
            # Events produced during shutdown still go out; then wait for the acks, bounded.
            while not self.events.empty() and not sender.done():
                await asyncio.sleep(0.01)
            await self.transport.drain(DRAIN_S)
            sender.cancel()
            keepalive.cancel()
            await asyncio.gather(sender, keepalive, return_exceptions=True)
            self.transport.close()
            try:
                self.cfg.status_path.unlink()
            except FileNotFoundError:
                pass
            self._netlink.shutdown(wait=False)
            log.info("probe_stopped", unacked=len(self.transport.unacked), dropped=self.transport.dropped)
        return code

    async def _close_kstates(self) -> None:
        if self.kstates is not None:
            self._kernel_events(await asyncio.to_thread(self.kstates.read, 0))
            await asyncio.to_thread(self.kstates.close)
        changes, _ = self.watcher.poll()
        self._merge_poll(changes, force=True)

    async def _shutdown(self) -> None:
        steps = (("shaper", lambda: self.netlink(self.shaper.clear)),
                 ("endpoint", self.endpoint.abort),
                 ("capture", lambda: asyncio.to_thread(self.capture.stop) if self.capture else asyncio.sleep(0)),
                 ("kstates", self._close_kstates))
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), timeout=5)
            except Exception as e:
                log.error("shutdown_step_failed", step=name, error=repr(e))


def _serve(cfg: probe_config.ProbeConfig) -> int:
    logs.configure(host=cfg.host, component="probe")
    return asyncio.run(Probe(cfg).run())


def main(argv: list[str] | None = None) -> int:
    return pidfile.main("tcplab-probe", "probe.daemon", argv, probe_config.load, _serve,
                        prepare=lambda cfg: cfg.home.mkdir(parents=True, exist_ok=True))


if __name__ == "__main__":
    sys.exit(main())
