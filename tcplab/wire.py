"""The wire: the one module that knows what a tcplab message looks like.

Every frame between a probe and the controller (and between the ``tcplab`` CLI and the
controller) is one msgpack map, the *envelope*::

    {"v": 1, "type": "event", "host": "thinkpad", "seq": 17, "time": 123456789, "body": {...}}

- ``v``     protocol version; a peer speaking another version is refused.
- ``type``  one of :data:`TYPES`.
- ``host``  the sender's lab name (``controller`` for the controller, ``cli`` for the CLI).
- ``seq``   the sender's counter. ``event`` frames count on their own, 1, 2, 3, ... with no gaps,
            so the receiver sees a lost event as a gap and acknowledges only what it holds
            contiguously (``ack`` body ``{"seq": N}``); every other type shares a second counter.
- ``time``  the sender's CLOCK_MONOTONIC in nanoseconds when the frame was made.
- ``body``  a map whose shape depends on ``type`` (commands are checked by :func:`check_command`).

Nothing here opens a socket: callers hand dicts in and get dicts out, and anything that does
not fit raises :class:`ProtocolError` with a one-line reason naming what was wrong.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgpack

VERSION = 1
MAX_FRAME = 1 << 20  # 1 MiB: a packet record carries at most a snapped packet
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

TYPES = frozenset({
    # probe -> controller
    "hello", "event", "result", "heartbeat", "pong",
    # controller -> probe
    "welcome", "command", "ack", "ping",
    # cli <-> controller
    "run", "progress", "done", "status", "state",
})

# The fixed set of things a probe will do. Nothing else is ever executed: no shell strings.
ACTIONS = {
    "shape": {"delay_ms": (int, float), "loss_pct": (int, float), "clear": bool},
    "listen": {},
    "connect": {"ip": str, "port": int},
    "send": {"text": str},
    "close": {},
    "abort": {},
    "sync": {},
}
REQUIRED = {"connect": ("ip",), "send": ("text",)}
MAX_TEXT = 4096


class ProtocolError(ValueError):
    """A frame or body that does not follow the wire format."""


def now_ns() -> int:
    return time.monotonic_ns()


def make(type_: str, host: str, seq: int, body: dict | None = None, *, at: int | None = None) -> dict:
    """Build an envelope dict (checked) ready for :func:`encode`."""
    env = {"v": VERSION, "type": type_, "host": host, "seq": seq,
           "time": now_ns() if at is None else at, "body": body or {}}
    check_envelope(env)
    return env


def encode(env: dict) -> bytes:
    check_envelope(env)
    frame = msgpack.packb(env, use_bin_type=True)
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME}-byte limit")
    return frame


def decode(frame: bytes) -> dict:
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
    missing = [k for k in ("v", "type", "host", "seq", "time", "body") if k not in env]
    if missing:
        raise ProtocolError(f"envelope lacks field(s) {', '.join(missing)}")
    if env["v"] != VERSION:
        raise ProtocolError(f"protocol version {env['v']!r} is not supported (this side speaks {VERSION})")
    if env["type"] not in TYPES:
        raise ProtocolError(f"unknown message type {env['type']!r}")
    if not isinstance(env["host"], str) or not HOST_RE.match(env["host"]):
        raise ProtocolError(f"bad host name {env['host']!r}")
    for key in ("seq", "time"):
        if not isinstance(env[key], int) or isinstance(env[key], bool) or env[key] < 0:
            raise ProtocolError(f"field {key!r} must be a non-negative integer, got {env[key]!r}")
    if not isinstance(env["body"], dict):
        raise ProtocolError(f"body must be a map, got {type(env['body']).__name__}")


def check_command(body: dict) -> tuple[str, dict]:
    """Validate a ``command`` body ``{"id": int, "action": str, "args": {...}}``.

    Returns ``(action, args)``; raises :class:`ProtocolError` naming the offending part.
    """
    cid = body.get("id")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise ProtocolError(f"command id must be an integer, got {cid!r}")
    action = body.get("action")
    if action not in ACTIONS:
        raise ProtocolError(f"unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(f"args of {action} must be a map")
    schema = ACTIONS[action]
    for key, value in args.items():
        if key not in schema:
            raise ProtocolError(f"{action} takes no argument {key!r}")
        want = schema[key]
        if not isinstance(value, want) or (isinstance(value, bool) and want is not bool):
            raise ProtocolError(f"{action} argument {key!r} has the wrong type ({type(value).__name__})")
    for key in REQUIRED.get(action, ()):
        if key not in args:
            raise ProtocolError(f"{action} needs argument {key!r}")
    if action == "shape" and not args.get("clear"):
        delay = args.get("delay_ms", 0)
        if not 0 <= delay <= 60_000:
            raise ProtocolError(f"shape delay_ms {delay} is outside 0..60000")
        loss = args.get("loss_pct", 0)
        if not 0 <= loss <= 100:
            raise ProtocolError(f"shape loss_pct {loss} is outside 0..100")
    if action == "send" and (len(args["text"]) > MAX_TEXT or "\n" in args["text"]):
        raise ProtocolError(f"send text must be one line of at most {MAX_TEXT} characters")
    if action == "connect" and not 0 < args.get("port", 1) < 65536:
        raise ProtocolError(f"connect port {args['port']} is outside 1..65535")
    return action, args
