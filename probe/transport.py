"""The probe's side of the ZeroMQ link: one DEALER socket to the controller's ROUTER.

- ``hello`` on start and whenever the controller has been silent for ``SILENCE_S`` (a restarted
  controller forgets us; the hello re-registers). The controller answers ``welcome``. The hello
  carries ``session`` (32 random hex characters, new in every probe process: the controller keys
  the event numbering on it, not on the pid) and ``acked`` (the last event number a controller
  acknowledged: a controller that restarted does not take what came before it for a gap).
- Events go out in ``events`` batches, held by the :class:`~probe.outbox.Outbox` until the
  controller acknowledges them (``ack`` carries the highest number it holds without gaps): in
  memory up to ``MAX_UNACKED_BYTES``, then in the spill on disk (``<spill_dir>``, up to
  ``MAX_SPILL_BYTES``), then the oldest are dropped and counted.
- Sending never waits: a batch goes to the socket only while libzmq's queue (``SNDHWM`` frames)
  takes it; the rest stays queued in the outbox and goes when acknowledgements come or at the next
  tick. So a controller that is unreachable costs the window and the spill, never an unbounded
  queue (seen before: 74 -> 398 MiB in 30 s for 20,000 unacknowledged 1 kB events).
- Batches are sent again only when the acknowledgements have stopped moving for ``RESEND_S`` (a
  stall: a dropped connection, a controller that restarted), and at once after a new ``welcome``;
  never merely because a backlog is slow to drain, which would feed the backlog with copies. Only
  what is in the window (not acknowledged) is sent again. The controller drops duplicates by
  number, so an event is never counted twice.
- ``heartbeat`` every ``HEARTBEAT_S``: what the probe holds (``unacked`` events, ``oldest``) and its
  totals (``dropped``, ``spilled``, ``spill_bytes``), which the controller counts and records.

The routing id is the host name, so the controller addresses a probe by its name. Frames are
made, numbered, counted and read by one :class:`tcplab.wire.Session` (``self.session``).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path

import structlog
import zmq
import zmq.asyncio

from probe.outbox import Outbox
from tcplab import logs, wire
from tcplab.wire import curve as wire_curve

log = structlog.get_logger("probe.transport")

HEARTBEAT_S = 1.0
RESEND_S = 2.0
SILENCE_S = 5.0
MAX_UNACKED_BYTES = 8 << 20   # unacknowledged batches held in memory; beyond: the spill
MAX_SPILL_BYTES = 256 << 20   # the spill on disk; beyond: the oldest unacknowledged are dropped (counted)
BATCH_BYTES = 256 << 10       # a batch's events, at most (and at most wire.MAX_BATCH events)
SNDHWM = 64                   # frames libzmq queues for the controller, at most
YIELD_EVERY = 64  # during a burst of events, the receiver gets a turn this often (to read the acks)


class Transport:
    def __init__(self, endpoint: str, host: str, hello: dict, ctx: zmq.asyncio.Context | None = None,
                 curve: wire_curve.Keys | None = None, spill_dir: Path | str | None = None):
        """``curve``: this probe's keys (a CurveZMQ client of the controller's key); None: no Curve.
        ``spill_dir``: where unacknowledged batches beyond the memory bound go (None: a temporary
        directory of this transport's own, removed at close)."""
        self.endpoint = endpoint
        self.host = host
        self.hello_body = hello
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, host.encode())
        self.sock.setsockopt(zmq.LINGER, 1000)
        wire.limit(self.sock)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 200)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.sock.setsockopt(zmq.SNDHWM, SNDHWM)
        if curve is not None:
            wire_curve.client(self.sock, curve)
        self.session = wire.Session(host)  # numbers: events gapless, acknowledged cumulatively
        self.session_id = secrets.token_hex(16)
        self.hello_body["session"] = self.session_id
        self._own_spill = spill_dir is None  # made only if it is needed (Spill), removed at close
        self.spill_dir = Path(tempfile.gettempdir() if spill_dir is None else spill_dir)
        if spill_dir is None:
            self.spill_dir /= f"tcplab-spill-{host}-{self.session_id}"
        self.outbox = Outbox(self.session, self.spill_dir, max_bytes=MAX_UNACKED_BYTES, max_spill=MAX_SPILL_BYTES,
                             batch_bytes=BATCH_BYTES)
        self.acked = 0  # the highest event number acknowledged
        self.resent = 0  # events sent again
        self.welcomed = asyncio.Event()
        self.last_heard = 0.0
        self._progress_at = 0.0  # when the acknowledgements last moved (or nothing was pending)
        self._last_hello = 0.0
        self._since_yield = 0  # events handed over since the receiver last had a turn
        self._pumping = False  # a pump is sending (the sender's events, the receiver's acks, the keepalive)

    @property
    def unacked(self) -> list[int]:
        """The numbers of the events not acknowledged yet (in memory and spilled), in order."""
        return self.outbox.numbers()

    @property
    def dropped(self) -> int:
        return self.outbox.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        self.outbox.dropped = value

    def connect(self) -> None:
        self.sock.connect(self.endpoint)
        log.info("transport_connecting", endpoint=self.endpoint)

    async def send(self, type_: str, body: dict) -> None:
        """Send a frame that needs no acknowledgement (result, pong), waiting while the queue is full."""
        await self.session.send(self.sock, type_, body)

    async def _send_now(self, type_: str, body: dict) -> bool:
        """A frame that is worth sending only now (hello, heartbeat): dropped if the queue is full."""
        try:
            await self.session.send_frame(self.sock, self.session.frame(type_, body), flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    async def events(self, bodies: list[dict]) -> None:
        """Number ``bodies`` into batches, hold them until acknowledged, and send what the socket takes.
        A caller with a backlog never yields by itself (a non-empty queue's get and a send that does
        not block return at once): every ``YIELD_EVERY`` events the receiver gets a turn, to read the
        acks, or the window fills with what the controller already holds."""
        if not self.outbox:  # nothing was pending: a stall is counted from now
            self._progress_at = asyncio.get_running_loop().time()
        self.outbox.add(bodies)
        await self.pump()
        self._since_yield += len(bodies)
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            await asyncio.sleep(0)

    async def event(self, body: dict) -> None:
        """One event (a batch of its own)."""
        await self.events([body])

    async def pump(self) -> int:
        """Send the outbox's queued batches while the socket takes them without waiting."""
        if self._pumping:  # one pump at a time: the one sending takes what is queued meanwhile too
            return 0
        loop, sent = asyncio.get_running_loop(), 0
        self._pumping = True
        try:
            while (batch := self.outbox.next()) is not None:
                try:  # may wait behind a blocked send (a result, a pong): another task runs meanwhile
                    await self.session.send_frame(self.sock, batch.frame, flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                if batch.sent is not None:
                    self.resent += batch.count
                self.outbox.sent(batch, loop.time())
                sent += 1
                if sent % YIELD_EVERY == 0:  # a send that does not block never yields by itself
                    await asyncio.sleep(0)  # (a long queue: a welcome's resend of the window)
        finally:
            self._pumping = False
        return sent

    async def hello(self) -> None:
        """Say hello (again at the next tick if the queue was full)."""
        self.hello_body["acked"] = self.acked
        if await self._send_now("hello", self.hello_body):
            self._last_hello = asyncio.get_running_loop().time()

    def acknowledge(self, upto: int) -> None:
        self.acked = max(self.acked, upto)
        moved = self.outbox.acknowledge(upto)
        if moved or not self.outbox:
            self._progress_at = asyncio.get_running_loop().time()

    async def resend(self, older_than: float = 0.0) -> int:
        """Send again the unacknowledged batches sent more than ``older_than`` seconds ago; returns
        how many events that queued."""
        count = self.outbox.overdue(asyncio.get_running_loop().time(), older_than)
        await self.pump()
        return count

    async def recv(self) -> dict:
        """Next valid frame from the controller; bad frames are logged and skipped."""
        while True:
            try:
                env = await self.session.recv(self.sock)
            except wire.ProtocolError as e:
                if logs.sampled(self.session.counters["refused"]):  # counted each, logged a few
                    log.warning("frame_refused", reason=str(e), refused=self.session.counters["refused"])
                continue
            self.last_heard = asyncio.get_running_loop().time()
            if env["type"] == "welcome":
                ack = env["body"].get("ack")
                if isinstance(ack, int) and not isinstance(ack, bool):
                    self.acknowledge(ack)
                if not self.welcomed.is_set():
                    log.info("controller_welcomed", endpoint=self.endpoint,
                             resent=await self.resend() if self.outbox else 0)
                self.welcomed.set()
            elif env["type"] == "ack":
                seq = env["body"].get("seq", 0)
                if isinstance(seq, int) and not isinstance(seq, bool):
                    self.acknowledge(seq)
                    await self.pump()
            return env

    def beat(self) -> dict:
        """The heartbeat's body: what is held and the totals."""
        spill = self.outbox.spill
        return {"unacked": self.outbox.held, "oldest": self.outbox.oldest, "dropped": self.outbox.dropped,
                "spilled": self.outbox.spilled, "spill_bytes": spill.bytes}

    async def keepalive(self) -> None:
        """Heartbeats, hellos after silence, and resends; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now - self.last_heard > SILENCE_S and now - self._last_hello > SILENCE_S:
                if self.welcomed.is_set():
                    log.warning("controller_silent", seconds=round(now - self.last_heard, 1))
                self.welcomed.clear()
                await self.hello()
            else:
                # `oldest`: events below it were acknowledged or dropped at the bounds, so the
                # controller can move past a gap that will never be filled.
                await self._send_now("heartbeat", self.beat())
            if not self.outbox:
                self._progress_at = now
            elif now - self._progress_at >= RESEND_S:  # stalled, not merely behind
                resent = await self.resend(older_than=RESEND_S)
                if resent:
                    log.warning("events_resent", count=resent, unacked=self.outbox.held)
                self._progress_at = now
            else:
                await self.pump()
            await asyncio.sleep(HEARTBEAT_S)

    async def drain(self, timeout: float) -> bool:
        """Wait until every event is acknowledged (True) or the timeout passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.outbox and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not self.outbox

    @property
    def counters(self) -> dict[str, int]:
        """What this link counted: frames sent, received and refused, events resent, dropped,
        spilled and refused (unpackable)."""
        return {**self.session.counters, "events": self.session.event_seq, "resent": self.resent,
                "dropped": self.outbox.dropped, "spilled": self.outbox.spilled,
                "events_refused": self.outbox.refused}

    def close(self) -> None:
        self.sock.close(linger=500)
        self.outbox.clear()
        if self._own_spill:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
