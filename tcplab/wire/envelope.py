"""The envelope: what one tcplab frame looks like, and nothing else.

Every frame between a probe and the controller (and between the ``tcplab`` CLI and the
controller) is one msgpack map, the *envelope*::

    {"v": 1, "type": "events", "host": "thinkpad", "seq": 17, "time": 123456789, "body": {...}}

- ``v``     protocol version; a peer speaking another version is refused.
- ``type``  one of :data:`TYPES`.
- ``host``  the sender's lab name (``controller`` for the controller, ``cli`` for the CLI).
- ``seq``   the sender's counter. Events count on their own, 1, 2, 3, ... with no gaps: an
            ``events`` frame (a batch, body ``{"events": [event, ...]}``, 1..:data:`MAX_BATCH`
            items) carries the number of its first event and its items take the numbers that
            follow, so the receiver sees a lost batch as a gap and acknowledges only what it holds
            contiguously (``ack`` body ``{"seq": N}``); every other type shares a second counter.
- ``time``  the sender's CLOCK_MONOTONIC in nanoseconds when the frame was made.
- ``body``  a map whose shape depends on ``type`` (a command's: :func:`tcplab.actions.check_command`).

The envelope is checked once on each side: when it is made (:func:`make`) and when it is read
(:func:`decode`). :func:`encode` only packs and bounds the size. Nothing here opens a socket or
counts anything: :class:`tcplab.wire.Session` does, for one sender.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgpack

from tcplab.errors import TcplabError
from tcplab.wire.checks import show

VERSION = 1
MAX_FRAME = 1 << 20  # 1 MiB: a packet record carries at most a snapped packet
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
FIELDS = ("v", "type", "host", "seq", "time", "body")
MAX_BATCH = 256  # events in one ``events`` frame

TYPES = frozenset({
    # probe -> controller
    "hello", "events", "result", "heartbeat", "pong",
    # controller -> probe
    "welcome", "command", "ack", "ping",
    # cli <-> controller
    "run", "progress", "done", "status", "state", "cancel",
})


class ProtocolError(TcplabError, ValueError):
    """A frame or body that does not follow the wire format."""


def now_ns() -> int:
    return time.monotonic_ns()


def make(type_: str, host: str, seq: int, body: dict | None = None, *, at: int | None = None) -> dict:
    """Build an envelope dict, checked: the one check on the sending side."""
    env = {"v": VERSION, "type": type_, "host": host, "seq": seq,
           "time": now_ns() if at is None else at, "body": {} if body is None else body}
    check_envelope(env)
    return env


def encode(env: dict) -> bytes:
    """Pack an envelope that :func:`make` built (not checked again); refuse one over :data:`MAX_FRAME`."""
    frame = msgpack.packb(env, use_bin_type=True)
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME}-byte limit")
    return frame


_PACKER = msgpack.Packer(use_bin_type=True)


def pack_event(body: dict) -> bytes:
    """One event body packed, as :func:`encode_batch` takes it."""
    return _PACKER.pack(body)


def encode_batch(env: dict, packed: list[bytes]) -> bytes:
    """The bytes of an ``events`` envelope that :func:`make` built with an empty body, its
    ``body`` being ``{"events": [...]}`` of the events ``packed`` (:func:`pack_event`): the same
    bytes msgpack would make of the whole, each event packed once. Refused over :data:`MAX_FRAME`."""
    p = _PACKER
    head = [p.pack_map_header(len(FIELDS))]
    for key in FIELDS[:-1]:
        head += [p.pack(key), p.pack(env[key])]
    head += [p.pack("body"), p.pack_map_header(1), p.pack("events"), p.pack_array_header(len(packed))]
    frame = b"".join(head + packed)
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME}-byte limit")
    return frame


def limit(sock: Any) -> Any:
    """Set a zmq socket's inbound limit to :data:`MAX_FRAME` (``ZMQ_MAXMSGSIZE``): a peer that sends
    a bigger frame is disconnected by libzmq before the frame is held in memory. Returns ``sock``."""
    import zmq  # here, not at the top: the envelope itself needs no zmq
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
    return sock


def decode(frame: bytes) -> dict:
    """Unpack and check a frame: the one check on the receiving side."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME}-byte limit")
    try:
        env = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"frame is not valid msgpack: {e.__class__.__name__}") from e
    check_envelope(env)
    return env


def check_envelope(env: Any) -> None:
    if not isinstance(env, dict):
        raise ProtocolError(f"envelope must be a map, got {type(env).__name__}")
    missing = [k for k in FIELDS if k not in env]
    if missing:
        raise ProtocolError(f"envelope lacks field(s) {', '.join(missing)}")
    if env["v"] != VERSION:
        raise ProtocolError(f"protocol version {show(env['v'])} is not supported (this side speaks {VERSION})")
    if not isinstance(env["type"], str) or env["type"] not in TYPES:
        raise ProtocolError(f"unknown message type {show(env['type'])}")
    if not isinstance(env["host"], str) or not HOST_RE.match(env["host"]):
        raise ProtocolError(f"bad host name {show(env['host'])}")
    for key in ("seq", "time"):
        if not isinstance(env[key], int) or isinstance(env[key], bool) or env[key] < 0:
            raise ProtocolError(f"field {key!r} must be a non-negative integer, got {show(env[key])}")
    if not isinstance(env["body"], dict):
        raise ProtocolError(f"body must be a map, got {type(env['body']).__name__}")
