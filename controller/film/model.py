"""What every view of a run shows, computed from trace.jsonl alone.

The browser film, the terminal replay and story.md all read one :class:`Film`:

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

from dataclasses import dataclass, field

LISTENER_REMOTE = "0.0.0.0:*"

STATES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2",
          "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

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
    ("ESTABLISHED", "FIN_WAIT1"): ("close",),
    ("SYN_RECEIVED", "FIN_WAIT1"): ("close",),
    ("CLOSE_WAIT", "LAST_ACK"): ("close",),
    ("LISTEN", "CLOSED"): ("close", "abort"),
    ("SYN_SENT", "CLOSED"): ("close", "abort"),
}
# transitions only the application's call makes (no segment, no timer)
_ONLY_BY_CALL = {("ESTABLISHED", "FIN_WAIT1"), ("CLOSE_WAIT", "LAST_ACK"), ("SYN_RECEIVED", "FIN_WAIT1"),
                 ("LISTEN", "CLOSED")}
CALL_WORDS = {"listen": "the application listens (nc -l)", "connect": "the application connects (nc)",
              "close": "the application closes its socket", "abort": "the application aborts (RST)"}
TIME_WAIT_S = 60.0

MOMENT_KINDS = ("step", "shaper", "packet", "kernel", "state", "console")


FLAG_ORDER = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def is_listener(r: dict) -> bool:
    return r.get("remote") == LISTENER_REMOTE


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
        return {"host": self.host, "t": self.t, "from": self.frm, "to": self.to, "record": self.record,
                "cause": self.cause, "because": self.because, "packet": self.packet, "step": self.step,
                "rfc": self.rfc}


@dataclass
class Film:
    records: list[dict]
    hosts: list[str]                               # server first, then client
    roles: dict[str, str]                          # host -> "server" | "client"
    packets: list[dict] = field(default_factory=list)      # rows, No. = index + 1
    transitions: list[Transition] = field(default_factory=list)
    moments: list[int] = field(default_factory=list)       # trace indexes a viewer steps through
    packet_no: dict[int, int] = field(default_factory=dict)  # trace index -> packet No.

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


def _roles(records: list[dict]) -> tuple[list[str], dict[str, str]]:
    """[server, client]: by the scenario's steps (listen, connect), else by the sockets (a listener or a
    SYN_RECEIVED socket makes a server, a SYN_SENT one a client), else in the order the hosts appear."""
    hosts: list[str] = []
    for r in records:
        if r["host"] != "controller" and r["kind"] in ("packet", "state", "console", "netstat") \
                and r["host"] not in hosts:
            hosts.append(r["host"])
    if len(hosts) < 2:
        raise ValueError("the trace has fewer than two hosts: nothing to film")

    def first(match) -> str | None:
        return next((h for r in records if match(r) for h in r.get("target", r["host"]).split(",") if h in hosts),
                    None)

    server = first(lambda r: r["kind"] == "step" and r["action"] == "listen")
    client = first(lambda r: r["kind"] == "step" and r["action"] == "connect")
    server = server or first(lambda r: r["kind"] == "state" and r["to"] in ("LISTEN", "SYN_RECEIVED")
                             and r["host"] != client)
    client = client or first(lambda r: r["kind"] == "state" and r["to"] == "SYN_SENT" and r["host"] != server)
    server = server or next((h for h in hosts if h != client), hosts[0])
    client = client if client and client != server else next(h for h in hosts if h != server)
    return [server, client], {server: "server", client: "client"}


def _packet_rows(records: list[dict]) -> tuple[list[dict], dict[int, int]]:
    rows, numbers = [], {}
    for i, r in enumerate(records):
        if r["kind"] != "packet":
            continue
        numbers[i] = len(rows) + 1
        src_ip, dst_ip = r["src"].rsplit(":", 1)[0], r["dst"].rsplit(":", 1)[0]
        rows.append({"no": len(rows) + 1, "record": i, "t": r["t"], "host": r["host"], "dir": r["dir"],
                     "source": src_ip, "destination": dst_ip, "protocol": "TCP",
                     "length": r.get("frame_len"), "info": wireshark_info(r),
                     "retransmission": is_retransmission(r), "flags": list(r.get("flags", [])),
                     "payload": r.get("payload", "")})
    return rows, numbers


def _latest_step(records: list[dict], i: int, host: str) -> dict | None:
    """The latest step started on ``host`` at or before record ``i``."""
    for j in range(i, -1, -1):
        s = records[j]
        if s["kind"] == "step" and s["status"] == "start" and host in s["target"].split(","):
            return s
    return None


def _cause(records: list[dict], i: int, frm: str, to: str, numbers: dict[int, int],
           entered: dict[str, float]) -> tuple[str, str, int | None, int | None]:
    r = records[i]
    host = r["host"]
    calls = _BY_CALL.get((frm, to))
    if calls:  # the call of the host's latest step, if that step made it
        step = _latest_step(records, i, host)
        if step is not None and step["action"] in calls:
            return "call", f"step {step['index']}: {CALL_WORDS[step['action']]}", None, step["index"]
        if (frm, to) in _ONLY_BY_CALL:  # nothing else makes it: the application did, unasked
            return "call", "the application closed its socket on its own (no scenario step asked it to)", \
                None, None
    needs = _BY_PACKET.get((frm, to))
    if needs is None and to == "CLOSED":
        needs = {"RST"}
    if needs:
        for j in range(i - 1, -1, -1):
            p = records[j]
            if p["kind"] == "packet" and p["host"] == host and p["dir"] == "in" \
                    and p["dst"] == r["local"] and (is_listener(r) or p["src"] == r["remote"] or frm == "LISTEN") \
                    and needs <= set(p.get("flags", [])):
                return "packet", f"{', '.join(p['flags'])} arrived ({wireshark_info(p)})", numbers[j], None
    if (frm, to) == ("TIME_WAIT", "CLOSED"):
        waited = r["t"] - entered.get("TIME_WAIT", r["t"])
        return "timer", f"the TIME_WAIT timer (2 MSL, {TIME_WAIT_S:g} s on Linux) ran out after {waited:.1f} s", \
            None, None
    if to == "CLOSED":  # no RST seen: an abort, or a close of a socket that had no connection yet
        step = _latest_step(records, i, host)
        if step is not None and (step["action"] == "abort"
                                 or (step["action"] == "close" and frm in ("LISTEN", "SYN_SENT", "SYN_RECEIVED"))):
            return "call", f"step {step['index']}: {CALL_WORDS[step['action']]}", None, step["index"]
    return "unknown", "not seen in the trace", None, None


def _transitions(records: list[dict], hosts: list[str], numbers: dict[int, int]) -> list[Transition]:
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
        for i, r in enumerate(records):
            if r["kind"] != "state" or r["host"] != host:
                continue
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
            cause, because, pkt, step = _cause(records, i, frm, now, numbers, entered)
            if frm != shown:
                because = f"a new connection ({r['local']} ↔ {r['remote']}): {because}"
            entered[now] = r["t"]
            out.append(Transition(host, r["t"], frm, now, i, cause, because, pkt, step,
                                  RFC_TRANSITIONS.get((frm, now))))
            shown = now
    out.sort(key=lambda tr: tr.record)
    return out


def build(records: list[dict]) -> Film:
    hosts, roles = _roles(records)
    rows, numbers = _packet_rows(records)
    film = Film(records, hosts, roles, rows, _transitions(records, hosts, numbers),
                [i for i, r in enumerate(records) if r["kind"] in MOMENT_KINDS
                 and not (r["kind"] == "step" and r["status"] == "ok")], numbers)
    return film


def record_cause(film: Film, i: int) -> tuple[str, str, int | None, int | None]:
    """The cause of state record ``i`` by the socket's own from/to, also for a change the diagram does not
    show (the listener closing while the connection is open): ``(cause, because, packet No., step)``."""
    r = film.records[i]
    entered = {s["to"]: s["t"] for s in film.records[:i] if s["kind"] == "state"
               and (s["host"], s["local"], s["remote"]) == (r["host"], r["local"], r["remote"])}
    return _cause(film.records, i, r["from"], r["to"], film.packet_no, entered)
