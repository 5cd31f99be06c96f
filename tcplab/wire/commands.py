"""A command's body: the fixed set of actions a probe will do (moving to tcplab.actions)."""

from __future__ import annotations

from tcplab.wire.envelope import ProtocolError

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
