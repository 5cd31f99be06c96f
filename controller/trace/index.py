"""One index of a run's trace, built once and handed to everything that reads the trace.

Wireshark's dissectors share one conversation table rather than each re-parsing the stream; so do
the report, the clock's causal check and the renderers here: none of them filters raw records by
kind or re-derives pairs, roles or delays. The records stay the trace's plain dicts, in the trace's
order; the index adds the views below. It is also a read-only sequence of those records
(``len``, ``for r in index``, ``index[i]``, slices give lists), so code written for a list of
records takes an index as it is.

API (``ix = TraceIndex(records)``, or ``TraceIndex.of(records_or_index)``):

- ``ix.records``                 the records, in trace order (``sort_key``);
- ``ix.position(rec)``           the record's position in the trace (by identity);
- ``ix.kind(Kind.PACKET, host=None)``  the records of a kind (one host's, if given), in trace order;
- ``ix.pairs``                   ``[(out, in)]``: each segment seen leaving one host paired with the same
                                 segment arriving at another (:func:`segment_pairs`);
- ``ix.pair_of(rec)``            the other capture of the same segment, or None;
- ``ix.hosts``                   the lab hosts (not the controller) in the order they first appear in a
                                 packet, state, console or netstat record;
- ``ix.roles``, ``ix.server``, ``ix.client``  host -> "server"/"client" (:meth:`roles` says how);
                                 ValueError when the trace has fewer than two hosts;
- ``ix.delay_at(host, t)``       the egress delay (s) in force on ``host`` at ``t`` (its shaper records);
- ``ix.host_of(addr, default)``  the host an address ("ip:port" or "ip") belongs to;
- ``ix.sockets``                 ``{(host, local, remote): [state records]}``, each socket's states in order;
- ``ix.states(host, listener=None, since=None)``  a host's state records, listeners only or none;
- ``ix.console(host, stream=None, since=None)``    a host's console records;
- ``ix.steps(status=None)``      the step records (of one StepStatus, if given);
- ``ix.span(kind, start, stop, host=None)``  the records of a kind at trace positions start..stop-1 (the
                                 film's views up to a record, or between two steps);
- ``ix.shift(host, seconds)``    move one host's records in time (the clock's causal correction) and
                                 re-sort; every view is rebuilt from the new order.

The views are computed when first asked for; :meth:`shift` forgets them.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property

from controller.trace.schema import CONTROLLER, Direction, Kind, StepStatus, is_listener, sort_key

_VIEWS = ("pairs", "_partner", "hosts", "roles", "_delays", "_hosts_by_addr", "sockets")


def _segment_key(r: dict) -> tuple:
    return (r["src"], r["dst"], tuple(r.get("flags", [])), r.get("seq"), r.get("ack"), r.get("len"))


def segment_pairs(records: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
    """Each segment seen leaving one host paired with the same segment arriving at another.

    The n-th identical segment out pairs with the n-th identical segment in (retransmissions are
    identical), in time order. Yields ``(out_record, in_record)``. A shift of one host's times
    keeps the pairs (every copy of one segment out is the same host's, every copy in the other's).
    """
    out, inn = defaultdict(list), defaultdict(list)
    for r in sorted((r for r in records if r["kind"] == Kind.PACKET), key=lambda r: r["t"]):
        (out if r["dir"] == Direction.OUT else inn)[_segment_key(r)].append(r)
    for key, sent in out.items():
        for o, i in zip(sent, inn.get(key, [])):
            if o["host"] != i["host"]:
                yield o, i


class TraceIndex(Sequence):
    def __init__(self, records: Iterable[dict], *, ordered: bool = True):
        """``records`` in trace order (``ordered=False``: sort them by ``sort_key`` first)."""
        self.records: list[dict] = list(records) if ordered else sorted(records, key=sort_key)
        self._build()

    @classmethod
    def of(cls, trace: TraceIndex | Iterable[dict]) -> TraceIndex:
        """``trace`` itself if it is an index, else the index of those records (in trace order)."""
        return trace if isinstance(trace, cls) else cls(trace)

    def _build(self) -> None:
        for name in _VIEWS:
            self.__dict__.pop(name, None)
        self._pos = {id(r): n for n, r in enumerate(self.records)}
        self._span_positions: dict[tuple, list[int]] = {}
        self._by_kind: dict[str, list[dict]] = defaultdict(list)
        self._by_kind_host: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in self.records:
            self._by_kind[r["kind"]].append(r)
            self._by_kind_host[r["kind"], r["host"]].append(r)

    # ---- the sequence of records ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def position(self, rec: dict) -> int:
        return self._pos[id(rec)]

    def _positions(self, kind: Kind | str, host: str | None) -> list[int]:
        key = (kind, host)
        if key not in self._span_positions:
            self._span_positions[key] = [self._pos[id(r)] for r in self.kind(kind, host)]
        return self._span_positions[key]

    def kind(self, kind: Kind | str, host: str | None = None) -> list[dict]:
        """The records of ``kind`` (of ``host``'s, if given), in trace order. Do not modify the list."""
        return self._by_kind.get(kind, []) if host is None else self._by_kind_host.get((kind, host), [])

    # ---- segments ----------------------------------------------------------------------------
    @cached_property
    def pairs(self) -> list[tuple[dict, dict]]:
        return list(segment_pairs(self._by_kind.get(Kind.PACKET, [])))

    @cached_property
    def _partner(self) -> dict[int, dict]:
        partner = {}
        for o, i in self.pairs:
            partner[id(o)], partner[id(i)] = i, o
        return partner

    def pair_of(self, rec: dict) -> dict | None:
        """The same segment's record on the other host (its arrival for an ``out``, its departure for an ``in``)."""
        return self._partner.get(id(rec))

    # ---- hosts -------------------------------------------------------------------------------
    @cached_property
    def hosts(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            if r["host"] != CONTROLLER and r["kind"] in (Kind.PACKET, Kind.STATE, Kind.CONSOLE, Kind.NETSTAT):
                seen.setdefault(r["host"], None)
        return list(seen)

    @cached_property
    def roles(self) -> dict[str, str]:
        """{server: "server", client: "client"}, server first.

        By the scenario's steps (listen, connect), else by the sockets (a listener or a SYN_RECEIVED
        socket makes a server, a SYN_SENT one a client), else in the order the hosts appear.
        """
        hosts = self.hosts
        if len(hosts) < 2:
            raise ValueError("the trace has fewer than two hosts: nothing to film")
        steps, states = self.kind(Kind.STEP), self.kind(Kind.STATE)

        def first(records, match) -> str | None:
            return next((h for r in records if match(r) for h in r.get("target", r["host"]).split(",")
                         if h in hosts), None)

        server = first(steps, lambda r: r["action"] == "listen")
        client = first(steps, lambda r: r["action"] == "connect")
        server = server or first(states, lambda r: r["to"] in ("LISTEN", "SYN_RECEIVED") and r["host"] != client)
        client = client or first(states, lambda r: r["to"] == "SYN_SENT" and r["host"] != server)
        server = server or next((h for h in hosts if h != client), hosts[0])
        client = client if client and client != server else next(h for h in hosts if h != server)
        return {server: "server", client: "client"}

    @property
    def server(self) -> str:
        return next(iter(self.roles))

    @property
    def client(self) -> str:
        return list(self.roles)[1]

    @cached_property
    def _hosts_by_addr(self) -> dict[str, str]:
        # each host's own addresses: its packets' (the latest wins) and its connection sockets' (the first)
        by_ip: dict[str, str] = {}
        for r in self.records:
            if r["kind"] == Kind.PACKET:
                by_ip[r["src" if r["dir"] == Direction.OUT else "dst"].rsplit(":", 1)[0]] = r["host"]
            elif r["kind"] == Kind.STATE and not is_listener(r):
                by_ip.setdefault(r["local"].rsplit(":", 1)[0], r["host"])
        return by_ip

    def host_of(self, addr: str, default: str | None = None) -> str | None:
        """The host whose address ``addr`` ("ip:port" or "ip") is, as its capture and sockets show."""
        return self._hosts_by_addr.get(addr.rsplit(":", 1)[0] if addr.count(":") else addr, default)

    # ---- shaping -----------------------------------------------------------------------------
    @cached_property
    def _delays(self) -> dict[str, tuple[list[float], list[float]]]:
        out: dict[str, tuple[list[float], list[float]]] = {}
        for r in self.kind(Kind.SHAPER):
            times, delays = out.setdefault(r["host"], ([], []))
            times.append(r["t"])
            delays.append((r.get("delay_ms") or 0) / 1000.0 if r.get("backend") else 0.0)
        return out

    def delay_at(self, host: str, t: float) -> float:
        """The egress delay (s) in force on ``host`` at ``t``: its latest shaper record at or before ``t``
        (0 before any, and after a clear)."""
        times, delays = self._delays.get(host, ((), ()))
        i = bisect.bisect_right(times, t)
        return delays[i - 1] if i else 0.0

    # ---- sockets and console -----------------------------------------------------------------
    @cached_property
    def sockets(self) -> dict[tuple[str, str, str], list[dict]]:
        out: dict[tuple[str, str, str], list[dict]] = {}
        for r in self.kind(Kind.STATE):
            out.setdefault((r["host"], r["local"], r["remote"]), []).append(r)
        return out

    def states(self, host: str, listener: bool | None = None, since: float | None = None) -> list[dict]:
        """``host``'s state records from ``since`` on: all, only its listeners' (True) or none of them (False)."""
        return [r for r in self.kind(Kind.STATE, host) if (since is None or r["t"] >= since)
                and (listener is None or listener == is_listener(r))]

    def console(self, host: str, stream: str | None = None, since: float | None = None) -> list[dict]:
        return [r for r in self.kind(Kind.CONSOLE, host) if (since is None or r["t"] >= since)
                and (stream is None or r.get("stream") == stream)]

    def span(self, kind: Kind | str, start: int = 0, stop: int | None = None, host: str | None = None) -> list[dict]:
        """The records of ``kind`` (``host``'s, if given) at trace positions ``start`` <= p < ``stop``, in
        trace order: what a view shows up to a record, or between two steps."""
        records = self.kind(kind, host)
        positions = self._positions(kind, host)  # bisect's key= is 3.10+: the positions, listed once
        lo = bisect.bisect_left(positions, start) if start else 0
        hi = len(records) if stop is None else bisect.bisect_left(positions, stop)
        return records[lo:hi]

    def steps(self, status: StepStatus | str | None = None) -> list[dict]:
        """The step records (of one status, if given), in trace order."""
        return [r for r in self.kind(Kind.STEP) if status is None or r["status"] == status]

    # ---- the clock's correction --------------------------------------------------------------
    def shift(self, host: str, seconds: float) -> None:
        """Move ``host``'s records by ``seconds`` (rounded to the nanosecond) and re-sort the trace."""
        if not seconds:
            return
        for r in self.records:
            if r["host"] == host:
                r["t"] = round(r["t"] + seconds, 9)
        self.records.sort(key=sort_key)
        self._build()
