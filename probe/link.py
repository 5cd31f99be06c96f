"""The probe's side of the conversation with the controller, above the transport.

- **Events out**: every observer and action hands its events to :meth:`Link.emit` (stamped with the
  probe's monotonic clock if they carry no time); one sender task hands what is queued (up to
  :data:`TAKE` at a time) to the transport, which numbers it into batches and sends them in order,
  and :meth:`Link.flush` waits until every event emitted so far was handed over (the sync barrier).
- **Frames in**: commands go to the command queue (:mod:`probe.commands`), pings are answered with a
  pong at once (NTP's T2 is when the ping arrived; the pong's envelope time is T3, see
  controller/clock.py). Acknowledgements and welcomes are the transport's own business.
- **While stopping** the receiver keeps running (the drain needs the controller's acks), but a
  command that arrives is answered as refused instead of being run.
- **The status file** (:class:`StatusFile`), ``<home>/probe.status``: ``connecting <endpoint>`` from
  the start until the controller's welcome, ``connected <endpoint>`` while the controller answers,
  ``connecting`` again when it falls silent; removed when the probe stops. Ansible's probe role and
  the tests wait on it. Written whole (:func:`tcplab.files.atomic_write`): never half a line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from probe.transport import Transport
from tcplab import wire
from tcplab.files import atomic_write

log = structlog.get_logger("probe.link")

STOPPING = "the probe is stopping"
CHECK_EVERY_S = 0.2
TAKE = 4 * wire.MAX_BATCH  # events the sender hands to the transport at once, at most


class Link:
    def __init__(self, transport: Transport, on_command: Callable[[dict], None]):
        self.transport = transport
        self.on_command = on_command
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.accepting = True

    def emit(self, body: dict) -> None:
        body.setdefault("t_ns", time.monotonic_ns())
        self.events.put_nowait(body)

    async def send_events(self) -> None:
        """The sender task: every event, in the order emitted, whatever is queued at once in one go
        (the transport cuts it into batches)."""
        while True:
            bodies = [await self.events.get()]
            while len(bodies) < TAKE and not self.events.empty():
                bodies.append(self.events.get_nowait())
            try:
                await self.transport.events(bodies)
            finally:
                for _ in bodies:
                    self.events.task_done()

    async def flush(self) -> None:
        """Until every event emitted so far was handed to the transport."""
        await self.events.join()

    async def receive(self) -> None:
        """The receiver task: commands and pings from the controller."""
        while True:
            env = await self.transport.recv()
            rx_ns = time.monotonic_ns()
            kind = env["type"]
            if kind == "command" and self.accepting:
                self.on_command(env["body"])
            elif kind == "command":
                cid = env["body"].get("id")
                log.warning("command_refused", reason=STOPPING, command=cid)
                await self.transport.send("result", {"id": cid if isinstance(cid, int) else -1, "ok": False,
                                                     "error": STOPPING})
            elif kind == "ping":
                await self.transport.send("pong", {"id": env["body"].get("id"), "t0": env["time"], "rx_ns": rx_ns})

    async def drain(self, timeout: float) -> bool:
        """Every event emitted sent, then acknowledged, within ``timeout`` seconds: True when all were."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # not asyncio.wait_for: on 3.11 it swallows a cancel that meets a finished flush, and a
        # forced exit cancels this drain
        flushed = asyncio.ensure_future(self.flush())
        try:
            done, _ = await asyncio.wait([flushed], timeout=timeout)
        finally:
            flushed.cancel()  # a no-op once it finished
        if not done:
            return False
        return await self.transport.drain(max(0.0, deadline - loop.time()))


class StatusFile:
    """``<home>/probe.status``: ``connecting`` or ``connected``, and the controller's endpoint."""

    def __init__(self, path: Path, controller: str):
        self.path = Path(path)
        self.controller = controller

    def write(self, state: str) -> None:
        atomic_write(self.path, f"{state} {self.controller}\n")

    def read(self) -> str | None:
        """The state written (``connecting`` or ``connected``), None without a file."""
        try:
            return self.path.read_text().split(" ", 1)[0]
        except (OSError, IndexError):
            return None

    async def follow(self, welcomed: asyncio.Event, every_s: float = CHECK_EVERY_S) -> None:
        """The reporter task: ``connected`` while ``welcomed`` is set, ``connecting`` while not."""
        while True:
            await welcomed.wait()
            self.write("connected")
            while welcomed.is_set():
                await asyncio.sleep(every_s)
            self.write("connecting")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
