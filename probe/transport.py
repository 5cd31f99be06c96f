"""The probe's side of the ZeroMQ link: one DEALER socket to the controller's ROUTER.

- ``hello`` on start and whenever the controller has been silent for ``SILENCE_S`` (a restarted
  controller forgets us; the hello re-registers). The controller answers ``welcome``.
- ``event`` frames are kept until the controller acknowledges them (``ack`` carries the highest
  sequence number it holds without gaps). They are sent again when the acknowledgements have
  stopped moving for ``RESEND_S`` (a stall: a dropped connection, a controller that restarted),
  and at once after a new ``welcome``; never merely because a backlog is slow to drain, which
  would feed the backlog with copies (seen: 9,000 copies for 10,000 events under load). The
  controller drops duplicates by (host, seq), so an event is never lost and never counted twice.
- ``heartbeat`` every ``HEARTBEAT_S`` so the controller knows the probe is alive.
- A backlog handed over at once never yields by itself (a non-empty queue's get and a send that
  does not block both return at once), so :meth:`Transport.event` gives the receiver a turn every
  ``YIELD_EVERY`` events: the acks are read during the burst, and a burst longer than MAX_UNACKED
  no longer gives up events the controller holds (seen, MAX_UNACKED at 4,000: 16,000 of a burst
  of 20,000 given up; test_transport).

The routing id is the host name, so the controller addresses a probe by its name. Frames are
made, numbered, counted and read by one :class:`tcplab.wire.Session` (``self.session``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import structlog
import zmq
import zmq.asyncio

from tcplab import wire
from tcplab.wire import curve as wire_curve

log = structlog.get_logger("probe.transport")

HEARTBEAT_S = 1.0
RESEND_S = 2.0
SILENCE_S = 5.0
MAX_UNACKED = 100_000  # beyond this the oldest unacknowledged events are dropped (and counted)
YIELD_EVERY = 64  # during a burst of events, the receiver gets a turn this often (to read the acks)


class Transport:
    def __init__(self, endpoint: str, host: str, hello: dict, ctx: zmq.asyncio.Context | None = None,
                 curve: wire_curve.Keys | None = None):
        """``curve``: this probe's keys (a CurveZMQ client of the controller's key); None: no Curve."""
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
        self.sock.setsockopt(zmq.SNDHWM, 0)
        if curve is not None:
            wire_curve.client(self.sock, curve)
        self.session = wire.Session(host)  # numbers: events gapless, acknowledged cumulatively
        self.unacked: OrderedDict[int, tuple[float, bytes]] = OrderedDict()
        self.dropped = 0  # given up at MAX_UNACKED
        self.resent = 0
        self.welcomed = asyncio.Event()
        self.last_heard = 0.0
        self._progress_at = 0.0  # when the acknowledgements last moved (or nothing was pending)
        self._last_hello = 0.0

    def connect(self) -> None:
        self.sock.connect(self.endpoint)
        log.info("transport_connecting", endpoint=self.endpoint)

    async def send(self, type_: str, body: dict) -> None:
        """Send a frame that needs no acknowledgement (hello, result, pong, heartbeat)."""
        await self.session.send(self.sock, type_, body)

    async def event(self, body: dict) -> None:
        """Send an event and keep it until the controller acknowledges it."""
        env, frame = self.session.numbered("event", body)
        self.unacked[env["seq"]] = (asyncio.get_running_loop().time(), frame)
        if len(self.unacked) > MAX_UNACKED:
            self.unacked.popitem(last=False)
            self.dropped += 1
        await self.session.send_frame(self.sock, frame)
        if env["seq"] % YIELD_EVERY == 0:  # a send that does not block never yields by itself
            await asyncio.sleep(0)

    async def hello(self) -> None:
        self._last_hello = asyncio.get_running_loop().time()
        await self.send("hello", self.hello_body)

    def acknowledge(self, upto: int) -> None:
        moved = False
        while self.unacked:
            seq = next(iter(self.unacked))
            if seq > upto:
                break
            self.unacked.popitem(last=False)
            moved = True
        if moved or not self.unacked:
            self._progress_at = asyncio.get_running_loop().time()

    async def resend(self, older_than: float = 0.0) -> int:
        """Send again the unacknowledged events sent more than ``older_than`` seconds ago."""
        now, count = asyncio.get_running_loop().time(), 0
        for seq, (sent, frame) in list(self.unacked.items()):
            if now - sent >= older_than:
                self.unacked[seq] = (now, frame)
                await self.session.send_frame(self.sock, frame)
                count += 1
        self.resent += count
        return count

    async def recv(self) -> dict:
        """Next valid frame from the controller; bad frames are logged and skipped."""
        while True:
            try:
                env = await self.session.recv(self.sock)
            except wire.ProtocolError as e:
                log.warning("frame_refused", reason=str(e))
                continue
            self.last_heard = asyncio.get_running_loop().time()
            if env["type"] == "welcome":
                if not self.welcomed.is_set():
                    log.info("controller_welcomed", endpoint=self.endpoint,
                             resent=await self.resend() if self.unacked else 0)
                self.welcomed.set()
            elif env["type"] == "ack":
                self.acknowledge(int(env["body"].get("seq", 0)))
            return env

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
                # `oldest`: events below it were acknowledged or given up (MAX_UNACKED), so the
                # controller can move past a gap that will never be filled.
                oldest = next(iter(self.unacked), self.session.event_seq + 1)
                await self.send("heartbeat", {"unacked": len(self.unacked), "oldest": oldest,
                                              "dropped": self.dropped})
            if not self.unacked:
                self._progress_at = now
            elif now - self._progress_at >= RESEND_S:  # stalled, not merely behind
                resent = await self.resend(older_than=RESEND_S)
                log.warning("events_resent", count=resent, unacked=len(self.unacked))
                self._progress_at = now
            await asyncio.sleep(HEARTBEAT_S)

    async def drain(self, timeout: float) -> bool:
        """Wait until every event is acknowledged (True) or the timeout passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.unacked and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not self.unacked

    @property
    def counters(self) -> dict[str, int]:
        """What this link counted: frames sent, received and refused, events resent and dropped."""
        return {**self.session.counters, "events": self.session.event_seq, "resent": self.resent,
                "dropped": self.dropped}

    def close(self) -> None:
        self.sock.close(linger=500)
