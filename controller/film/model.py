"""What every view of a run shows, computed from the trace's index alone.

The browser film, the terminal replay and story.md all read one :class:`Film`, made by :func:`build`
from a :class:`~controller.trace.TraceIndex` (or from a list of records, indexed first). The film reads
the trace through the index's views (records by kind and host, segment pairs, roles, delays); it never
sorts raw records by kind itself. ``Film.records`` is that index, a sequence of the trace's records:
``film.records[i]`` is trace record ``i``.

- the hosts' roles: the server is the host that listened (the seed's thinkpad, blue), the client the
  one that connected (raspberrypi, red);
- the packet list as Wireshark shows it (No., Time, Source, Destination, Protocol, Length, Info),
  one row per packet record, i.e. per host's capture;
- each host's *connection state*, the one state the RFC 9293 diagram shows per side: LISTEN or
  CLOSED from its listener until it has a connection socket, then that socket's state (CLOSED once
  it has gone, even while the listener stays open: the connection is what the film follows);
- every state change with its cause: the packet that arrived, the application's call (the scenario
  step), or the timer;
- the moments a viewer steps through: steps, shaping, packets, kernel events, state changes and
  console lines (netstat records are the panes' backdrop, not moments of their own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.trace import Direction, Kind, StepStatus, TraceIndex
from controller.trace.schema import LISTENER_REMOTE, is_listener
from tcplab.tcpstates import NAMES as STATES

__all__ = ["CALL_WORDS", "Film", "LISTENER_REMOTE", "MOMENT_KINDS", "RFC_TRANSITIONS", "STATES", "Transition",
           "build", "is_listener", "is_retransmission", "port_of", "record_cause", "wireshark_info"]

# RFC 9293 section 3.3.2, figure 5: every transition of the diagram, with its event / action.
RFC_TRANSITIONS = {
    ("CLOSED", "LISTEN"): "passive OPEN / create TCB",
    ("CLOSED", "SYN_SENT"): "active OPEN / create TCB, snd SYN",
    ("LISTEN", "CLOSED"): "CLOSE / delete TCB",
    ("LISTEN", "SYN_RECEIVED"): "rcv SYN / snd SYN,ACK",
    ("LISTEN", "SYN_SENT"): "SEND / snd SYN",
    ("SYN_RECEIVED", "LISTEN"): "rcv RST",
    ("SYN_SENT", "SYN_RECEIVED"): "rcv SYN / snd SYN,ACK",
    ("SYN_SENT", "CLOSED"): "CLOSE / delete TCB",
    ("SYN_RECEIVED", "ESTABLISHED"): "rcv ACK of SYN",
    ("SYN_SENT", "ESTABLISHED"): "rcv SYN,ACK / snd ACK",
    ("SYN_RECEIVED", "FIN_WAIT1"): "CLOSE / snd FIN",
    ("ESTABLISHED", "FIN_WAIT1"): "CLOSE / snd FIN",
    ("ESTABLISHED", "CLOSE_WAIT"): "rcv FIN / snd ACK",
    ("FIN_WAIT1", "FIN_WAIT2"): "rcv ACK of FIN",
    ("FIN_WAIT1", "CLOSING"): "rcv FIN / snd ACK",
    ("CLOSE_WAIT", "LAST_ACK"): "CLOSE / snd FIN",
    ("FIN_WAIT2", "TIME_WAIT"): "rcv FIN / snd ACK",
    ("CLOSING", "TIME_WAIT"): "rcv ACK of FIN",
    ("LAST_ACK", "CLOSED"): "rcv ACK of FIN",
    ("TIME_WAIT", "CLOSED"): "Timeout=2MSL / delete TCB",
}

# The transitions an arriving segment causes, and the flags it must carry (RST is handled apart).
_BY_PACKET = {
    ("LISTEN", "SYN_RECEIVED"): {"SYN"},
    ("CLOSED", "SYN_RECEIVED"): {"SYN"},
    ("SYN_SENT", "SYN_RECEIVED"): {"SYN"},
    ("SYN_SENT", "ESTABLISHED"): {"SYN", "ACK"},
    ("SYN_RECEIVED", "ESTABLISHED"): {"ACK"},
    ("ESTABLISHED", "CLOSE_WAIT"): {"FIN"},
    ("FIN_WAIT1", "FIN_WAIT2"): {"ACK"},
    ("FIN_WAIT1", "CLOSING"): {"FIN"},
    ("FIN_WAIT1", "TIME_WAIT"): {"FIN", "ACK"},
    ("FIN_WAIT2", "TIME_WAIT"): {"FIN"},
    ("CLOSING", "TIME_WAIT"): {"ACK"},
    ("LAST_ACK", "CLOSED"): {"ACK"},
    ("SYN_RECEIVED", "LISTEN"): {"RST"},
}
# The transitions the application's call causes, by the step's action.
_BY_CALL = {
    ("CLOSED", "LISTEN"): ("listen",),
    ("CLOSED", "SYN_SENT"): ("connect",),
    ("ESTABLISHED", "FIN_WAIT1"): ("close", "shutdown"),
    ("SYN_RECEIVED", "FIN_WAIT1"): ("close",),
    ("CLOSE_WAIT", "LAST_ACK"): ("close", "shutdown"),
    ("LISTEN", "CLOSED"): ("close", "abort"),
    ("SYN_SENT", "CLOSED"): ("close", "abort"),
}
# transitions only the application's call makes (no segment, no timer)
_ONLY_BY_CALL = {("ESTABLISHED", "FIN_WAIT1"), ("CLOSE_WAIT", "LAST_ACK"), ("SYN_RECEIVED", "FIN_WAIT1"),
                 ("LISTEN", "CLOSED")}
CALL_WORDS = {"listen": "the application listens (nc -l)", "connect": "the application connects (nc)",  # one connection
              "close": "the application closes its socket", "abort": "the application aborts (RST)",
              "shutdown": "the application shuts its sending side (a half-close: it still reads)"}
TIME_WAIT_S = 60.0

MOMENT_KINDS = (Kind.STEP, Kind.SHAPER, Kind.PACKET, Kind.KERNEL, Kind.STATE, Kind.CONSOLE)


FLAG_ORDER = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def port_of(addr: str) -> str:
    return addr.rsplit(":", 1)[-1]


def is_retransmission(p: dict) -> bool:
    return bool({"retransmission", "fast_retransmission", "spurious_retransmission"} & set(p.get("analysis", [])))


_ANALYSIS_PREFIX = (("spurious_retransmission", "TCP Spurious Retransmission"),
                    ("fast_retransmission", "TCP Fast Retransmission"),
                    ("retransmission", "TCP Retransmission"), ("out_of_order", "TCP Out-Of-Order"),
                    ("duplicate_ack", "TCP Dup ACK"), ("keep_alive_ack", "TCP Keep-Alive ACK"),
                    ("keep_alive", "TCP Keep-Alive"), ("zero_window_probe", "TCP ZeroWindowProbe"),
                    ("zero_window", "TCP ZeroWindow"), ("window_full", "TCP Window Full"),
                    ("window_update", "TCP Window Update"),
                    ("previous_segment_not_captured", "TCP Previous segment not captured"),
                    ("ack_of_unseen_segment", "TCP ACKed unseen segment"))


def wireshark_info(p: dict) -> str:
    """The Info column as Wireshark writes it, e.g. ``34660 → 9090 [SYN] Seq=0 Win=64240 Len=0``.

    The window is the one on the wire (the trace does not keep the scale factor) and TCP options are
    not in the trace, so they are not listed.
    """
    flags = sorted(p.get("flags", []), key=lambda f: FLAG_ORDER.index(f) if f in FLAG_ORDER else 99)
    text = f"{port_of(p['src'])} → {port_of(p['dst'])} [{', '.join(flags)}] Seq={p.get('seq', 0)}"
    if "ACK" in flags:
        text += f" Ack={p.get('ack', 0)}"
    text += f" Win={p.get('win', 0)} Len={p.get('len', 0)}"
    names = set(p.get("analysis", []))
    for name, label in _ANALYSIS_PREFIX:
        if name in names:
            text = f"[{label}] {text}"
            break  # Wireshark shows the most important one
    return text


@dataclass
class Transition:
    """A change of a host's connection state, the one the diagram shows."""
    host: str
    t: float
    frm: str
    to: str
    record: int                 # index of the state record in the trace
    cause: str                  # "packet", "call", "timer" or "unknown"
    because: str                # the cause in words
    packet: int | None = None   # the packet row (No.) that caused it
    step: int | None = None     # the scenario step whose call caused it
    rfc: str | None = None      # the RFC figure's label of this transition, None when it is not in the figure

    def as_dict(self) -> dict:
        from controller import rfc9293  # it reads this module's figure
        return {"host": self.host, "t": self.t, "from": self.frm, "to": self.to, "record": self.record,
                "cause": self.cause, "because": self.because, "packet": self.packet, "step": self.step,
                "rfc": self.rfc, "rule": None if self.rfc else rfc9293.TEXT.get((self.frm, self.to))}


@dataclass
class Film:
    records: TraceIndex                            # the trace's index: records[i] is trace record i
    hosts: list[str]                               # server first, then client
    roles: dict[str, str]                          # host -> "server" | "client"
    packets: list[dict] = field(default_factory=list)      # rows, No. = index + 1
    transitions: list[Transition] = field(default_factory=list)
    moments: list[int] = field(default_factory=list)       # trace indexes a viewer steps through
    packet_no: dict[int, int] = field(default_factory=dict)  # trace index -> packet No.
    port: str | None = None                        # the lab port (:func:`lab_port`)

    def server(self) -> str:
        return self.hosts[0]

    def client(self) -> str:
        return self.hosts[1]

    def state_at(self, host: str, record: int) -> str:
        """The host's connection state once trace record ``record`` has happened."""
        state = "CLOSED"
        for tr in self.transitions:
            if tr.host == host and tr.record <= record:
                state = tr.to
        return state


def lab_port(ix: TraceIndex) -> str | None:
    """The lab port: the listener's, else the one a client connected to, else the server's side of the
    first segment captured."""
    listener = next((r for r in ix.kind(Kind.STATE) if is_listener(r)), None)
    if listener is not None:
        return port_of(listener["local"])
    connect = next((r for r in ix.kind(Kind.STATE) if r["to"] == "SYN_SENT"), None)
    if connect is not None:
        return port_of(connect["remote"])
    server = ix.server
    for r in ix.kind(Kind.PACKET):
        return port_of(r["src"] if ix.host_of(r["src"], r["src"]) == server else r["dst"])
    return None


def _packet_rows(ix: TraceIndex) -> tuple[list[dict], dict[int, int]]:
    rows, numbers = [], {}
    for r in ix.kind(Kind.PACKET):
        i = ix.position(r)
        numbers[i] = len(rows) + 1
        src_ip, dst_ip = r["src"].rsplit(":", 1)[0], r["dst"].rsplit(":", 1)[0]
        rows.append({"no": len(rows) + 1, "record": i, "t": r["t"], "host": r["host"], "dir": r["dir"],
                     "source": src_ip, "destination": dst_ip, "protocol": "TCP",
                     "length": r.get("frame_len"), "info": wireshark_info(r),
                     "retransmission": is_retransmission(r), "flags": list(r.get("flags", [])),
                     "payload": r.get("payload", "")})
    return rows, numbers


def _latest_step(ix: TraceIndex, i: int, host: str) -> dict | None:
    """The latest step started on ``host`` at or before record ``i``."""
    return next((s for s in reversed(ix.span(Kind.STEP, 0, i + 1)) if s["status"] == StepStatus.START
                 and host in s["target"].split(",")), None)


def _cause(ix: TraceIndex, i: int, frm: str, to: str, numbers: dict[int, int],
           entered: dict[str, float]) -> tuple[str, str, int | None, int | None]:
    r = ix[i]
    host = r["host"]
    calls = _BY_CALL.get((frm, to))
    if calls:  # the call of the host's latest step, if that step made it
        step = _latest_step(ix, i, host)
        if step is not None and step["action"] in calls:
            return "call", f"step {step['index']}: {call_words(step)}", None, step["index"]
        if (frm, to) in _ONLY_BY_CALL:  # nothing else makes it: the application did, unasked
            return "call", "the application closed its socket on its own (no scenario step asked it to)", \
                None, None
    needs = _BY_PACKET.get((frm, to))
    if needs is None and to == "CLOSED":
        needs = {"RST"}
    if needs:
        for p in reversed(ix.span(Kind.PACKET, 0, i, host)):
            if p["dir"] == Direction.IN \
                    and p["dst"] == r["local"] and (is_listener(r) or p["src"] == r["remote"] or frm == "LISTEN") \
                    and needs <= set(p.get("flags", [])):
                return "packet", f"{', '.join(p['flags'])} arrived ({wireshark_info(p)})", numbers[ix.position(p)], \
                    None
    if (frm, to) == ("TIME_WAIT", "CLOSED"):
        waited = r["t"] - entered.get("TIME_WAIT", r["t"])
        return "timer", f"the TIME_WAIT timer (2 MSL, {TIME_WAIT_S:g} s on Linux) ran out after {waited:.1f} s", \
            None, None
    if to == "CLOSED":  # no RST seen: an abort, or a close of a socket that had no connection yet
        step = _latest_step(ix, i, host)
        if step is not None and (step["action"] == "abort"
                                 or (step["action"] == "close" and frm in ("LISTEN", "SYN_SENT", "SYN_RECEIVED"))):
            return "call", f"step {step['index']}: {call_words(step)}", None, step["index"]
    return "unknown", "not seen in the trace", None, None


def call_words(step: dict) -> str:
    """What a step's call is, in words: nc's, or for many or named connections the probe's own
    application's (its record's ``app``), with the record's ``detail``."""
    words = CALL_WORDS[step["action"]]
    parts = [*([step["detail"]] if step.get("detail") else []), *(["the probe's own application"] if step.get("app") else [])]
    if step["action"] in ("listen", "connect") and parts:
        words = words.rsplit(" (", 1)[0] + f" ({', '.join(parts)})"
    return words


def _transitions(ix: TraceIndex, hosts: list[str], numbers: dict[int, int]) -> list[Transition]:
    """Each host's connection-state changes, the states the RFC diagram shows for that side.

    Before the host has a connection socket the diagram follows its listener (CLOSED, LISTEN); from
    then on it follows the connection socket. A new connection socket takes over once the one
    followed is in TIME_WAIT or CLOSED (a client that reconnects; a server that accepts again): the
    diagram jumps to the new socket's state, a transition from that socket's own ``from``. A
    connection reset in SYN_RECEIVED while the listener is open goes back to LISTEN, as in the RFC.
    """
    out: list[Transition] = []
    for host in hosts:
        listener, conn, shown = "CLOSED", None, "CLOSED"
        entered: dict[str, float] = {}
        for r in ix.kind(Kind.STATE, host):
            i = ix.position(r)
            frm = shown
            if is_listener(r):
                listener = r["to"]
            elif conn is None or conn[0] == (r["local"], r["remote"]):
                conn = ((r["local"], r["remote"]), r["to"])
            elif conn[1] in ("TIME_WAIT", "CLOSED"):
                conn, frm = ((r["local"], r["remote"]), r["to"]), r["from"]
            else:
                continue  # a second connection while the first is open: the diagram shows the first
            now = conn[1] if conn else ("LISTEN" if listener == "LISTEN" else "CLOSED")
            if now == "CLOSED" and r.get("from") == "SYN_RECEIVED" and listener == "LISTEN" and not is_listener(r):
                now = "LISTEN"
            if now == shown and frm == shown:
                continue
            cause, because, pkt, step = _cause(ix, i, frm, now, numbers, entered)
            if frm != shown:
                because = f"a new connection ({r['local']} ↔ {r['remote']}): {because}"
            entered[now] = r["t"]
            out.append(Transition(host, r["t"], frm, now, i, cause, because, pkt, step,
                                  RFC_TRANSITIONS.get((frm, now))))
            shown = now
    out.sort(key=lambda tr: tr.record)
    return out


def build(trace: TraceIndex | Iterable[dict]) -> Film:
    """The film of a trace: its index, or its records in trace order (indexed here).

    ValueError when the trace has fewer than two hosts (the index's roles)."""
    ix = TraceIndex.of(trace)
    roles = ix.roles
    hosts = list(roles)
    rows, numbers = _packet_rows(ix)
    moments = sorted(ix.position(r) for kind in MOMENT_KINDS for r in ix.kind(kind)
                     if not (kind == Kind.STEP and r["status"] == StepStatus.OK))
    return Film(ix, hosts, dict(roles), rows, _transitions(ix, hosts, numbers), moments, numbers, lab_port(ix))


def record_cause(film: Film, i: int) -> tuple[str, str, int | None, int | None]:
    """The cause of state record ``i`` by the socket's own from/to, also for a change the diagram does not
    show (the listener closing while the connection is open): ``(cause, because, packet No., step)``."""
    ix = film.records
    r = ix[i]
    entered = {s["to"]: s["t"] for s in ix.sockets[r["host"], r["local"], r["remote"]] if ix.position(s) < i}
    return _cause(ix, i, r["from"], r["to"], film.packet_no, entered)
