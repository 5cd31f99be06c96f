"""Every message body and every event kind, declared: each field's type and bound, which are required.

:func:`check_body` runs in :meth:`tcplab.wire.Session.decode` right after the envelope's check, so
every receiver (the controller's probe bus and control server, the probe's transport, the CLI) gets
only bodies that fit; anything else is a :class:`~tcplab.wire.ProtocolError` naming the type (or the
event's kind) and the field, which the receiver counts, logs and drops before it goes on serving.
:func:`check_event` checks one event body, an item of an ``events`` batch: the bus checks each
item (so one bad event does not cost its neighbours) and counts a refused one.

Unknown fields are refused. Both sides ship together (one package, one version), so a field nobody
declared here is junk or an attack, not a newer peer; a rolling upgrade is not a thing tcplab does.
Whoever adds a field to a message adds its check here in the same commit (and a test sees every
type of :data:`tcplab.wire.TYPES` has one).

A command's action and arguments are :mod:`tcplab.actions`' (``check_command``, the one registry);
here only the command's outer map. Meaning beyond type and bound (is this address a lab host's, is
this scenario runnable) is the receiver's: :mod:`tcplab.actions`, :func:`controller.scenario.parse`.
"""

from __future__ import annotations

from typing import Any

from tcplab.tcpstates import NAMES as TCP_STATES
from tcplab.wire.checks import BOOL, I64, Bytes, Check, Fields, Int, List, MapOf, Num, Opt, Str, Tree
from tcplab.wire.envelope import HOST_RE, MAX_BATCH, ProtocolError

TEXT = 65_536             # free text: an error, a reason, a console line (nc's readline stops at 64 KiB)
SNAPLEN = 262_144         # a captured frame (probe.pktring.SNAPLEN)
NAME = 64                 # a counter's or an observer's name
RUN = 255                 # a run id: its directory's name
MAX_PROBES = 256          # probes in a status reply

ADDR = Str(64, r"[0-9A-Fa-f.:\[\]]{1,47}:(?:[0-9]{1,5}|\*)")  # "10.90.0.1:9090", a listener's "0.0.0.0:*"
IP = Str(45, r"[0-9A-Fa-f.:]{1,45}")
HOST = Str(63, HOST_RE.pattern)
STATE = Str(16, choices=TCP_STATES)
U32 = Int(0, 0xFFFF_FFFF)
NS = Int(0, I64)          # a time in nanoseconds (CLOCK_MONOTONIC or CLOCK_REALTIME), a count
COUNTS = MapOf(Str(NAME, r"[A-Za-z0-9_.-]{1,64}"), Int(0, I64), 256)  # a counter's name -> its count
ANY_MAP = Check(lambda v: type(v) is dict, "a map", spec=("map",))

# --- event kinds: what the probe's observers and actions emit ---------------------------------------
def _event(kind: str, checks: dict[str, Check], *required: str) -> Fields:
    """An event kind: ``kind`` and ``t_ns`` (required) and its own fields."""
    return Fields({"kind": Str(32, choices=(kind,)), "t_ns": NS, **checks}, required=("kind", "t_ns", *required))


_NETSTAT_ROW = Fields({"proto": Str(8, choices=("tcp", "tcp6")), "recv_q": NS, "send_q": NS, "local": ADDR,
                       "foreign": ADDR, "state": Str(16), "timer": Str(64)}, required=("local", "foreign", "state"))
_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
KERNEL_EVENTS = ("retransmit_skb", "retransmit_synack", "send_reset", "receive_reset")  # probe.tracefs_raw.TCP_EVENTS
EVENTS: dict[str, Fields] = {
    "state": _event("state", {"local": ADDR, "remote": ADDR, "from": STATE, "to": STATE,
                              "source": Str(32, choices=("tracepoint", "inet_diag", "tracepoint+inet_diag"))},
                    "local", "remote", "from", "to"),
    "packet": _event("packet", {"wall_ns": NS, "dir": Str(3, choices=("in", "out")), "src": ADDR, "dst": ADDR,
                                "flags": List(Str(3, choices=_FLAGS), 8), "seq": U32, "ack": U32,
                                "len": Int(0, SNAPLEN), "payload": Str(SNAPLEN), "win": Int(0, 0xFFFF),
                                "frame_len": Int(0, SNAPLEN), "raw": Bytes(SNAPLEN), "linktype": Int(0, 0xFFFF)},
                     "dir", "src", "dst", "flags"),
    "console": _event("console", {"text": Str(TEXT), "stream": Str(6, choices=("stdin", "stdout", "stderr")),
                                  "local": ADDR, "remote": ADDR},  # a line of one of many connections
                      "text", "stream"),
    "netstat": _event("netstat", {"rows": List(_NETSTAT_ROW.as_check(), 4096)}, "rows"),
    # an impairment applied (tcplab.impairment's parameters, and what the backend accepted) or cleared
    "shaper": _event("shaper", {"backend": Opt(Str(16)), "delay_ms": Int(0, 3_600_000), "loss_pct": Num(0, 100),
                                "jitter_ms": Int(0, 3_600_000), "duplicate_pct": Num(0, 100),
                                "reorder_pct": Num(0, 100), "corrupt_pct": Num(0, 100),
                                "rate_kbit": Int(0, 10_000_000), "accepted": MapOf(Str(NAME), Num(-1e12, 1e12), 32),
                                "cleared": Opt(Str(16)), "counters": COUNTS}, "backend"),
    # a run's TCP knobs set, or put back (probe/sysctls.py): each one's numbers before and after
    "sysctl": _event("sysctl", {"values": MapOf(Str(NAME, r"[A-Za-z0-9_.-]{1,64}"),
                                                Fields({"was": List(Int(0, I64), 3), "now": List(Int(0, I64), 3)},
                                                       required=("was", "now")).as_check(), 32),
                                "restored": BOOL}, "values"),
    "kernel": _event("kernel", {"event": Str(32, choices=KERNEL_EVENTS), "local": ADDR, "remote": ADDR,
                                "state": Opt(STATE)}, "event", "local", "remote"),
    "capture_stats": _event("capture_stats", {k: NS for k in ("packets", "kernel_packets", "kernel_drops",
                                                              "kernel_freezes", "callback_errors")}),
    "counters": _event("counters", {"counters": COUNTS}, "counters"),
    # the probe's dead-man switch cleared its shaping and ended its endpoints (probe/deadman.py)
    "deadman": _event("deadman", {"silent_s": Num(0, 1e9), "cleared": List(Str(256), 64)}),
    # what the probe's start-up sweep removed of a killed probe's leftovers (probe/leftovers.py)
    "sweep": _event("sweep", {"removed": List(Str(256), 256)}),
}

# --- message bodies, by envelope type ----------------------------------------------------------------
_CLOCK = Fields({"offset_ns": Int(-I64, I64), "at_ns": NS, "uncertainty_ns": Opt(NS), "samples": NS,
                 "drift_ppm": Num(-1e12, 1e12), "drift_range_ppm": List(Num(-1e12, 1e12), 2),
                 "rtt_min_ns": Opt(NS), "span_s": Num(0, 1e12), "consistent": BOOL},
                required=("offset_ns", "uncertainty_ns"))  # what `tcplab status` prints
_PROBE_STATUS = Fields({"alive": BOOL, "lab_ip": Str(64), "clock": _CLOCK.as_check(), "events": NS},
                       required=("alive", "lab_ip", "clock"))
BODIES: dict[str, Fields] = {
    # probe -> controller
    "hello": Fields({"lab_ip": IP, "port": Int(1, 65535), "iface": Str(15, r"[A-Za-z0-9_.@:-]{1,15}"),
                     "pid": Int(1, 1 << 22), "actions": List(Str(32), 64), "observers": List(Str(NAME), 16),
                     "shaping": Fields({"backend": Opt(Str(16)), "reason": Str(TEXT)},
                                       required=("backend", "reason")).as_check(),
                     "session": Str(32, r"[0-9a-fA-F]{32}"), "acked": NS}),
    "events": Fields({"events": List(ANY_MAP, MAX_BATCH, min_items=1)}, required=("events",)),
    "result": Fields({"id": Int(-1, I64), "ok": BOOL, "data": Fields({"backend": Opt(Str(16)), "reset": BOOL,
                                                                         "local": ADDR, "remote": ADDR}).as_check(),
                      "error": Str(TEXT)}, required=("id", "ok")),
    # both ways: the probe's says what it holds; the controller's (liveness) {} or the run in progress
    "heartbeat": Fields({"unacked": NS, "oldest": NS, "dropped": NS, "spilled": NS, "spill_bytes": NS,
                         "run": Str(RUN)}),
    "pong": Fields({"id": NS, "t0": NS, "rx_ns": NS}, required=("id",)),
    # controller -> probe
    "welcome": Fields({"ack": NS}),
    "command": Fields({"id": NS, "action": Str(32), "args": ANY_MAP}, required=("id", "action")),
    "ack": Fields({"seq": NS}, required=("seq",)),
    "ping": Fields({"id": NS}, required=("id",)),
    # cli <-> controller
    "run": Fields({"scenario": Tree(6, 1000, TEXT), "delay": Opt(Num(0, 3600))}, required=("scenario",)),
    "progress": Fields({"run": Str(RUN), "event": Str(32), "dir": Str(4096), "steps": NS, "index": NS,
                        "total": NS, "action": Str(32), "target": Str(1024), "status": Str(16),
                        "error": Str(TEXT)}, required=("event",)),
    "done": Fields({"ok": BOOL, "error": Opt(Str(TEXT)), "dir": Str(4096), "run": Str(RUN)}, required=("ok",)),
    "status": Fields({}),
    # ``omitted``: probes left out so the reply fits a frame (controller/control.py)
    "state": Fields({"probes": MapOf(HOST, _PROBE_STATUS.as_check(), MAX_PROBES), "running": Opt(Str(RUN)),
                     "omitted": NS}, required=("probes",)),
    "cancel": Fields({"run": Str(RUN)}),  # the CLI's Ctrl-C: {} or the run it asked for
}


def check_event(body: Any) -> None:
    """One event body (a map with ``kind`` and ``t_ns`` and its kind's fields); ProtocolError naming
    the kind and the field."""
    kind = body.get("kind") if type(body) is dict else None
    spec = EVENTS.get(kind) if type(kind) is str else None
    if spec is None:
        raise ProtocolError(f"event must be a map with a known kind, got {_kind(body)}")
    if not spec.ok(body):
        raise ProtocolError(f"event {kind!r} {spec.why(body)}")


def check_body(type_: str, body: Any) -> None:
    """The body of a frame of type ``type_`` (one of :data:`tcplab.wire.TYPES`); ProtocolError naming
    the type and the field. A command's action and arguments: :func:`tcplab.actions.check_command`."""
    spec = BODIES.get(type_)
    if spec is None:  # an envelope type without a declared body: refused, never let through
        raise ProtocolError(f"{type_!r} has no declared body")
    if not spec.ok(body):
        raise ProtocolError(f"{type_} body {spec.why(body)}")
    if type_ == "command":
        from tcplab import actions  # here: tcplab.actions imports tcplab.wire
        actions.check_command(body)


def _kind(body: Any) -> str:
    if type(body) is not dict:
        return f"a {type(body).__name__}"
    kind = body.get("kind")
    return f"kind {kind!r}" if type(kind) is str and len(kind) <= 32 else "no kind"
