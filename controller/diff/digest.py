"""A run reduced to what another run can be compared with: its steps, and in each step what each
side did, in the order it did it, by role and never by address.

Two labs give their hosts other addresses, ports and perhaps names, so nothing here keeps an
address: a host is its role (``server``: the one that listened, ``client``: the one that connected,
controller.film.model), a socket is ``listener`` or ``connection`` (``connection 2`` for a second
one), a segment is its sender's role, its flags, its relative Seq/Ack, its length and whether it
is a retransmission (an original and a copy sent again are two events). Each record
belongs to the step whose start last preceded it (records before the first step to step 0), and
its time is counted from that step's start, so two runs that drift apart in one step are compared
afresh in the next.

Each :class:`Item` has a ``key`` (what must be equal for two items to be the same event), ``attrs``
(what is then compared: a segment's Wireshark analysis, a shaper's backend and delay) and its times.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from pathlib import Path

from controller.film import model
from controller.film.tracefile import NotATrace, open_run
from controller.trace.index import TraceIndex
from controller.trace.schema import Direction, Kind, StepStatus, Stream
from tcplab.impairment import of_record

ROLES = ("server", "client")


@dataclass(frozen=True)
class Item:
    kind: str                 # state | segment | kernel | console | shaper
    role: str                 # the host's role; a segment's sender
    key: tuple                # equal keys: the same event
    attrs: tuple              # compared once the keys match
    t: float                  # seconds after the step's start (a segment: when it left, else when it arrived)
    label: str                # the item in words
    t2: float | None = None   # a segment: when it arrived
    data: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "role": self.role, "label": self.label, "t": round(self.t, 6),
                **({"arrived": round(self.t2, 6)} if self.t2 is not None else {}), **self.data}


@dataclass
class StepDigest:
    index: int                # 0: before the first step
    action: str
    target: str               # roles, comma-separated, or "-"
    status: str               # ok | failed | start (never finished) | "" for step 0
    start: float
    error: str | None = None
    items: list[Item] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"index": self.index, "action": self.action, "target": self.target, "status": self.status,
                "start": round(self.start, 6), **({"error": self.error} if self.error else {})}


@dataclass
class RunDigest:
    path: str
    run: str
    hosts: dict[str, str]     # role -> host name
    steps: list[StepDigest]

    def step(self, index: int) -> StepDigest | None:
        return next((s for s in self.steps if s.index == index), None)


def read(path: str | Path) -> RunDigest:
    """A run directory's (or a trace file's) digest; :class:`NotATrace` names the file and why."""
    records, run_id, _ = open_run(Path(path))
    records = TraceIndex(records)
    try:
        film = model.build(records)
    except (ValueError, KeyError, TypeError) as e:
        raise NotATrace(f"{path}: not a trace tcplab can compare ({e})") from e
    return digest(records, film, str(path), run_id)


def digest(records: TraceIndex | list[dict], film: model.Film, path: str = "", run_id: str = "") -> RunDigest:
    ix = TraceIndex.of(records)
    role = film.roles
    steps = [StepDigest(0, "before", "-", "", 0.0)]
    where: dict[int, StepDigest] = {}          # trace index -> its step
    for i, r in enumerate(ix):
        if r["kind"] == Kind.STEP:
            if r["status"] == StepStatus.START:
                target = ",".join(role.get(h, h) for h in r["target"].split(",")) if r["target"] != "-" else "-"
                steps.append(StepDigest(r["index"], r["action"], target, "start", r["t"]))
            elif steps[-1].index == r["index"]:
                steps[-1].status, steps[-1].error = r["status"], r.get("error")
        where[i] = steps[-1]
    sockets: dict[tuple, str] = {}
    shaping: dict[str, tuple] = {}
    for n, r in enumerate(ix):
        step, kind = where[n], r["kind"]
        if r["host"] not in role:
            continue
        rel = r["t"] - step.start
        if kind == Kind.STATE:
            step.items.append(_state(r, role[r["host"]], rel, sockets))
        elif kind == Kind.KERNEL:
            what = f"{r['event']} in {r.get('state') or '?'}"
            step.items.append(Item("kernel", role[r["host"]], (r["event"], r.get("state")), (), rel, what,
                                   data={"event": r["event"], "state": r.get("state")}))
        elif kind == Kind.CONSOLE:
            verb = "typed" if r.get("stream") == Stream.STDIN else f"{r.get('stream', 'stdout')}:"
            step.items.append(Item("console", role[r["host"]], (r.get("stream"), r.get("text")), (), rel,
                                   f"{verb} {r.get('text')!r}", data={"stream": r.get("stream"), "text": r.get("text")}))
        elif kind == Kind.SHAPER:
            imp = of_record(r)
            now = (r.get("backend"), *(astuple(imp) if imp else ()))
            if shaping.get(r["host"]) == now:
                continue  # the cleanup's second clear: nothing changed
            shaping[r["host"]] = now
            words = f"{now[0]} {imp.words()}" if imp else "off"
            step.items.append(Item("shaper", role[r["host"]], ("on" if now[0] else "off",), now, rel, words,
                                   data={"backend": now[0], **(imp.args() if imp else {})}))
        elif kind == Kind.PACKET:
            other = ix.pair_of(r)
            if other is not None and r["dir"] == Direction.IN:
                continue  # told once, from the copy that left
            step.items.append(_segment(r, other, ix, where, role))
    return RunDigest(path, run_id, {v: k for k, v in role.items()}, steps)


def _state(r: dict, who: str, rel: float, sockets: dict[tuple, str]) -> Item:
    if model.is_listener(r):
        sock = "listener"
    else:
        ident = (r["host"], r["local"], r["remote"])
        if ident not in sockets:
            n = 1 + sum(1 for k in sockets if k[0] == r["host"])
            sockets[ident] = "connection" if n == 1 else f"connection {n}"
        sock = sockets[ident]
    label = f"{r['from']} → {r['to']}" + ("" if sock == "connection" else f" ({sock})")
    return Item("state", who, (sock, r["from"], r["to"]), (), rel, label,
                data={"socket": sock, "from": r["from"], "to": r["to"], "source": r.get("source")})


def _segment(r: dict, other: dict | None, ix: TraceIndex, where: dict, role: dict[str, str]) -> Item:
    hosts = list(role)
    sender = r["host"] if r["dir"] == Direction.OUT else next((h for h in hosts if h != r["host"]), r["host"])
    receiver = next((h for h in hosts if h != sender), sender)
    flags = [f for f in model.FLAG_ORDER if f in r.get("flags", [])]
    analysis = sorted(set(r.get("analysis", [])) | set(other.get("analysis", []) if other else []))
    step_start = where[ix.position(r)].start
    sent = r["t"] - step_start if r["dir"] == Direction.OUT else None
    arrived = (other["t"] - step_start if other is not None else None) if r["dir"] == Direction.OUT else r["t"] - step_start
    label = f"[{', '.join(flags)}] Seq={r.get('seq', 0)} Ack={r.get('ack', 0)} Len={r.get('len', 0)}"
    seen = "both" if other is not None else f"{role[r['host']]} only"
    data = {"direction": f"{role[sender]}→{role[receiver]}", "flags": flags, "seq": r.get("seq", 0),
            "ack": r.get("ack", 0), "len": r.get("len", 0), "analysis": analysis, "captured_by": seen}
    # an original and a copy sent again are other events; the rest of the analysis is compared
    again = model.is_retransmission({"analysis": analysis})
    return Item("segment", role[sender], (tuple(flags), r.get("seq", 0), r.get("ack", 0), r.get("len", 0), again),
                (tuple(analysis), seen), sent if sent is not None else arrived, label,
                arrived if sent is not None else None, data)
