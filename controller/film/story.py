"""story.md: the run told in plain words, from trace.jsonl alone, as the seed's storyline tells it.

One section per scenario step (what the controller asked for, and which part of the connection's life
it is: the three-way handshake, data, the close, TIME_WAIT running out), each a list of timestamped
moments: who sent which segment and when it arrived (a segment is captured twice, leaving one host and
arriving at the other; it is told once), every state record of both hosts as ``host: FROM → TO`` with
what it means (controller.report.WHY) and its cause (the packet, the application's call or the timer,
from controller.film.model), retransmissions and why they happened, the kernel's retransmit and reset
events, what was typed and printed, shaping, and a failed step's error. In one step, what more than
eight connections do alike (the same change, segment or line) is told for the first and then counted
in one line (:data:`MANY`): the story of 200 clients stays one to read. Nothing but the trace is
read, so rendering twice gives the same text.

:func:`render` and :func:`write` take the trace's index (:class:`~controller.trace.TraceIndex`) or its
records in trace order (indexed first); every fact is read through the index's views (records by kind
and host, segment pairs, hosts by address, the delay at a time) and the film model.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from controller import rfc9293
from controller.film import model
from controller.film.visible import visible
from controller.film.words import (ANALYSIS, CLOSED_BY, CLOSING, KERNEL, PHASES, and_list, code, knobs, later,
                                   seq_end, shortened, stamp)
from controller.report import WHY
from controller.trace import Direction, Kind, StepStatus, Stream, TraceIndex
from tcplab.files import atomic_write
from tcplab.impairment import of_record


# In one step, what more than this many connections do alike (the same change, segment, line) is told
# for the first and then counted in one line: a story of 200 clients tells each kind of thing twice.
MANY = 8


def _connection(r: dict) -> frozenset:
    """The connection a record is of (its two addresses, either way round)."""
    return frozenset((r.get("local"), r.get("remote")) if "local" in r else (r.get("src"), r.get("dst")))


class _Story:
    def __init__(self, trace: TraceIndex | Iterable[dict]):
        self.film = model.build(trace)
        self.ix = self.records = self.film.records
        self.by_record = {tr.record: tr for tr in self.film.transitions}
        self.shaping: dict[str, tuple] = {}
        self.actions = {r["index"]: r["action"] for r in self.ix.steps()}
        # segments that take sequence space (SYN, FIN, data), by (src, dst, end): what an Ack can acknowledge
        self.ends: dict[tuple, list[int]] = defaultdict(list)
        for r in self.ix.kind(Kind.PACKET):
            if seq_end(r) > r.get("seq", 0) and (r["dir"] == Direction.OUT or self.ix.pair_of(r) is None):
                self.ends[r["src"], r["dst"], seq_end(r)].append(self.ix.position(r))
        self.port = self.film.port
        # per host, where each of its applications started and whether it is the probe's own (not nc)
        self.apps: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        for st in self.ix.steps(StepStatus.START):
            if st["action"] in ("listen", "connect"):
                self.apps[st["target"]].append((self.ix.position(st), bool(st.get("app"))))

    def host(self, addr: str) -> str:
        """The host of an address ("ip:port" or "ip"), or the address when no capture names it."""
        return self.ix.host_of(addr, addr)

    # ---- facts -------------------------------------------------------------------------------
    def intro(self) -> list[str]:
        film, ix = self.film, self.ix
        server, client = film.server(), film.client()
        sockets = {h: mine[0]["local"] for h in (server, client) if (mine := ix.states(h, listener=False))}
        listened = any(r["to"] == "LISTEN" for r in ix.states(server))
        port = f" on port {self.port}" if self.port else ""
        text = [f"# The run in plain words: {server} (server) and {client} (client)", ""]
        text.append(f"**{server}** is the server: " + (f"its application listened{port}" if listened
                    else "it was to accept the connection") + (f" ({sockets[server]})." if server in sockets else ".")
                    + f" **{client}** is the client: it connected"
                    + (f" from {sockets[client]}." if client in sockets else "."))
        shaped = {}
        for r in ix.kind(Kind.SHAPER):
            if r.get("backend"):
                shaped.setdefault(r["host"], (of_record(r), r["backend"]))
        if shaped:
            parts = [f"for {imp.delay_ms:g} ms" + "".join(f", {w}" for w in imp.doing()) + f" ({backend})"
                     for imp, backend in shaped.values()]
            if len(shaped) == 2 and len(set(parts)) == 1:
                held = f"Both hosts held every segment{port} {parts[0]} before it left"
            else:
                held = f"Each host held every segment{port} before it left: " + and_list(
                    [f"{h} {part}" for h, part in sorted(zip(shaped, parts))])
            text.append(f"{held}. So the connection "
                        "runs in slow motion; a segment's time below is when it left, after the delay, and its "
                        "TCP sent it that much earlier.")
        else:
            text.append("No delay was applied.")
        steps = sorted({r["index"] for r in ix.steps()})
        failed = [r["index"] for r in ix.steps(StepStatus.FAILED)]
        segments = [r for r in ix.kind(Kind.PACKET) if not (r["dir"] == Direction.IN and ix.pair_of(r) is not None)]
        again = sum(1 for r in segments if self._analysis(r) & {"retransmission"})
        last = ix[-1]["t"] if len(ix) else 0.0
        text += ["", f"The run took {last:.1f} s in {len(steps)} steps"
                 + (f" (step {and_list([str(i) for i in failed])} failed)" if failed else "")
                 + f"; {len(segments)} segments crossed, {again} of them retransmissions. Times are seconds since "
                 "the run started, on the controller's clock; No. is a packet's row in the film's packet list "
                 "(one row per host's capture)."]
        return text

    # ---- segments ----------------------------------------------------------------------------
    def _analysis(self, r: dict) -> set[str]:
        other = self.ix.pair_of(r)
        return set(r.get("analysis", [])) | set(other.get("analysis", []) if other else [])

    def _acked(self, p: dict) -> str:
        """What an ACK acknowledges: the peer's latest segment that ends at its Ack."""
        candidates = self.ends.get((p["dst"], p["src"], p.get("ack")), [])
        before = bisect_left(candidates, self.ix.position(p))
        if before:
            r = self.records[candidates[before - 1]]
            return f" that acknowledges {self.host(r['src'])}'s {self._noun(r, short=True)}"
        return f" (Ack={p.get('ack')})"

    def _noun(self, p: dict, short: bool = False) -> str:
        flags = set(p.get("flags", []))
        if "RST" in flags:
            return "RST" if short else "a RST, which resets the connection"
        if {"SYN", "ACK"} <= flags:
            return "SYN+ACK" if short else "the SYN+ACK: it accepts the connection and acknowledges the SYN"
        if "SYN" in flags:
            return "SYN" if short else "a SYN: it asks for a connection"
        data = f"{p['len']} bytes {code(shortened(p.get('payload', '')))}" if p.get("len") else ""
        if "FIN" in flags:
            return "FIN" if short else (data + " and " if data else "") + f"a FIN: {self.host(p['src'])} has " \
                "nothing more to send"
        if data:
            return data if short else data + (", with PSH: push them to the application" if "PSH" in flags else "")
        return "ACK" if short else "an ACK" + self._acked(p)

    def _answer(self, p: dict) -> str:
        flags = set(p.get("flags", []))
        if {"SYN", "ACK"} <= flags:
            return "the ACK of its SYN+ACK"
        if "SYN" in flags:
            return "the SYN+ACK"
        return "the ACK of its FIN" if "FIN" in flags else "the ACK of its data"

    def _why_again(self, p: dict, sender: str, receiver: str) -> str:
        names = self._analysis(p)
        if "fast_retransmission" in names:
            return (f" This is a fast retransmission: duplicate ACKs told {sender} that the segment was missing, "
                    "before its timer ran out.")
        why = f" This is a retransmission: {sender}'s retransmission timer ran out while it waited for " \
              f"{self._answer(p)}"
        rtt = self.ix.delay_at(sender, p["t"]) + self.ix.delay_at(receiver, p["t"])
        if rtt:
            why += f" (with the delay an answer needs at least {rtt:g} s to come back)"
        if "spurious_retransmission" in names:
            why += "; Wireshark calls it spurious: the first copy had arrived, the answer was still on its way"
        return why + "."

    def segment(self, r: dict) -> str | None:
        other = self.ix.pair_of(r)
        if r["dir"] == Direction.IN and other is not None:
            return None  # told with its departure
        src_host, dst_host = self.host(r["src"]), self.host(r["dst"])
        again = "retransmission" in self._analysis(r)
        noun = (f"the {self._noun(r, short=True)} again" if again else self._noun(r))
        probe = {"keep_alive": "a keep-alive probe", "keep_alive_ack": "the answer to a keep-alive probe",
                 "zero_window_probe": "a zero-window probe"}
        noun = next((probe[a] for a in r.get("analysis", ()) if a in probe), noun)
        no = self.film.packet_no[self.ix.position(r)]
        info = f"`{model.wireshark_info(r)}`"
        if r["dir"] == Direction.OUT and other is not None:
            text = (f"{src_host} sends {noun}; it arrives at {dst_host} {later(other['t'] - r['t'])} "
                    f"(No. {no} → No. {self.film.packet_no[self.ix.position(other)]}): {info}.")
        elif r["dir"] == Direction.OUT:
            text = f"{src_host} sends {noun} (No. {no}), but {dst_host}'s capture never saw it arrive: {info}."
        else:
            text = f"{dst_host} receives {noun} from {src_host} (No. {no}); {src_host}'s capture did not see it " \
                   f"leave: {info}."
        if again:
            text += self._why_again(r, src_host, dst_host)
        elif "duplicate_ack" in self._analysis(r):
            text += " Wireshark marks it a duplicate ACK: it acknowledges nothing new."
        text += "".join(f" {ANALYSIS[a]}." for a in sorted(set(r.get("analysis", ())) & set(ANALYSIS)))
        return f"{stamp(r['t'])} — {text}"

    # ---- states ------------------------------------------------------------------------------
    def state(self, i: int, r: dict) -> str:
        host, frm, to = r["host"], r["from"], r["to"]
        tr = self.by_record.get(i)
        if tr is not None and (tr.frm, tr.to) == (frm, to):
            cause, because, pkt, index = tr.cause, tr.because, tr.packet, tr.step
        else:
            cause, because, pkt, index = model.record_cause(self.film, i)
        what = f" (its listening socket, {r['local']})" if model.is_listener(r) else ""
        how = self.actions.get(index) if cause == "call" else cause
        meaning = WHY.get((frm, to)) or (CLOSED_BY.get(how, CLOSED_BY["unknown"]) if to == "CLOSED" else "")
        if (frm, to) == ("SYN_SENT", "CLOSED") and cause == "packet":
            meaning = "a RST arrived: the server refused the connection"
        text = f"{stamp(r['t'])} — **{host}: {frm} → {to}**{what}" + (f": {meaning}." if meaning else ".")
        if frm == "LISTEN" and not model.is_listener(r):
            text += " It is a new socket for this connection; the listening socket stays open beside it."
        if cause == "packet":
            p = self.film.packets[pkt - 1]
            text += f" Cause: the {self._noun(self.records[p['record']], short=True)} from {self.host(p['source'])} " \
                    f"(No. {pkt})."
        elif cause == "timer":
            text += f" Cause: {because}."
        elif cause == "call":
            text += f" Cause: {because.replace(': ', ', ', 1)}."
        else:
            text += " The trace does not show its cause."
        if to == "TIME_WAIT":
            timer = self._timewait_timer(host, r)
            if timer:
                text += f" netstat shows its countdown: `{timer}`."
        return text + self._diagram(i, r, tr)

    def _timewait_timer(self, host: str, r: dict) -> str | None:
        for n in self.ix.span(Kind.NETSTAT, self.ix.position(r), host=host):
            if n["t"] > r["t"] + 2.0:
                break  # netstat shows a change within a second
            for row in n.get("rows", []):
                if row.get("state") == "TIME_WAIT" and row.get("local") == r["local"]:
                    return row.get("timer")
        return None

    def _diagram(self, i: int, r: dict, tr: model.Transition | None) -> str:
        host = r["host"]
        if tr is None:
            shown = self.film.state_at(host, i)
            return f" The diagram follows {host}'s {'' if model.is_listener(r) else 'other '}connection, which is " \
                   f"{shown}."
        note = "" if (tr.frm, tr.to) == (r["from"], r["to"]) else \
            f" On the diagram {host} goes from {tr.frm} to {tr.to}."
        other = next(h for h in self.film.hosts if h != host)
        if self.film.state_at(other, i) == tr.to:
            note += " Both sides are now CLOSED: the connection is over." if tr.to == "CLOSED" else \
                f" Both sides are now {tr.to}."
        return note

    # ---- the rest ----------------------------------------------------------------------------
    def kernel(self, r: dict) -> str:
        where = f"{r.get('local')} ↔ {r.get('remote')}" + (f", in {r['state']}" if r.get("state") else "")
        what = KERNEL.get(r["event"], "an event of its TCP")
        if r["event"] == "retransmit_skb" and r.get("state") == "SYN_SENT":
            what += " (the SYN: no SYN+ACK has come yet)"
        return f"{stamp(r['t'])} — {r['host']}'s kernel reports `{r['event']}` ({where}): {what}."

    def console(self, r: dict) -> str:
        text = code(shortened(r.get("text", "")))
        # the probe's own application (many, or named, connections) or nc: as the host's last listen or connect said
        started = self.apps.get(r["host"], [])
        at = bisect_left(started, (self.ix.position(r), False))
        own = bool(r.get("local")) or (at > 0 and started[at - 1][1])
        app = "the probe's application" if own else "nc"
        on = f" on {r['local']} ↔ {r['remote']}" if r.get("local") else ""
        if r.get("stream") == Stream.STDIN:
            return f"{stamp(r['t'])} — {r['host']}: {text} is typed into {app}{on}, which hands it to TCP to send."
        if r.get("stream") == Stream.STDERR:
            return f"{stamp(r['t'])} — {r['host']}: {app} reports {text} on stderr."
        return f"{stamp(r['t'])} — {r['host']}: {app} prints {text}{on}: the data has reached the application."

    def shaper(self, r: dict) -> str | None:
        imp = of_record(r)
        now = (r.get("backend"), imp)
        if self.shaping.get(r["host"], (None, None)) == now:
            return None  # nothing changed
        self.shaping[r["host"]] = now
        if imp is None:
            return f"{stamp(r['t'])} — {r['host']}: the delay is off."
        more = "".join(f", {w}" for w in imp.doing())
        port = f" of port {self.port}" if self.port else ""
        return f"{stamp(r['t'])} — {r['host']} now holds every outgoing segment{port} for {imp.delay_ms:g} ms before " \
               f"it leaves{more} ({r['backend']})."

    def heading(self, step: dict | None, lo: int, hi: int, end: dict | None) -> str:
        """The section's title: ``step`` and what happened at trace positions ``lo`` to ``hi``."""
        if step is None:
            return "## Before the first step"
        hosts = step["target"].split(",")
        act, who = step["action"], and_list(hosts)
        if act == "shape":
            first = next(iter(self.ix.span(Kind.SHAPER, lo, hi)), None)
            title = (f"the delay is switched on for {who}" if first and first.get("backend")
                     else f"the delay is switched off for {who}")
        elif act == "listen":
            title = f"{who}'s application listens" + (f" on port {self.port}" if self.port else "")
        elif act == "connect":
            title = f"{who}'s application connects to {and_list([h for h in self.film.hosts if h not in hosts])}"
        elif act == "send":
            typed = next((r["text"] for r in self.ix.span(Kind.CONSOLE, lo, hi) if r.get("stream") == Stream.STDIN),
                         None)
            title = f"{who} sends " + (code(typed) if typed is not None else "a line")
        elif act in ("close", "abort"):
            apps = and_list([f"{h}'s" for h in hosts]) + (" application " if len(hosts) == 1 else " applications ")
            title = apps + ({"close": "closes its socket", "abort": "aborts its connection"}[act] if len(hosts) == 1
                            else {"close": "close their sockets", "abort": "abort their connections"}[act])
        elif act == "read":
            title = f"{who}'s application " + (step.get("detail") or "stops or resumes reading")
        elif act == "keepalive":
            title = f"{who}'s application turns TCP keepalive on" + (f" ({step['detail']})" if step.get("detail")
                                                                     else "")
        elif act == "shutdown":
            title = f"{who}'s application shuts its sending side (a half-close: it still reads)"
        elif act == "wait":
            title = "waiting"
        else:
            title = f"{act} on {who}"
        phases = self._phases(lo, hi)
        if phases:
            title += " — " + and_list(phases)
        span = f"{step['t']:.3f} s" + (f" to {end['t']:.3f} s" if end else "")
        failed = " — FAILED" if end and end["status"] == StepStatus.FAILED else ""
        return f"## Step {step['index']}, {span}: {title}{failed}"

    def _phases(self, lo: int, hi: int) -> list[str]:
        seen = set()
        for r in self.ix.span(Kind.STATE, lo, hi):
            if model.is_listener(r):
                continue
            if r["to"] in ("SYN_SENT", "SYN_RECEIVED") or r["from"] in ("SYN_SENT", "SYN_RECEIVED") \
                    and r["to"] == "ESTABLISHED":
                seen.add("handshake")
            if r["to"] in CLOSING or r["from"] == "LAST_ACK":
                seen.add("close")
            if (r["from"], r["to"]) == ("TIME_WAIT", "CLOSED"):
                seen.add("timewait")
        for r in self.ix.span(Kind.PACKET, lo, hi):
            if r.get("len"):
                seen.add("data")
            if "RST" in r.get("flags", []):
                seen.add("reset")
        if any("reset" in r["event"] for r in self.ix.span(Kind.KERNEL, lo, hi)):
            seen.add("reset")
        return [words for key, words in PHASES if key in seen]

    def sysctl(self, r: dict) -> str:
        changed = and_list(knobs(r.get("values")))
        if r.get("restored"):
            return f"{stamp(r['t'])} — {r['host']}: its TCP knobs are put back as they were before the run: {changed}."
        return f"{stamp(r['t'])} — {r['host']} changes its TCP knobs for the run: {changed}."

    def failed(self, r: dict) -> str | None:
        if r["status"] != StepStatus.FAILED:
            return None
        return f"{stamp(r['t'])} — **step {r['index']} ({r['action']}) failed**: " \
               f"{r.get('error') or 'no reason was recorded'}"

    def told(self, lo: int, hi: int) -> list[str]:
        """What happened at trace positions ``lo`` to ``hi``, one line each, in trace order."""
        tellers = ((Kind.STEP, lambda i, r: self.failed(r)), (Kind.SHAPER, lambda i, r: self.shaper(r)),
                   (Kind.PACKET, lambda i, r: self.segment(r)), (Kind.KERNEL, lambda i, r: self.kernel(r)),
                   (Kind.STATE, self.state), (Kind.CONSOLE, lambda i, r: self.console(r)),
                   (Kind.SYSCTL, lambda i, r: self.sysctl(r)))
        said = sorted((self.ix.position(r), tell) for kind, tell in tellers for r in self.ix.span(kind, lo, hi))
        lines = [(self.ix[i], line) for i, tell in said if (line := tell(i, self.ix[i]))]
        keys = [self._alike(r) for r, _ in lines]
        spread: dict[tuple, set] = defaultdict(set)
        for (r, _), key in zip(lines, keys):
            if key is not None:
                spread[key].add(_connection(r))
        many = {key for key, conns in spread.items() if len(conns) > MANY}
        total = Counter(key for key in keys if key in many)
        out, seen, first = [], Counter(), {}
        for (r, line), key in zip(lines, keys):
            if key not in many:
                out.append(line)
                continue
            seen[key] += 1
            if seen[key] == 1:
                first[key] = r
                out.append(line)
            elif seen[key] == total[key]:
                out.append(self._more(key, first[key], r, total[key] - 1, len(spread[key])))
        return [f"- {line}" for line in out]

    def _alike(self, r: dict) -> tuple | None:
        """What makes a record alike another's for :meth:`told` (None: told each time): a socket's change,
        a segment's flags, a kernel event, a console line. (The diagram's own changes too: with many
        connections it takes up each one in turn as the one before reaches TIME_WAIT.)"""
        kind, host = r["kind"], r["host"]
        if kind == Kind.STATE:
            return kind, host, r["from"], r["to"]
        if kind == Kind.PACKET:
            return kind, host, r["dir"], tuple(r.get("flags", ())), bool(r.get("len")), tuple(sorted(self._analysis(r)))
        if kind == Kind.KERNEL:
            return kind, host, r["event"]
        if kind == Kind.CONSOLE:
            return kind, host, r.get("stream"), r.get("text")
        return None

    def _more(self, key: tuple, first: dict, last: dict, more: int, conns: int) -> str:
        kind, host = key[0], key[1]
        if kind == Kind.STATE:
            what = f"**{host}: {key[2]} → {key[3]}**"
        elif kind == Kind.PACKET:
            what = f"{host} {'sends' if key[2] == Direction.OUT else 'receives'} [{', '.join(key[3])}]" + \
                   (" with data" if key[4] else "") + (f" ({', '.join(key[5])})" if key[5] else "")
        elif kind == Kind.KERNEL:
            what = f"{host}'s kernel reports `{key[2]}`"
        else:
            what = f"{host} {'prints' if key[2] == Stream.STDOUT else 'has typed'} {code(shortened(key[3] or ''))}"
        return (f"{stamp(last['t'])} — and {more} more like it since {first['t']:.3f} s, on {conns} connections "
                f"in all: {what} (summary.txt and trace.jsonl list each).")

    def markdown(self) -> str:
        # one section per step start: the records after it, up to the next start
        starts = [self.ix.position(r) for r in self.ix.steps(StepStatus.START)]
        ends = starts + [len(self.ix)]
        sections = [(None, 0, ends[0])] + [(self.ix[at], at + 1, ends[k + 1]) for k, at in enumerate(starts)]
        out = self.intro()
        for step, lo, hi in sections:
            end = next((r for r in self.ix.span(Kind.STEP, lo, hi) if r["status"] != StepStatus.START
                        and r["index"] == step["index"]), None) if step else None
            lines = self.told(lo, hi)
            if step is None and not lines:
                continue
            out += ["", self.heading(step, lo, hi, end), ""] + (lines or ["- Nothing happened on the lab port."])
        out += ["", "## Each side's path through the diagram", ""]
        for host in self.film.hosts:
            path = ["CLOSED"] + [tr.to for tr in self.film.transitions if tr.host == host]
            out.append(f"- {host} ({self.film.roles[host]}): {' → '.join(path)}")
        out += ["", "## Against RFC 9293", ""] + rfc9293.lines(rfc9293.check(self.ix.records))
        return "\n".join(out) + "\n"


def render(trace: TraceIndex | Iterable[dict]) -> str:
    """story.md's text (Markdown) for the trace: its index, or its records in trace order; every
    control character in it (a console line's, a step's error) visible, as story.md meets a terminal."""
    return "\n".join(visible(line) for line in _Story(trace).markdown().split("\n"))


def write(run_dir: Path, trace: TraceIndex | Iterable[dict]) -> Path:
    """story.md in ``run_dir``, from the trace's index (or its records)."""
    return atomic_write(Path(run_dir) / "story.md", render(trace))
