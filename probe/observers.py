"""What the probe sees on the lab port, turned into events: socket states, netstat panes, packets.

- **States**: the TCP tracepoint (:mod:`probe.kstates`, exact kernel times) merged with inet_diag
  dumps (:mod:`probe.sockets`, what the tracepoint cannot see) by :class:`~probe.statemerge.StateMerger`.
  Without tracefs the merger passes inet_diag's changes through at once (``hold_ns=0``).
- **Netstat panes**: the socket rows of each dump, sent when they change (:class:`NetstatPane`) and
  at least once a second, so a viewer's countdowns stay fresh.
- **Packets** (:mod:`probe.capture`): handed over from the capture thread one batch at a time; an
  incoming FIN also dates an orphan's TIME_WAIT for the merger (statemerge rule 6). The capture's
  kernel counters arrive once a second, or at once on :meth:`Observers.fresh_capture_stats`.

The observers only produce events (through ``emit``); sending them is the probe's link.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from probe.capture import Capture
from probe.kstates import KernelStates, KStatesError
from probe.sockets import SocketWatcher
from probe.statemerge import StateMerger

log = structlog.get_logger("probe.observers")

NETSTAT_EVERY_S = 1.0
STATS_WAIT_S = 1.0
Emit = Callable[[dict], None]


class NetstatPane:
    """When the socket rows are worth another ``netstat`` event."""

    def __init__(self, every_s: float = NETSTAT_EVERY_S):
        self.every_s = every_s
        self._key: object = None
        self._at = 0.0

    @staticmethod
    def key(rows: list[dict]) -> list[tuple]:
        """A row "changes" when anything but its timer's countdown changes."""
        return [(r["local"], r["foreign"], r["state"], r["recv_q"], r["send_q"], r["timer"].split(" ")[0])
                for r in rows]

    def due(self, rows: list[dict], now_s: float) -> bool:
        """True (and remembered as sent) when the rows changed or ``every_s`` passed since the last."""
        key = self.key(rows)
        if key == self._key and now_s - self._at < self.every_s:
            return False
        self._key, self._at = key, now_s
        return True


class Observers:
    """The sockets, kernel states and capture of one probe; ``emit`` takes every event they make."""

    def __init__(self, host: str, port: int, lab_ip: str, iface: str, emit: Emit,
                 current_pid: Callable[[], int | None]):
        self.host, self.port, self.lab_ip, self.iface = host, port, lab_ip, iface
        self.emit = emit
        self.current_pid = current_pid  # the nc running now (the tracepoint's owner filter)
        self.watcher = SocketWatcher(port)
        self.pane = NetstatPane()
        self.merger = StateMerger(hold_ns=0)
        self.kstates: KernelStates | None = None
        self.capture: Capture | None = None
        self._nc_pids: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats_arrived = asyncio.Event()

    @property
    def names(self) -> list[str]:
        """What observes, for the hello."""
        return ["inet_diag", "capture", "console"] if self.kstates is None else \
            ["inet_diag", "tracefs", "capture", "console"]

    # --- opening and closing ----------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.capture = Capture(self.iface, self.port, self.lab_ip, on_packets=self._packets,
                               on_stats=self._capture_stats)
        await asyncio.to_thread(self.capture.start)
        await asyncio.to_thread(self._open_kstates)

    def _open_kstates(self) -> None:
        try:
            self.kstates = KernelStates(self.host, self.port, self.lab_ip, self._owned_pids).open()
        except KStatesError as e:
            log.warning("tracefs_unavailable", error=str(e), fallback="inet_diag")
            return
        self.merger = StateMerger()

    async def stop_capture(self) -> None:
        if self.capture is not None:
            await asyncio.to_thread(self.capture.stop)

    async def close_kstates(self) -> None:
        """The tracepoint's last records, then one last dump, everything held flushed."""
        if self.kstates is not None:
            self._kernel_events(await asyncio.to_thread(self.kstates.read, 0))
            await asyncio.to_thread(self.kstates.close)
        self.poll(force=True)

    # --- the owner filter -------------------------------------------------------------------
    def remember_nc(self) -> None:
        """Keep the running nc's pid: its listener's last event may be read after the next nc started."""
        pid = self.current_pid()
        if pid:
            self._nc_pids.add(pid)

    def _owned_pids(self) -> set[int]:  # called from the tracefs reader thread
        pid = self.current_pid()
        return self._nc_pids | {pid} if pid else self._nc_pids

    # --- states -----------------------------------------------------------------------------
    def poll(self, force: bool = False) -> list[dict]:
        """One inet_diag dump into the merger; what the merger lets out is emitted. The rows."""
        changes, rows = self.watcher.poll()
        now = time.monotonic_ns()
        self.merger.add_poll(changes[0]["t_ns"] if changes else now, changes, self.watcher.last_dump_ns)
        for rec in self.merger.flush(now, force=force):
            self.emit(rec)
        return rows

    async def watch_sockets(self, poll_hz: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            rows = self.poll()
            if self.pane.due(rows, loop.time()):
                self.emit({"kind": "netstat", "rows": rows})
            await asyncio.sleep(1.0 / poll_hz)

    def _kernel_events(self, events: list[dict]) -> None:
        for ev in events:
            (self.merger.add_tracepoint if ev["kind"] == "tracepoint" else self.merger.add_kernel)(ev)

    async def read_kstates(self) -> None:
        assert self.kstates is not None
        while True:
            self._kernel_events(await asyncio.to_thread(self.kstates.read, 0.1))

    async def settle(self) -> None:
        """What the kernel has said so far, all of it out of the merger (the sync barrier's look)."""
        if self.kstates is not None:
            self._kernel_events(await asyncio.to_thread(self.kstates.read, 0))
        self.poll(force=True)

    # --- packets ----------------------------------------------------------------------------
    def _packets(self, batch: list[dict]) -> None:  # called from the capture thread
        # One hand-over per batch (up to 256): a wake-up per packet costs more than decoding it.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put_all, batch)

    def _put_all(self, batch: list[dict]) -> None:
        for body in batch:
            self.emit(body)
            if body["dir"] == "in" and "FIN" in body["flags"]:  # dates an orphan's TIME_WAIT (statemerge rule 6)
                self.merger.add_fin(body["dst"], body["src"], body["t_ns"])

    def _capture_stats(self, stats: dict) -> None:  # the kernel's counters, once a second
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put_stats, stats)

    def _put_stats(self, stats: dict) -> None:
        self.emit(stats)
        self._stats_arrived.set()

    async def fresh_capture_stats(self, timeout: float = STATS_WAIT_S) -> None:
        """The capture's kernel counters emitted now, after the packets handed over so far."""
        if self.capture is None:
            return
        self._stats_arrived.clear()
        self.capture.request_stats()
        try:
            await asyncio.wait_for(self._stats_arrived.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("capture_stats_late")

    def counters(self) -> dict[str, int]:
        """What the state observers dropped or missed so far."""
        return {"statemerge_dropped_foreign": self.merger.dropped_foreign,
                "statemerge_dropped_unresolved": self.merger.dropped_unresolved,
                "kstates_missed_pages": self.kstates.missed_pages if self.kstates is not None else 0}
