"""send: one line of text into the probe's nc (its stdin), which the peer's nc prints; or ``bytes``:
that many bytes at once, as lines of ``x`` (1,000 bytes each with its newline), enough to fill a
window (the zero-window film). At most 64 KiB, so that the probe hands them over at once even when
the peer has stopped reading."""

from __future__ import annotations

from typing import Mapping

from tcplab.actions import conn
from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext
from tcplab.wire import ProtocolError

MAX_TEXT = 4096
MAX_BYTES = 65536  # what nc's stdin pipe holds: the command never waits for a peer that does not read


def one_line(text: object) -> bool:
    return isinstance(text, str) and bool(text) and "\n" not in text and len(text) <= MAX_TEXT


def check(args: dict) -> None:
    if ("text" in args) == ("bytes" in args):
        raise ProtocolError("send takes 'text' or 'bytes', one of them")
    if "text" in args and (len(args["text"]) > MAX_TEXT or "\n" in args["text"]):
        raise ProtocolError(f"send text must be one line of at most {MAX_TEXT} characters")
    conn.check_arg(args)


def check_step(raw: Mapping) -> None:
    conn.check_name(raw)
    if "bytes" in raw:
        if "text" in raw:
            raise ActionError("takes 'text' or 'bytes', not both", field="bytes")
        n = raw["bytes"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BYTES:
            raise ActionError(f"bytes must be a whole number from 1 to {MAX_BYTES}, got {n!r}", field="bytes")
        return
    if not one_line(raw.get("text")):
        raise ActionError(f"needs 'text', one line of at most {MAX_TEXT} characters (or 'bytes', a number)",
                          field="text")


def from_step(step: Step, ctx: StepContext) -> dict:
    return {**({"bytes": step.bytes} if step.bytes else {"text": step.text}), **conn.conn_arg(step, ctx)}


async def handle(host: ProbeHost, args: dict) -> dict:
    if "bytes" in args:
        await host.endpoint.send_bytes(args["bytes"], conn=conn.pair_of(args))
    else:
        await host.endpoint.send(args["text"], conn=conn.pair_of(args))
    return {}


ACTION = Action("send", handle, args={"text": Arg(str), "bytes": Arg(int, bounds=(1, MAX_BYTES)), conn.ARG: conn.CONN},
                check=check, from_step=from_step, step_fields=("text", "bytes", conn.FIELD), check_step=check_step)
