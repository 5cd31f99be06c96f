"""Scenario files: what the lab does, step by step. A pure description; the sequencer runs it.

A scenario is YAML::

    name: seed
    port: 9090              # optional: the lab port this scenario was written for
    delay: 3.0              # seconds of egress delay on the lab port while shaping is on
    steps:
      - action: shape       # shape | sysctl | listen | connect | send | read | shutdown | keepalive | close | abort | wait
        host: [thinkpad, raspberrypi]
      - action: listen
        host: thinkpad
        expect: [thinkpad LISTEN]
      - action: connect
        host: raspberrypi
        to: thinkpad
        expect: [raspberrypi ESTABLISHED, thinkpad ESTABLISHED]
      - action: send
        host: thinkpad
        text: Hello
        expect: [raspberrypi prints Hello]
      - action: wait
        expect: [thinkpad CLOSED]
        timeout: 90

Each action (but ``wait``, which only waits for its expectations) is defined in :mod:`tcplab.actions`:
on how many hosts a step may act, the step fields it reads (connect's ``to``, send's ``text``) and
their checks come from there; this module checks the rest of the file. A field only other actions
read (a ``to`` on a send, a ``count`` on a close) is an error, not ignored.

``count`` on a listen or a connect (1..512, default 1) is how many connections the step makes: one
runs nc, as the seed does; more run the probe's own application (probe/sockapp.py), which serves
them all at once and prints what each receives as nc would.

``connection: NAME`` on a connect opens one connection and names it (tcplab.actions.conn); a host
may open several, each with its own connect step. A later send, read, shutdown, keepalive, close or
abort with ``connection: NAME`` acts on that connection alone, at either end (the connecting host's
or the one it connected to); a close or an abort of one leaves the host's other connections and its
listener as they are. Named connections run the probe's own application at both ends: a listen that
a named connection connects to is marked so (``app``) and accepts every connection made to it. An
expectation ending in `` on NAME`` counts only that connection's records (``server ESTABLISHED on
b``, ``client sends RST on b``, ``server prints Hi on a``: for ``prints``, `` on NAME`` is the
connection's only when NAME is one the scenario names). A printed line in double quotes is taken as
it is: ``prints "meet at 5"`` expects that line, where ``prints meet at 5`` reads `` at 5`` as a time.

An expectation is ``HOST STATE`` (HOST's connection reaches STATE after the step began; LISTEN
refers to the listening socket, every other state to a connection socket) or
``HOST prints TEXT`` (a line TEXT appears on HOST's console) or ``HOST sends SEGMENT`` /
``HOST receives SEGMENT`` (a segment HOST's capture saw leave or arrive: :class:`PacketMatch`;
SEGMENT is TCP flags, exactly, joined by + such as ``SYN`` or ``RST+ACK``, and any of Wireshark's
analysis flags such as ``retransmission`` or ``zero_window``, ``data``, and ``"TEXT"`` in the
payload; ``segment`` alone is any) or ``HOST kernel EVENT`` (one of the TCP tracepoints the probe
reports: ``retransmit_skb``, ``retransmit_synack``, ``send_reset``, ``receive_reset``; a segment the
host's own shaping drops never reaches its capture, but its retransmission is the kernel's). A
trailing `` xN`` asks for N:
``thinkpad ESTABLISHED x200`` is met once 200 distinct connections of thinkpad (by their address
pair) reached ESTABLISHED, ``thinkpad prints Bye x200`` once 200 such lines were printed, ``raspberrypi sends SYN
retransmission x2`` once its capture saw two such segments leave. A trailing `` at T`` (or
`` at T±TOL``) asks for the time too: the one that meets it (the N-th) must come T seconds after
the step began, within TOL (T may be written in the scenario's delays, which ``--delay`` sets: ``at 2d``
is two delays, ``at 0.1+2d`` 100 ms more), by default packetdrill's rule: the larger of an absolute bound (50 ms,
plus twice the scenario's largest jitter, plus the clocks' bound) and 5 % of T; one too early or too
late fails the step at once. A step fails when its expectations are not all met within ``timeout`` seconds (default: 10 s + 5 x delay).

The lab port has one source: each probe's configuration (``tcplab_lab_port`` in the inventory,
``port:`` in probe.yml), on which the probe listens, shapes and captures, and which it reports in
its hello. A scenario without ``port`` runs on that port. A scenario with ``port`` states the port
it was written for; the sequencer refuses to start it (before any step) when a probe's port
differs (:func:`port_conflict`), so a client can never connect to a port nobody shapes or captures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Mapping
from pathlib import Path

from controller import analysis
from tcplab import actions, strictyaml, tcpstates, wire
from tcplab.wire import bodies
from tcplab.actions import shape
from tcplab.actions.listen import MAX_CONNECTIONS
from tcplab.errors import TcplabError

# A step names an action of the registry (tcplab.actions), or "wait": expectations only, no command.
ACTIONS = (*actions.scenario_actions(), "wait")
# the fields every step may have; each action adds its own (tcplab.actions: connect's ``to``, shape's ``loss``)
COMMON_KEYS = {"action", "host", "expect", "timeout", "note"}
WAIT_KEYS = {"duration"}  # a wait's own: how long it waits
# the step fields some action reads (connect's ``to``, send's ``text``): on any other action's step, an error
ACTION_FIELDS = frozenset(f for a in actions.ACTIONS.values() for f in a.step_fields)
STEP_KEYS = COMMON_KEYS | WAIT_KEYS | ACTION_FIELDS
MAX_DURATION_S = 3600.0
# A scenario may name its hosts by role; the lab binds each role to one of its hosts (the controller's
# ``roles``, from the inventory's ``tcplab_role``), by default the seed's.
DEFAULT_ROLES = {"server": "thinkpad", "client": "raspberrypi"}
COUNT_RE = re.compile(r"^(?P<rest>.*\S)\s+x(?P<count>[0-9]{1,6})$")
ON_RE = re.compile(rf"^(?P<rest>.*\S)\s+on\s+(?P<conn>{wire.HOST_RE.pattern.strip('^$')})$")  # `` on NAME``
# `` at T`` or `` at T±TOL`` (also ``+-``): when, in seconds after the step began
# a time: seconds, a number of the scenario's delays (``2d``), or both (``0.2+2d``)
NUM = r"[0-9]+(?:\.[0-9]+)?"
TIME = rf"(?:(?P<s>{NUM})(?:\s*\+\s*(?P<sd>{NUM})?\s*(?P<sdd>d))?|(?P<d>{NUM})?\s*(?P<dd>d))"
AT_RE = re.compile(rf"^(?P<rest>.*\S)\s+at\s+{TIME}(?:\s*(?:±|\+-)\s*(?P<tol>{NUM}))?$")
MAX_DELAYS = 1000.0  # a time in delays: at most this many
# the default tolerance of a time, packetdrill's rule: the larger of an absolute and a relative bound
TOLERANCE_S = 0.05        # the absolute part, to which twice the scenario's largest jitter and the clocks' bound add
TOLERANCE_REL = 0.05      # of the time expected
MAX_DELAY_S = 60.0
MAX_STEPS = 1000


class ScenarioError(TcplabError, ValueError):
    """A scenario that cannot run; the message names the file, the step and the field."""


TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
FLAGS_RE = re.compile(rf"^(?:{'|'.join(TCP_FLAGS)})(?:\+(?:{'|'.join(TCP_FLAGS)}))*$")
VERBS = {"sends": "out", "receives": "in"}
KERNEL_EVENTS = bodies.KERNEL_EVENTS  # the TCP tracepoints a probe reports


@dataclass(frozen=True)
class PacketMatch:
    """Which of a host's segments an expectation counts: those it sends (``dir`` out) or receives,
    with exactly ``flags`` (None: any), every one of ``analysis`` (Wireshark's flags, as
    controller.analysis names them), payload if ``data``, and ``text`` in the payload if given."""

    dir: str
    flags: frozenset[str] | None = None
    analysis: tuple[str, ...] = ()
    data: bool = False
    text: str | None = None

    def matches(self, rec: dict) -> bool:
        return (rec.get("dir") == self.dir and (self.flags is None or frozenset(rec.get("flags", ())) == self.flags)
                and all(a in rec.get("analysis", ()) for a in self.analysis)
                and (not self.data or (rec.get("len") or 0) > 0)
                and (self.text is None or self.text in (rec.get("payload") or "")))

    def __str__(self) -> str:
        words = [next(v for v, d in VERBS.items() if d == self.dir)]
        if self.flags is not None:
            words.append("+".join(f for f in TCP_FLAGS if f in self.flags))
        words += [*self.analysis, *(["data"] if self.data else [])]
        if self.text is not None:
            words.append(json.dumps(self.text))
        if len(words) == 1:
            words.append("segment")
        return " ".join(words)


@dataclass(frozen=True)
class Expectation:
    host: str
    state: str | None = None   # a trace state name, or None for a console or a packet expectation
    text: str | None = None
    count: int = 1             # at least this many connections (a state), lines, segments or kernel events
    packet: PacketMatch | None = None
    kernel: str | None = None  # a TCP tracepoint's event (controller.trace: retransmit_skb, send_reset, ...)
    at: float | None = None    # when the count-th one happens, in seconds after the step began (plus ``delays``)
    tol: float | None = None   # how far from ``at`` it may be (None: the run's default, Run.tolerance)
    conn: str | None = None    # only this named connection's records (tcplab.actions.conn)
    delays: float = 0.0        # ``at`` grows by this many times the scenario's delay (``at 2d``: two delays)

    def __str__(self) -> str:
        if self.packet is not None:
            what = f"{self.host} {self.packet}"
        elif self.kernel is not None:
            what = f"{self.host} kernel {self.kernel}"
        else:
            what = f"{self.host} {self.state}" if self.state else f"{self.host} prints {_printed(self.text)}"
        what = what if self.conn is None else f"{what} on {self.conn}"
        what = what if self.count == 1 else f"{what} x{self.count}"
        if self.at is not None:
            when = f"{self.delays:g}d" if self.delays and not self.at else \
                f"{self.at:g}" + (f"+{self.delays:g}d" if self.delays else "")
            what += f" at {when}" + (f"±{self.tol:g}" if self.tol is not None else "")
        return what

    def when(self, delay: float) -> float | None:
        """The time expected, in seconds after the step began, with the scenario's ``delay``."""
        return None if self.at is None else self.at + self.delays * delay


def _printed(text: str | None) -> str:
    """A printed line as an expectation writes it: in double quotes when its words would read otherwise
    (a trailing `` at 5``, `` x2`` or `` on a``, quotes of its own, nothing)."""
    text = text or ""
    plain = text.strip() == text and text and not (text[0] == text[-1] == '"' and len(text) >= 2) and not any(
        p.match(f"prints {text}") for p in (AT_RE, COUNT_RE, ON_RE))
    return text if plain else f'"{text}"'


@dataclass(frozen=True)
class Step:
    index: int
    action: str
    hosts: tuple[str, ...] = ()
    to: str | None = None
    text: str | None = None
    count: int = 1               # listen/connect: how many connections (1: nc's one)
    expect: tuple[Expectation, ...] = ()
    timeout: float | None = None
    delay: float | None = None   # shape: overrides the scenario delay
    shaping: tuple[tuple[str, float], ...] = ()  # shape: the impairment's other parameters (wire units)
    clear: bool = False
    note: str | None = None
    line: int | None = field(default=None, compare=False)  # where the step is in its file (None: not from one)
    duration: float | None = None  # wait: how long, before its expectations (if any) are waited for
    settings: tuple[tuple[str, int | tuple[int, ...]], ...] = ()  # sysctl: the knobs and their values
    keepalive: tuple[int, int, int] | None = None  # keepalive: idle, interval (s) and probes
    bytes: int | None = None       # send: that many bytes (lines of x) instead of a text
    reading: bool | None = None    # read: go on reading (True) or stop (False)
    connection: str | None = None  # connect: the name of the one it opens; others: the one they act on
    app: bool = False              # listen/connect: the probe's own application, also for one (named ones)

    @property
    def detail(self) -> str | None:
        """What the step's record says of its arguments, where the action alone does not tell."""
        parts = [what for what in (self._what(),) if what]
        if self.connection is not None:
            parts.append(f"connection {self.connection}" if self.action == "connect" else f"on connection {self.connection}")
        return ", ".join(parts) or None

    @property
    def own_app(self) -> bool:
        """A listen or connect that runs the probe's own application, not nc: many connections, or named ones."""
        return self.action in ("listen", "connect") and (self.app or self.count > 1)

    def _what(self) -> str | None:
        if self.action == "read" and self.reading is not None:
            return "reads again" if self.reading else "stops reading"
        if self.action == "keepalive" and self.keepalive:
            return "idle {} s, interval {} s, {} probes".format(*self.keepalive)
        if self.action in ("listen", "connect") and self.count > 1:
            return f"{self.count} connections"
        if self.action == "send" and self.bytes:
            return f"{self.bytes} bytes"
        return None

    @property
    def target(self) -> str:
        return ",".join(self.hosts) if self.hosts else "-"


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    delay: float = 3.0
    port: int | None = None   # None: the probes' port
    description: str = ""
    hosts: tuple[str, ...] = field(default=())

    def with_delay(self, delay: float) -> "Scenario":
        if not 0 <= delay <= MAX_DELAY_S:
            raise ScenarioError(f"delay {delay} s is outside 0..{MAX_DELAY_S:g} s")
        _check_shapes(self.steps, delay, f"scenario {self.name}")
        return Scenario(self.name, self.steps, delay, self.port, self.description, self.hosts)

    def bound(self, roles: Mapping[str, str] | None = None, hosts: tuple[str, ...] = ()) -> "Scenario":
        """The scenario with each role it names (``server``, ``client``) replaced by the host the lab
        binds it to: ``roles``, and for a role it does not bind, :data:`DEFAULT_ROLES`. A name that
        is one of the lab's ``hosts`` is a host, never a role."""
        table = {r: h for r, h in {**DEFAULT_ROLES, **(roles or {})}.items() if r not in hosts}
        taken = [r for r in table if r in self.hosts]
        if len({table[r] for r in taken}) < len(taken):
            raise ScenarioError(f"scenario {self.name}: its roles {' and '.join(taken)} would all be "
                                f"{table[taken[0]]}: the lab's roles give one host two of them")

        def h(name: str) -> str:
            return table.get(name, name)
        steps = tuple(replace(s, hosts=tuple(h(x) for x in s.hosts), to=h(s.to) if s.to else None,
                              expect=tuple(replace(e, host=h(e.host)) for e in s.expect)) for s in self.steps)
        return Scenario(self.name, steps, self.delay, self.port, self.description,
                        tuple(dict.fromkeys(h(x) for x in self.hosts)))

    def timeout(self, step: Step) -> float:
        return step.timeout if step.timeout is not None else 10.0 + 5.0 * self.delay

    def to_dict(self) -> dict:
        return {"name": self.name, "delay": self.delay, "port": self.port, "description": self.description,
                "steps": [_step_dict(s) for s in self.steps]}


def _step_dict(s: Step) -> dict:
    d: dict = {"action": s.action}
    if s.hosts:
        d["host"] = list(s.hosts)
    if s.count != 1:
        d["count"] = s.count
    for key in ("to", "text", "timeout", "delay", "note", "duration", "bytes", "reading", "connection"):
        if getattr(s, key) is not None:
            d[key] = getattr(s, key)
    shaping = dict(s.shaping)
    for key, (param, scale) in shape.STEP_PARAMS.items():
        if param in shaping:
            d[key] = shaping[param] / scale
    if s.clear:
        d["clear"] = True
    if s.keepalive:
        d.update(zip(("idle", "interval", "probes"), s.keepalive))
    if s.settings:
        d["set"] = {k: list(v) if isinstance(v, tuple) else v for k, v in s.settings}
    if s.expect:
        d["expect"] = [str(e) for e in s.expect]
    return d


def port_conflict(scn: Scenario, ports: dict[str, int | None], source: str | None = None) -> str | None:
    """Why the scenario cannot run on probes configured with ``ports`` (host -> the port its hello
    reported), or None. The probes must agree on one port, and a scenario's own ``port`` must be it."""
    where = source or f"scenario {scn.name}"
    unknown = sorted(h for h, p in ports.items() if not isinstance(p, int))
    if unknown:
        return f"{', '.join(unknown)} did not report its lab port in its hello (an older probe?)"
    for host, port in ports.items():
        if scn.port is not None and port != scn.port:
            return (f"{where} has port {scn.port} but {host} listens, shapes and captures on port {port} "
                    "(tcplab_lab_port in the inventory): make them equal, or leave port out of the scenario")
    if len(set(ports.values())) > 1:
        return "the probes disagree on the lab port: " + ", ".join(f"{h} {p}" for h, p in sorted(ports.items()))
    return None


def load(path: str | Path) -> Scenario:
    """A scenario file, checked whole (tcplab.strictyaml, then :func:`parse`): errors name the file
    and the line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > strictyaml.MAX_BYTES:  # refused before it is read
            raise ScenarioError(f"{path}: the file is {size:,} bytes; at most {strictyaml.MAX_BYTES:,}")
        raw = _read(path)
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read ({e.strerror})") from e
    try:
        data = strictyaml.load(raw)
    except strictyaml.YAMLRefused as e:
        raise ScenarioError(f"{path}{f':{e.line}' if e.line else ''}: {e.why}") from None
    return parse(data, source=str(path))


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:  # no more than the loader takes: a huge file is refused, not read
        return f.read(strictyaml.MAX_BYTES + 1)


def _at(source: str, container: object, key: object = None) -> str:
    """``source:LINE`` where ``container``'s ``key`` (or the container) is, when the file said it."""
    line = strictyaml.line_of(container, key)
    return f"{source}:{line}" if line else source


def _number(value: object, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ScenarioError(f"{what} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _hosts(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for h in items:
        if not isinstance(h, str) or not wire.HOST_RE.match(h):
            raise ScenarioError(f"{where}: 'host' must name a host or a list of hosts, got {h!r}")
    return tuple(items)


def _expectation(text: object, where: str, names: frozenset[str] = frozenset()) -> Expectation:
    if not isinstance(text, str) or len(text.split()) < 2:
        raise ScenarioError(f"{where}: expectation must read 'HOST STATE', 'HOST prints TEXT' or "
                            f"'HOST sends|receives SEGMENT' (and ' xN' for N connections, lines or segments), "
                            f"got {text!r}")
    host, rest = text.split(None, 1)
    if not wire.HOST_RE.match(host):
        raise ScenarioError(f"{where}: bad host name {host!r} in expectation {text!r}")
    at, delays, tol, m = None, 0.0, None, AT_RE.match(rest.strip())
    if m:
        rest, at = m.group("rest"), float(m.group("s") or 0.0)
        if m.group("sdd") or m.group("dd"):
            delays = float(m.group("sd") or m.group("d") or 1.0)
        tol = float(m.group("tol")) if m.group("tol") else None
        if at > MAX_DURATION_S or delays > MAX_DELAYS:
            raise ScenarioError(f"{where}: the time in expectation {text!r} is more than {MAX_DURATION_S:g} s "
                                f"or {MAX_DELAYS:g} delays")
    e = _untimed(host, rest, text, where, names)
    return e if at is None else replace(e, at=at, tol=tol, delays=delays)


def _untimed(host: str, rest: str, text: str, where: str, names: frozenset[str]) -> Expectation:
    count, counted, conn = 1, False, None
    for _ in range(2):  # `` xN`` and `` on NAME``, each once, in either order
        m, o = COUNT_RE.match(rest.strip()), ON_RE.match(rest.strip())
        if o and conn is None and (o.group("conn") in names or not rest.startswith("prints ")):
            rest, conn = o.group("rest"), o.group("conn")
        elif m and not counted:
            rest, count, counted = m.group("rest"), int(m.group("count")), True
            if count < 1:
                raise ScenarioError(f"{where}: the count in expectation {text!r} must be at least 1")
    e = _what(host, rest, text, where, count)
    if conn is None:
        return e
    if conn not in names:
        known = f"the scenario names {', '.join(sorted(names))}" if names else f"a connect with connection: {conn} comes first"
        raise ScenarioError(f"{where}: expectation {text!r} names connection {conn!r}, which no connect names ({known})")
    if e.state == "LISTEN":
        raise ScenarioError(f"{where}: expectation {text!r}: LISTEN is the listener's, not a connection's")
    if e.state is not None and e.count != 1:
        raise ScenarioError(f"{where}: expectation {text!r}: one connection reaches a state once (no ' xN' with 'on')")
    return replace(e, conn=conn)


def _what(host: str, rest: str, text: str, where: str, count: int) -> Expectation:
    if rest.startswith("prints "):
        line = rest[len("prints "):].strip()
        quoted = len(line) >= 2 and line[0] == line[-1] == '"'
        return Expectation(host, text=line[1:-1] if quoted else line, count=count)
    verb = rest.split(None, 1)[0]
    if verb == "kernel":
        event = rest[len(verb):].strip()
        if event not in KERNEL_EVENTS:
            raise ScenarioError(f"{where}: unknown kernel event {event!r} in expectation {text!r} "
                                f"(known: {', '.join(KERNEL_EVENTS)})")
        return Expectation(host, count=count, kernel=event)
    if verb in VERBS:
        return Expectation(host, count=count, packet=_packet(VERBS[verb], rest[len(verb):], text, where))
    try:
        return Expectation(host, state=tcpstates.name(rest.strip()), count=count)
    except ValueError:
        raise ScenarioError(f"{where}: unknown TCP state {rest.strip()!r} in expectation {text!r} "
                            f"(known: {', '.join(tcpstates.NAMES)})") from None


SEGMENT_WORD = re.compile(r'"[^"]*"|[^\s"]+|"')


def _packet(direction: str, words: str, text: str, where: str) -> PacketMatch:
    """``SYN retransmission``, ``RST+ACK``, ``data "Hello"``, ``zero_window``, ``segment``."""
    flags, found, data, payload = None, [], False, None
    for tok in SEGMENT_WORD.findall(words):
        if tok.startswith('"') and len(tok) >= 2 and tok.endswith('"') and payload is None:
            payload = tok[1:-1]
        elif FLAGS_RE.match(tok) and flags is None:
            flags = frozenset(tok.split("+"))
        elif tok in analysis.FLAGS and tok not in found:
            found.append(tok)
        elif tok == "data" and not data:
            data = True
        elif tok != "segment":
            raise ScenarioError(
                f"{where}: {tok!r} in expectation {text!r} is not a segment's word: write TCP flags joined by + "
                f"(e.g. SYN, SYN+ACK, RST+ACK), Wireshark's analysis ({', '.join(analysis.FLAGS)}), data, "
                f'"TEXT" in the payload, or segment for any')
    return PacketMatch(direction, flags, tuple(found), data, payload)


def _action_fields(raw: dict, on: tuple[str, ...], at, where: str) -> tuple[str, ...]:
    """Check a step against its action's rules (tcplab.actions); the step fields the action reads.
    ``at(key)``: where a field of the step is, for the message."""
    act = actions.ACTIONS.get(raw["action"])
    if act is None:  # a wait
        foreign = sorted(ACTION_FIELDS & set(raw))
        if foreign:
            raise ScenarioError(f"{at(foreign[0])}: a wait takes no {', '.join(repr(f) for f in foreign)}")
        return ()
    if not on:
        raise ScenarioError(f"{where}: needs 'host' (the host that acts)")
    if act.one_host and len(on) != 1:
        raise ScenarioError(f"{at('host')}: acts on exactly one host, got {len(on)}")
    foreign = sorted(f for f in ACTION_FIELDS & set(raw) if f not in act.step_fields)
    if foreign:
        raise ScenarioError(f"{at(foreign[0])}: {raw['action']} takes no {', '.join(repr(f) for f in foreign)}")
    if act.check_step is not None:
        try:
            act.check_step(raw)
        except actions.ActionError as e:  # at the field's line when it is there, else the step's
            raise ScenarioError(f"{at(e.field) if e.field in raw else where}: {e}") from None
    return act.step_fields


def _step(index: int, raw: object, source: str, steps: object = None, names: frozenset[str] = frozenset()) -> Step:
    label = f"step {index}"

    step_line = strictyaml.line_of(steps, index - 1)

    def at(key: object = None, inner: object = None) -> str:  # "file:LINE: step N (action)"
        line = None if key is None and inner is None else strictyaml.line_of(raw if inner is None else inner, key)
        line = line or step_line
        return f"{source}:{line}: {label}" if line else f"{source}: {label}"

    if not isinstance(raw, dict):
        raise ScenarioError(f"{at()}: must be a mapping with an 'action'")
    unknown = sorted((k for k in raw if k not in STEP_KEYS), key=str)
    if True in raw:  # YAML 1.1 reads a bare `on:` key as the boolean true
        raise ScenarioError(f"{at(True)}: write 'host:' for the acting host ('on' is read by YAML as true)")
    if unknown:
        raise ScenarioError(f"{at(unknown[0])}: unknown field(s) {', '.join(map(str, unknown))} "
                            f"(a step has {', '.join(sorted(STEP_KEYS))})")
    action = raw.get("action")
    if action not in ACTIONS:
        raise ScenarioError(f"{at('action')}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
    label = f"step {index} ({action})"
    on = _hosts(raw["host"], at("host")) if "host" in raw else ()
    fields = _action_fields(raw, on, at, at())
    expect = raw.get("expect", [])
    if not isinstance(expect, list):
        expect = [expect]
    if "duration" in raw and action != "wait":
        raise ScenarioError(f"{at('duration')}: {action} takes no 'duration' (a wait's: how long it waits)")
    duration = (_number(raw["duration"], f"{at('duration')}: duration", 0, MAX_DURATION_S)
                if "duration" in raw else None)
    if action == "wait" and not expect and duration is None:
        raise ScenarioError(f"{at()}: a wait needs 'duration' (seconds) or 'expect' (what it waits for), or both")
    timeout = _number(raw["timeout"], f"{at('timeout')}: timeout", 0.1, 3600) if "timeout" in raw else None
    shaping = shape.step_params(raw) if action == "shape" else {}  # checked by shape's check_step
    delay_ms = shaping.pop("delay_ms", None)
    note = raw.get("note")
    items = raw.get("expect")
    return Step(index, action, on, raw.get("to") if "to" in fields else None,
                raw.get("text") if "text" in fields else None, raw.get("count", 1) if "count" in fields else 1,
                tuple(_expectation(e, at(i, items) if isinstance(items, list) else at("expect"), names)
                      for i, e in enumerate(expect)), timeout, None if delay_ms is None else delay_ms / 1000,
                tuple(sorted(shaping.items())), raw.get("clear", False) is True,
                str(note) if note is not None else None, step_line, duration,
                tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in raw["set"].items()))
                if "set" in fields else (),
                tuple(raw[k] for k in ("idle", "interval", "probes")) if "idle" in fields else None,
                raw.get("bytes") if "bytes" in fields else None, raw.get("reading") if "reading" in fields else None,
                raw.get("connection") if "connection" in fields else None, action == "connect" and "connection" in raw)


TOP_KEYS = ("name", "description", "port", "delay", "steps")


def _check_shapes(steps: tuple[Step, ...], delay: float, source: str) -> None:
    """Each shape step's parameters fit together with the delay it will have (a jitter at most the
    delay, a reorder only with one)."""
    for s in steps:
        if s.action == "shape" and not s.clear:
            try:
                shape.impairment(s, delay)
            except actions.ActionError as e:  # the scenario's delay makes it so: said at the step
                where = f"{source}:{s.line}" if s.line else source
                raise ScenarioError(f"{where}: step {s.index} (shape): with the scenario's delay of {delay:g} s, "
                                    f"{e}") from None


ON = {"send": "send on", "shutdown": "shut down", "keepalive": "keep alive", "read": "read"}  # actions that need a connection


def _check_order(steps: tuple[Step, ...], source: str) -> tuple[Step, ...]:
    """The steps in an order that can run: an application before what acts on it. A host's
    application starts with its listen or connect and ends with its close or abort; a send needs a
    connection on that host (its connect, or a connect to its listen); one application at a time,
    but for named connections, which a host may open one step after another. A named connection's
    steps and expectations come after its connect, on one of its two hosts, while that end is open.
    Returns the steps, with each listen that a named connection connects to marked ``app`` and
    accepting every connection made to it."""
    app: dict[str, str] = {}          # host -> "listening" | "connected" | "named" (its named connections)
    since: dict[str, str] = {}        # host -> the action that started its application (listen, connect)
    listens: dict[str, int] = {}      # host -> the index of its listen, while it listens
    made: dict[int, list[int]] = {}   # a listen's index -> [connections made to it, of which named]
    ends: dict[str, tuple[str, str]] = {}   # a connection's name -> its two hosts (connecting, connected to)
    named_at: dict[str, int] = {}
    open_: set[tuple[str, str]] = set()     # (name, host): that end of the connection is open
    for s in steps:
        where = f"{source}:{s.line}: step {s.index} ({s.action})" if s.line else f"{source}: step {s.index} ({s.action})"
        host = s.hosts[0] if s.hosts else ""
        if s.connection is not None and s.action != "connect":
            _check_end(s.connection, host, ends, open_, where)
        if s.action == "connect" and s.connection is not None:
            if s.connection in ends:
                raise ScenarioError(f"{where}: connection {s.connection} is named already (step "
                                    f"{named_at[s.connection]}): one name, one connection")
            if app.get(host, "named") != "named":
                raise ScenarioError(f"{where}: {host}'s application already runs (since its {since[host]}); "
                                    "a named connection starts on a host whose other connections are named too")
            app[host] = "named"
            since.setdefault(host, "connect")
            ends[s.connection], named_at[s.connection] = (host, s.to or ""), s.index
            open_.add((s.connection, host))
            if s.to in listens:  # its other end, where something listens (else the connect is refused)
                open_.add((s.connection, s.to))
        elif s.action in ("listen", "connect") and host in app:
            raise ScenarioError(f"{where}: {host}'s application already runs (since its {since[host]}); "
                                "close or abort it first: one application at a time on a host")
        elif s.action == "listen":
            app[host], listens[host], since[host] = "listening", s.index, "listen"
            made[s.index] = [0, 0]
        elif s.action == "connect":
            app[host], since[host] = "connected", "connect"
        elif s.action in ON and app.get(host) not in ("connected", "named"):
            raise ScenarioError(f"{where}: {host} has no connection to {ON[s.action]} yet (a connect on {host}, "
                                f"or a connect to its listen, comes first)")
        elif s.action in ("close", "abort") and s.connection is not None:
            open_.discard((s.connection, host))
            if app.get(host) == "named" and not any(h == host for _, h in open_):
                del app[host], since[host]  # its last connection: the application ends
        elif s.action in ("close", "abort"):
            if host not in app:
                raise ScenarioError(f"{where}: no application runs on {host} to {s.action} "
                                    "(a listen or a connect on it comes first)")
            del app[host], since[host]
            listens.pop(host, None)
            open_ = {(n, h) for n, h in open_ if h != host}
        if s.action == "connect" and s.to in listens:
            made[listens[s.to]][0] += s.count
            made[listens[s.to]][1] += s.connection is not None
            app[s.to or ""] = "connected"
        for e in s.expect:
            if e.conn is not None and e.host not in ends.get(e.conn, (e.host,)):
                raise ScenarioError(f"{where}: expectation {str(e)!r}: connection {e.conn} is between "
                                    f"{' and '.join(ends[e.conn])}, not on {e.host}")
            if e.conn is not None and e.conn not in ends:
                raise ScenarioError(f"{where}: expectation {str(e)!r}: connection {e.conn} is opened by a later "
                                    "step (its connect comes first)")
    for s in steps:
        if made.get(s.index, [0, 0])[1] and made[s.index][0] > MAX_CONNECTIONS:
            where = f"{source}:{s.line}: step {s.index} (listen)" if s.line else f"{source}: step {s.index} (listen)"
            raise ScenarioError(f"{where}: {made[s.index][0]} connections connect to it; one listen accepts at most "
                                f"{MAX_CONNECTIONS}")
    return tuple(replace(s, app=True, count=max(s.count, made[s.index][0]))
                 if s.action == "listen" and made.get(s.index, [0, 0])[1] else s for s in steps)


def _check_end(name: str, host: str, ends: dict[str, tuple[str, str]], open_: set, where: str) -> None:
    """A step acting on connection ``name`` on ``host``: one of its ends, still open."""
    if name not in ends:
        raise ScenarioError(f"{where}: no connection is named {name} yet (a connect with connection: {name} "
                            "comes first)")
    if host not in ends[name]:
        raise ScenarioError(f"{where}: connection {name} is between {' and '.join(ends[name])}, not on {host}")
    if (name, host) not in open_:
        raise ScenarioError(f"{where}: {host}'s end of connection {name} is not open: it was closed, or "
                            f"nothing listened on {host} when it connected")


def parse(data: object, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{_at(source, data)}: must be a mapping with 'name' and 'steps'")
    unknown = sorted((k for k in data if k not in TOP_KEYS), key=str)
    if unknown:
        raise ScenarioError(f"{_at(source, data, unknown[0])}: unknown field(s) {', '.join(map(str, unknown))} "
                            f"(a scenario has {', '.join(TOP_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not wire.HOST_RE.match(name):
        raise ScenarioError(f"{_at(source, data, 'name')}: 'name' must be a simple word (letters, digits, - _ .), "
                            f"got {name!r}")
    delay = _number(data.get("delay", 3.0), f"{_at(source, data, 'delay')}: delay", 0, MAX_DELAY_S)
    port = data.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ScenarioError(f"{_at(source, data, 'port')}: port must be 1..65535, got {port!r}")
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(f"{_at(source, data, 'steps')}: 'steps' must be a non-empty list")
    if len(steps_raw) > MAX_STEPS:
        raise ScenarioError(f"{_at(source, data, 'steps')}: {len(steps_raw)} steps; at most {MAX_STEPS}")
    names = frozenset(raw["connection"] for raw in steps_raw if isinstance(raw, dict)
                      and raw.get("action") == "connect" and isinstance(raw.get("connection"), str))
    steps = tuple(_step(i, raw, source, steps_raw, names) for i, raw in enumerate(steps_raw, start=1))
    steps = _check_order(steps, source)
    _check_shapes(steps, delay, source)
    hosts: list[str] = []
    for s in steps:
        for h in (*s.hosts, *([s.to] if s.to else []), *(e.host for e in s.expect)):
            if h not in hosts:
                hosts.append(h)
    return Scenario(name, steps, delay, port, str(data.get("description", "")), tuple(hosts))
