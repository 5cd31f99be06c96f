"""The trace's record schema: every kind, its fields, the statuses, and the trace's order.

A record is a JSON object with ``t`` (seconds since the run started, controller clock), ``host``
and ``kind``, plus the fields of its kind (docs/trace.md describes each). Records stay plain
dicts (what trace.jsonl holds, what a renderer reads back from disk): this module names their
kinds and values once, so no other module spells ``"packet"`` or ``"0.0.0.0:*"`` itself.

``Kind``, ``StepStatus``, ``RunStatus``, ``Direction`` and ``Stream`` are string enums (what 3.11's
``StrEnum`` is, written out for python 3.9 and 3.10): a member equals and hashes as its string
(``Kind.PACKET == "packet"``), so records read back from disk compare as they are, a member is a
dict key for its string, and a member written to JSON or an f-string is its string.
"""

from __future__ import annotations

from enum import Enum

from tcplab.tcpstates import LISTENER_REMOTE

__all__ = ["CONTROLLER", "Direction", "FIELDS", "KIND_ORDER", "Kind", "LISTENER_REMOTE", "LOSS_FIELDS", "LossWhy",
           "REQUIRED", "RunStatus", "STEP_FIELDS", "StepStatus", "Stream", "is_listener", "public", "sort_key"]

REQUIRED = ("t", "host", "kind")
CONTROLLER = "controller"  # the host of the controller's own records (steps)


class StrEnum(str, Enum):
    """A member is its string: ``str()``, ``format()`` and JSON give the value (3.11's ``enum.StrEnum``)."""
    __str__ = str.__str__
    __format__ = str.__format__


class Kind(StrEnum):
    STEP = "step"          # a scenario step started, ended ok, or failed (the controller's)
    SHAPER = "shaper"      # a host's impairment applied or cleared
    PACKET = "packet"      # a TCP segment a host's capture saw leave (out) or arrive (in)
    KERNEL = "kernel"      # a TCP tracepoint (retransmit, reset, ...)
    STATE = "state"        # a socket's state change
    CONSOLE = "console"    # a line typed into nc or printed by it
    NETSTAT = "netstat"    # the host's netstat -nao rows when they changed
    LOSS = "loss"          # events of a host the trace will never have: a gap given up, a refused event
    DEADMAN = "deadman"    # a probe whose controller fell silent cleared its shaping and ended nc itself
    SWEEP = "sweep"        # a probe at start removed what a killed probe left (shaping, nc, tracefs)
    SYSCTL = "sysctl"      # a host's TCP knobs set for the run, or restored


class LossWhy(StrEnum):
    """Why a ``loss`` record's events are not in the trace."""
    GIVEN_UP = "given_up"  # never arrived, and the probe no longer holds them (dropped at its bounds)
    REFUSED = "refused"    # arrived, but the event did not follow the wire format (its number counts as received)


class StepStatus(StrEnum):
    START = "start"
    OK = "ok"
    FAILED = "failed"


class RunStatus(StrEnum):
    """How a run ended (run.json ``status``): ansible-runner's final states, in tcplab's words."""
    OK = "ok"                # every step's expectations were met
    FAILED = "failed"        # a step failed (run.json ``error``, ``failed_step``)
    REFUSED = "refused"      # refused before its first step (a probe missing, a port in use)
    CANCELLED = "cancelled"  # the controller was stopped during the run


class Direction(StrEnum):
    OUT = "out"  # the capturing host sent it
    IN = "in"    # the capturing host received it


class Stream(StrEnum):
    STDIN = "stdin"    # typed into nc
    STDOUT = "stdout"  # printed by nc: the data reached the application
    STDERR = "stderr"


# The fields a probe event of each kind carries into its record (besides t, host, kind).
FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.STATE: ("local", "remote", "from", "to", "source"),
    Kind.PACKET: ("dir", "src", "dst", "flags", "seq", "ack", "len", "payload", "win", "frame_len"),
    Kind.CONSOLE: ("text", "stream", "local", "remote"),  # local/remote: the connection, when many
    Kind.NETSTAT: ("rows",),
    Kind.SHAPER: ("backend", "delay_ms", "loss_pct", "jitter_ms", "duplicate_pct", "reorder_pct", "corrupt_pct",
                  "rate_kbit", "accepted", "cleared", "counters"),
    Kind.KERNEL: ("event", "local", "remote", "state"),
    Kind.SYSCTL: ("values", "restored"),
    Kind.DEADMAN: ("silent_s", "cleared"),
    Kind.SWEEP: ("removed",),
}
# A step record's fields (the controller writes them; ``error`` only when it failed).
STEP_FIELDS = ("index", "action", "target", "status", "error", "detail", "app")
# A loss record's fields (the controller writes them): the event numbers ``from`` .. ``to`` of the
# host's session, ``why`` (LossWhy) and ``detail`` (a refusal's reason).
LOSS_FIELDS = ("from", "to", "why", "detail")

# Equal times: a step's start before what it caused; a packet before the state it caused.
KIND_ORDER = {Kind.STEP: 0, Kind.SHAPER: 1, Kind.SYSCTL: 1, Kind.PACKET: 2, Kind.KERNEL: 3, Kind.STATE: 4, Kind.CONSOLE: 5,
              Kind.NETSTAT: 6, Kind.LOSS: 7, Kind.DEADMAN: 8, Kind.SWEEP: 8}


def sort_key(rec: dict) -> tuple:
    """The trace's order: by ``t``; at equal times by kind (KIND_ORDER), a segment leaving before it
    arrives (a causal shift can make the two equal), then in the order the records arrived (``_n``)."""
    return (rec["t"], KIND_ORDER.get(rec["kind"], 9), rec.get("dir") == Direction.IN, rec.get("_n", 0))


def public(rec: dict) -> dict:
    """The record as trace.jsonl holds it: without the run's private keys (``_n``, ...)."""
    return {k: v for k, v in rec.items() if k[:1] != "_"}


def is_listener(rec: dict) -> bool:
    """A state or kernel record of a listening socket."""
    return rec.get("remote") == LISTENER_REMOTE
