"""send: one line of text into the probe's nc (its stdin), which the peer's nc prints."""

from __future__ import annotations

from typing import Mapping

from tcplab.actions.action import Action, ActionError, Arg, ProbeHost, Step, StepContext
from tcplab.wire import ProtocolError

MAX_TEXT = 4096


def one_line(text: object) -> bool:
    return isinstance(text, str) and bool(text) and "\n" not in text and len(text) <= MAX_TEXT


def check(args: dict) -> None:
    if len(args["text"]) > MAX_TEXT or "\n" in args["text"]:
        raise ProtocolError(f"send text must be one line of at most {MAX_TEXT} characters")


def check_step(raw: Mapping) -> None:
    if not one_line(raw.get("text")):
        raise ActionError(f"needs 'text', one line of at most {MAX_TEXT} characters", field="text")


def from_step(step: Step, ctx: StepContext) -> dict:
    return {"text": step.text}


async def handle(host: ProbeHost, args: dict) -> dict:
    await host.endpoint.send(args["text"])
    return {}


ACTION = Action("send", handle, args={"text": Arg(str, required=True)}, check=check, from_step=from_step,
                step_fields=("text",), check_step=check_step)
