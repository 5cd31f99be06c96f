"""One sender's side of the wire (as jupyter_client's ``Session``): its identity, its sequence
numbers and its counters, and the only code that turns dicts into frames on a socket and back.

    s = Session("controller")
    frame = s.frame("ping", {"id": 1})                     # envelope made and checked once -> bytes
    await s.send(sock, "ack", {"seq": 3}, to=b"thinkpad")  # to=: the peer's routing id on a ROUTER
    env = s.decode(frame)                                  # checked; raises ProtocolError
    s.counters                                             # {"sent": n, "received": n, "refused": n}

Numbering: events take the numbers of their own gapless counter (the receiver acknowledges
events cumulatively and sees a gap as a loss); every other type shares a second counter. Events
travel in batches: an ``events`` envelope (:meth:`Session.batch`) carries the number of its first
event as ``seq`` and its items take ``seq .. seq+len-1``. A number is taken only once its envelope
passed the check and packed within the size limit, so a refused body never leaves a gap.
:meth:`Session.batch` hands out the numbered dict and its bytes for a sender that keeps the frame
(the probe's transport keeps each batch until it is acknowledged and resends the same bytes with
:meth:`Session.send_frame`).

Where the next wire features go (issue 7), each in one place here:
- *signing / CurveZMQ*: bytes are made only in :meth:`Session.pack` and read only in
  :meth:`Session.decode`, so a MAC is added and verified there; with CurveZMQ the socket
  authenticates, and ``decode(frame, peer=...)`` is where the peer's authenticated name is
  compared with the envelope's ``host`` (today: with the routing id).
- *strict bodies*: :meth:`Session.decode` is where a per-type body check runs after the
  envelope's, so every receiver gets it.
"""

from __future__ import annotations

from typing import Any

from tcplab.wire.bodies import check_body
from tcplab.wire.envelope import HOST_RE, MAX_BATCH, ProtocolError, decode, encode, encode_batch, make

BATCH = "events"  # the one type numbered by the event counter


class Session:
    def __init__(self, host: str):
        if not HOST_RE.match(host):
            raise ProtocolError(f"bad host name {host!r}")
        self.host = host
        self.seq = 0        # the last number given to a frame other than an event
        self.event_seq = 0  # the last event's number: 1, 2, 3, ... without gaps
        self.counters: dict[str, int] = {"sent": 0, "received": 0, "refused": 0}

    # --- making frames --------------------------------------------------------------------------
    def envelope(self, type_: str, body: dict | None = None, *, at: int | None = None) -> dict:
        """The next numbered envelope of this sender, checked (the sending side's one check)."""
        return self.numbered(type_, body, at=at)[0]

    def numbered(self, type_: str, body: dict | None = None, *, at: int | None = None) -> tuple[dict, bytes]:
        """The next numbered envelope and its bytes. The number is taken only once the envelope
        passed its check and packed within the size limit: a refused body leaves no gap. An
        ``events`` body takes as many event numbers as it has items (see :meth:`batch`)."""
        if type_ == BATCH:
            items = body.get("events") if isinstance(body, dict) else None
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                raise ProtocolError(f"an events body holds a list of 1..{MAX_BATCH} events")
            env = make(type_, self.host, self.event_seq + 1, body, at=at)
            frame = encode(env)
            self.event_seq += len(items)
            return env, frame
        env = make(type_, self.host, self.seq + 1, body, at=at)
        frame = encode(env)
        self.seq = env["seq"]
        return env, frame

    def batch(self, events: list[dict], *, at: int | None = None) -> tuple[dict, bytes]:
        """One ``events`` envelope for ``events`` (1..MAX_BATCH) and its bytes: its ``seq`` is the
        first event's number, the others follow without gaps."""
        return self.numbered(BATCH, {"events": events}, at=at)

    def batch_packed(self, packed: list[bytes], *, at: int | None = None) -> tuple[int, bytes]:
        """:meth:`batch` of events packed one by one (:func:`tcplab.wire.envelope.pack_event`, so a
        sender knows each one's size before it makes the batch): the first number and the bytes."""
        if not 1 <= len(packed) <= MAX_BATCH:
            raise ProtocolError(f"an events body holds a list of 1..{MAX_BATCH} events")
        env = make(BATCH, self.host, self.event_seq + 1, {}, at=at)
        frame = encode_batch(env, packed)
        self.event_seq += len(packed)
        return env["seq"], frame

    def pack(self, env: dict) -> bytes:
        """The bytes of an envelope :meth:`envelope` made (not checked again)."""
        return encode(env)

    def frame(self, type_: str, body: dict | None = None, *, at: int | None = None) -> bytes:
        return self.numbered(type_, body, at=at)[1]

    # --- sending (a zmq.asyncio socket; send_blocking for a plain one) --------------------------
    async def send(self, sock: Any, type_: str, body: dict | None = None, *, to: bytes | None = None) -> dict:
        """Make, pack and send one frame; returns the envelope sent. ``to`` is the routing id on
        a ROUTER (None on a DEALER). zmq errors (a ROUTER_MANDATORY peer gone) pass through."""
        env, frame = self.numbered(type_, body)
        await self.send_frame(sock, frame, to=to)
        return env

    async def send_frame(self, sock: Any, frame: bytes, *, to: bytes | None = None, flags: int = 0) -> None:
        """Send bytes this session packed before (a resent batch). ``flags=zmq.NOBLOCK``: zmq.Again
        at once when the socket's queue is at its high-water mark (nothing counted). (pyzmq's asyncio
        socket queues a NOBLOCK send behind a send that waits; sending past it through a plain shadow
        of the socket starved that socket's receives of their wake-ups: ZMQ_FD is edge-triggered, and
        only pyzmq's own sends look at the events again. Measured on the Vagrant VMs: a probe heard
        nothing for 5.2 s and its dead-man switch fired mid-run.)"""
        await (sock.send(frame, flags) if to is None else sock.send_multipart([to, frame], flags))
        self.counters["sent"] += 1

    def send_blocking(self, sock: Any, type_: str, body: dict | None = None, *, to: bytes | None = None) -> dict:
        """:meth:`send` on a plain (blocking) zmq socket, for a client without an event loop."""
        env, frame = self.numbered(type_, body)
        sock.send(frame) if to is None else sock.send_multipart([to, frame])
        self.counters["sent"] += 1
        return env

    # --- receiving ------------------------------------------------------------------------------
    def decode(self, frame: bytes, *, peer: bytes | None = None) -> dict:
        """The checked envelope of ``frame`` (the receiving side's one check). With ``peer`` (the
        routing id it came from) its ``host`` must be that name. Raises ProtocolError, counted."""
        try:
            env = decode(frame)
            if peer is not None and env["host"] != peer.decode(errors="replace"):
                raise ProtocolError(f"host {env['host']!r} does not match routing id {peer!r}")
            check_body(env["type"], env["body"])  # every field's type and bound (tcplab.wire.bodies)
        except ProtocolError:
            self.counters["refused"] += 1
            raise
        self.counters["received"] += 1
        return env

    async def recv(self, sock: Any) -> dict:
        """The next frame on a DEALER, checked; a bad one raises ProtocolError (the caller goes on).
        A ROUTER's reader takes ``[routing id, frame]`` itself (in bursts) and calls :meth:`decode`."""
        return self.decode(await sock.recv())
