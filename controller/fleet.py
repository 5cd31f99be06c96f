"""Who is connected: one record per probe (its hello, liveness, clock, event bookkeeping), and the
controller's counters for each host.

Events come with a gapless sequence number (tcplab.wire), in batches. A :class:`ProbeLink` holds
every event up to ``upto`` contiguously and the ones received above a gap; it acknowledges only
``upto``, so the probe resends the rest. A resend of an event already held is a duplicate
(dropped, counted). A probe whose bounds overflowed (its unacknowledged bytes and its spill, see
probe/transport.py) says, in its heartbeat, the oldest event it still holds: what lies below it and
never came is given up (:meth:`ProbeLink.missing_below` names the ranges, for the trace's ``loss``
records; counted), and the acknowledgement moves past it. The heartbeat's ``dropped`` and
``spilled`` (the probe's own totals) are counted here as they grow, so run.json has them even
when the probe never sends its counters event.

A hello with another ``session`` (32 random hex characters, new in every probe process) is a
restarted probe: its events count from 1 again, so it gets a new link (a pid is not enough: a
restarted probe may get the same pid, in a namespace or a container). A new link of a session this
controller did not know (it restarted) starts at the hello's ``acked``: what an earlier controller
acknowledged is not a gap. The counters are kept per host by the :class:`Fleet`, not per link:
they outlive a restart and a run's share of them (:meth:`Fleet.counters`, before and after) goes
into its run.json.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from controller.clock import ClockEstimate
from tcplab import wire

ALIVE_S = 3.0  # a probe heard from within this is alive (its heartbeat comes every second): controller.liveness

# The controller's counters per host (flat str -> int, beside the probe's own in run.json).
COUNTERS = (
    "link_duplicates",           # events received again (a resend of one already held): dropped
    "link_given_up",             # events the probe dropped before they arrived (its heartbeat's oldest)
    "link_frames_refused",       # frames from this peer that did not follow the wire format
    "link_frames_before_hello",  # frames from a probe not (yet) registered: ignored until its hello
    "link_restarts",             # hellos from a new process (session) of a host already known
    "link_events_refused",       # events of a batch that did not follow the wire format (counted as received)
    "link_probe_dropped",        # events the probe said (heartbeat) it dropped at its bounds
    "link_probe_spilled",        # events the probe said (heartbeat) it spilled to disk
    "link_acks_unsent",          # acks its full queue did not take (it read nothing): the next said the same
)


@dataclass
class ProbeLink:
    host: str
    hello: dict
    last_seen: float = field(default_factory=time.monotonic)
    clock: ClockEstimate = field(default_factory=ClockEstimate)
    upto: int = 0                                   # every event <= upto has been received
    pending: set[int] = field(default_factory=set)  # received events above a gap
    counters: Counter = field(default_factory=Counter)  # the host's, shared with the Fleet
    reported: dict = field(default_factory=dict)  # the probe's last heartbeat (dropped, spilled, spill_bytes ...)

    @property
    def lab_ip(self) -> str:
        return self.hello.get("lab_ip", "")

    @property
    def session(self) -> str | None:
        return self.hello.get("session")

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_seen < ALIVE_S

    @property
    def duplicates(self) -> int:
        return self.counters["link_duplicates"]

    def receive(self, seq: int) -> bool:
        """Note event ``seq``; True if it is new (not a resend of one already held)."""
        if seq <= self.upto or seq in self.pending:
            self.counters["link_duplicates"] += 1
            return False
        self.pending.add(seq)
        self._advance()
        return True

    def receive_batch(self, first: int, count: int) -> list[bool]:
        """:meth:`receive` for the events ``first`` .. ``first+count-1``: which of them are new."""
        if first == self.upto + 1 and not self.pending:  # the usual case: the next batch, in order
            self.upto += count
            return [True] * count
        return [self.receive(seq) for seq in range(first, first + count)]

    def missing_below(self, oldest: int) -> list[tuple[int, int]]:
        """The ranges (first, last) of the events below ``oldest`` not received: what
        :meth:`give_up_below` would give up."""
        ranges: list[tuple[int, int]] = []
        start = self.upto + 1
        for seq in sorted(s for s in self.pending if s < oldest):
            if seq > start:
                ranges.append((start, seq - 1))
            start = seq + 1
        if start < oldest:
            ranges.append((start, oldest - 1))
        return ranges

    def report(self, beat: dict) -> dict[str, int]:
        """The probe's heartbeat totals: what grew since the last one (``dropped``, ``spilled``),
        counted. A total that went down (a new session) counts from zero again."""
        grew = {}
        for key in ("dropped", "spilled"):
            now, before = beat.get(key), self.reported.get(key, 0)
            if isinstance(now, int) and not isinstance(now, bool) and now >= 0:
                grew[key] = now - before if now >= before else now
                self.counters[f"link_probe_{key}"] += grew[key]
        self.reported = {k: v for k, v in beat.items() if isinstance(v, int) and not isinstance(v, bool)}
        return grew

    def give_up_below(self, oldest: int) -> int:
        """The probe holds nothing below ``oldest`` any more: stop waiting for it. Returns how many
        events were given up (never received, now never will be)."""
        if oldest - 1 <= self.upto:
            return 0
        held = sum(1 for s in self.pending if s < oldest)
        lost = oldest - 1 - self.upto - held
        self.upto = oldest - 1
        self.pending = {s for s in self.pending if s > self.upto}
        self._advance()
        self.counters["link_given_up"] += lost
        return lost

    def _advance(self) -> None:
        while self.upto + 1 in self.pending:
            self.upto += 1
            self.pending.discard(self.upto)


class Fleet:
    """The probes that said hello. ``admit``: the inventory's lab hosts (the controller's config
    ``hosts``); when given, a hello from any other name is refused and nothing of it is kept."""

    def __init__(self, admit: tuple[str, ...] | list[str] = ()) -> None:
        self.probes: dict[str, ProbeLink] = {}
        self._counters: dict[str, Counter] = {}
        self.admit = frozenset(admit)
        self.strangers = 0  # frames refused because the sender's name is not the inventory's

    def _of(self, host: str) -> Counter:
        return self._counters.setdefault(host, Counter())

    def hello(self, host: str, body: dict) -> ProbeLink | None:
        """Register a probe. A new process (another ``session``) starts its event count again.
        None for a host the inventory does not have (see ``admit``)."""
        if self.admit and host not in self.admit:
            self.strangers += 1
            return None
        link = self.probes.get(host)
        if link is None or link.session != body.get("session"):
            if link is not None:
                self._of(host)["link_restarts"] += 1
            acked = body.get("acked", 0)
            link = ProbeLink(host, dict(body), counters=self._of(host),
                             upto=acked if isinstance(acked, int) and not isinstance(acked, bool) and acked > 0 else 0)
            self.probes[host] = link
        link.last_seen = time.monotonic()
        return link

    def seen(self, host: str) -> ProbeLink | None:
        """The link of a frame's sender, marked alive; None (counted) if it has not said hello."""
        link = self.probes.get(host)
        if link is None and self.admit and host not in self.admit:
            self.strangers += 1  # not the inventory's: counted in one number, no table entry of its own
        elif link is None:
            self._of(host)["link_frames_before_hello"] += 1
        else:
            link.last_seen = time.monotonic()
        return link

    def refused(self, peer: str) -> None:
        """Count a refused frame from ``peer`` (a routing id that is no host name is not counted:
        anyone can pick one, and the table would grow with each)."""
        if self.admit and peer not in self.admit:
            self.strangers += 1  # any routing id can be picked: one number for all of them
        elif wire.HOST_RE.match(peer):
            self._of(peer)["link_frames_refused"] += 1

    def connected(self, host: str) -> bool:
        link = self.probes.get(host)
        return bool(link and link.alive)

    def counters(self, host: str) -> dict[str, int]:
        """The controller's counters for ``host`` so far (every name of :data:`COUNTERS`)."""
        have = self._counters.get(host, Counter())
        return {name: have[name] for name in COUNTERS}

    def status(self) -> dict:
        return {h: {"alive": p.alive, "lab_ip": p.lab_ip, "clock": p.clock.as_dict(), "events": p.upto}
                for h, p in sorted(self.probes.items())}


def counted_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What was counted between two :meth:`Fleet.counters` of one host (a run's share)."""
    return {name: after.get(name, 0) - before.get(name, 0) for name in COUNTERS}
