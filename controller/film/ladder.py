"""ladder.svg: the classic two-column sequence diagram of a run, drawn from the trace alone.

One timeline per host (in the order the hosts first appear in the trace's packets and states), time
running down.
Each segment is an arrow from the moment its sender's TCP sent it to the moment it arrived (the
matching ``in`` record on the other host), so the delay slants it as in the seed's film. The lab
delays on egress, and a capture sees a packet leave only after the delay, so the arrow starts at the
``out`` record's time less the sender's shaping delay then in force (its ``shaper`` records). The
label gives the flags and seq/ack/len as Wireshark does. Retransmissions (the packet's Wireshark ``analysis``) are
dashed. Each host's state names are written along its timeline where they change.

Time is linear, except that a quiet stretch longer than the long-gap rule's limit (controller/film/gaps.py,
3 s; TIME_WAIT's 60 s) is drawn that long with a break mark saying how long it really was. The output
depends on the trace only, so rendering twice gives byte-identical files.

:func:`render` and :func:`write` take the trace's index (:class:`~controller.trace.TraceIndex`) or its
records in trace order (indexed first): the packets, states, segment pairs and delays are the index's.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

from controller.film import gaps
from controller.film.model import is_listener, is_retransmission
from controller.report import packet_info
from controller.trace import Direction, Kind, TraceIndex
from controller.trace.schema import CONTROLLER
from tcplab.files import atomic_write

PX_PER_S = 220.0
TOP, BOTTOM = 70, 40
COL_X = (230, 630)   # the timelines' x
WIDTH = 860


def _hosts(ix: TraceIndex) -> list[str]:
    """The first two hosts to appear in the trace's packets and states."""
    hosts: dict[str, None] = {}
    for r in sorted(ix.kind(Kind.PACKET) + ix.kind(Kind.STATE), key=ix.position):
        if r["host"] != CONTROLLER:
            hosts.setdefault(r["host"], None)
    return list(hosts)[:2]


class _Timescale:
    """t -> y, with long quiet stretches cut by the long-gap rule."""

    def __init__(self, times: list[float]):
        self.knots: list[tuple[float, float]] = []  # (t, y) at each event time
        self.breaks: list[tuple[float, float]] = []  # (y, real gap in s)
        y, last = float(TOP), None
        for t in sorted(set(times)):
            if last is not None:
                gap = t - last
                if gaps.is_cut(gap):
                    self.breaks.append((y + gaps.shown(gap) * PX_PER_S / 2, gap))
                y += gaps.shown(gap) * PX_PER_S
            self.knots.append((t, y))
            last = t
        self.height = (self.knots[-1][1] if self.knots else TOP) + BOTTOM
        self._times = [k[0] for k in self.knots]

    def y(self, t: float) -> float:
        i = bisect.bisect_left(self._times, t)  # the first knot at or after t
        if i == len(self.knots):
            return self.knots[-1][1] if self.knots else float(TOP)
        if i == 0:
            return self.knots[0][1] if self.knots[0][0] == t else float(TOP)
        (t0, y0), (t1, y1) = self.knots[i - 1], self.knots[i]
        return y0 + (y1 - y0) * (t - t0) / (t1 - t0)


def _f(v: float) -> str:
    return f"{v:.1f}"


class _Lanes:
    """Text at nearly the same height would overlap: each lane pushes the next label down."""

    def __init__(self, step: float = 13.0):
        self.step = step
        self.last: dict[str, float] = {}

    def place(self, lane: str, y: float) -> float:
        y = max(y, self.last.get(lane, -1e9) + self.step)
        self.last[lane] = y
        return y


def render(trace: TraceIndex | Iterable[dict]) -> str:
    """ladder.svg's text for the trace: its index, or its records in trace order."""
    ix = TraceIndex.of(trace)
    hosts = _hosts(ix)
    if len(hosts) < 2:
        raise ValueError("the trace has fewer than two hosts with packets or states: nothing to draw")
    col = dict(zip(hosts, COL_X))
    packets = [r for h in hosts for r in ix.kind(Kind.PACKET, h)]
    packets.sort(key=ix.position)
    states = [r for h in hosts for r in ix.kind(Kind.STATE, h)]
    states.sort(key=ix.position)
    pairs = {id(o): i for o, i in ix.pairs if o["host"] in col and i["host"] in col}
    arrived = {id(i) for i in pairs.values()}
    sent = {id(p): p["t"] - ix.delay_at(p["host"], p["t"]) for p in packets if p["dir"] == Direction.OUT}
    scale = _Timescale([r["t"] for r in packets + states] + list(sent.values()))
    lanes = _Lanes()
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{_f(scale.height)}" '
           f'viewBox="0 0 {WIDTH} {_f(scale.height)}" font-family="monospace" font-size="11">',
           '<style>text{paint-order:stroke;stroke:white;stroke-width:3px}</style>',
           '<defs><marker id="head" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
           '<path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>']
    for h in hosts:
        x = col[h]
        out.append(f'<text class="host" x="{x}" y="30" text-anchor="middle" font-size="14" '
                   f'font-weight="bold">{escape(h)}</text>')
        out.append(f'<line class="timeline" x1="{x}" y1="{TOP - 20}" x2="{x}" y2="{_f(scale.height - 10)}" '
                   f'stroke="#999" stroke-width="2"/>')
    for y, gap in scale.breaks:
        out.append(f'<text class="gap" x="{WIDTH // 2}" y="{_f(y)}" text-anchor="middle" fill="#777">'
                   f'~ {gap:.1f} s ~</text>')
    for r in states:
        x, y = col[r["host"]], lanes.place(r["host"], scale.y(r["t"]))
        left = r["host"] == hosts[0]
        tx, anchor = (x - 10, "end") if left else (x + 10, "start")
        name = f"{r['to']} (listener)" if is_listener(r) else r["to"]
        out.append(f'<text class="state" x="{tx}" y="{_f(y + 4)}" text-anchor="{anchor}" fill="#06c">'
                   f'{escape(name)} <tspan fill="#999">{r["t"]:.3f} s</tspan></text>')
    for p in packets:
        if p["dir"] == Direction.IN and id(p) in arrived:
            continue  # drawn with its departure
        sender = p["host"] if p["dir"] == Direction.OUT else next(h for h in hosts if h != p["host"])
        receiver = next(h for h in hosts if h != sender)
        t0 = sent.get(id(p), p["t"])
        t1 = pairs[id(p)]["t"] if id(p) in pairs else p["t"]
        x0, x1, y0, y1 = col[sender], col[receiver], scale.y(t0), scale.y(t1)
        if p["dir"] == Direction.IN:  # only the receiver captured it: drawn level, ending at its arrival
            y0 = y1
        retrans = is_retransmission(p)
        dash = ' stroke-dasharray="6,4"' if retrans else ""
        out.append(f'<line class="segment{" retransmission" if retrans else ""}" x1="{x0}" y1="{_f(y0)}" '
                   f'x2="{x1}" y2="{_f(y1)}" stroke="{"#999" if retrans else "#333"}"{dash} '
                   f'marker-end="url(#head)"/>')
        mx, my = (x0 + x1) / 2, lanes.place("labels", (y0 + y1) / 2 - 4)
        out.append(f'<text class="label" x="{_f(mx)}" y="{_f(my)}" text-anchor="middle" '
                   f'fill="{"#999" if retrans else "#000"}">{escape(packet_info(p))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(run_dir: Path, trace: TraceIndex | Iterable[dict]) -> Path:
    """ladder.svg in ``run_dir``, from the trace's index (or its records)."""
    return atomic_write(Path(run_dir) / "ladder.svg", render(trace))
