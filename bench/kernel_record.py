"""The kernel's own record of a run's TCP transitions: the ground truth of the completeness row.

``KernelRecord(hosts, port)`` opens one tracefs instance per lab host (probe.kstates.KernelStates,
``tcplab-witness<i>-<pid>``, trace_clock ``mono``, filtered in the kernel on the lab port) that
takes every socket of that host's address as its own, and reads them in a thread of its own for
the whole run. ``transitions(at_ns, end_ns)`` turns the record into the transitions the trace
should hold, in the trace's names (tcplab.tcpstates), on CLOCK_MONOTONIC nanoseconds:

- each ``sock/inet_sock_set_state`` event is one transition (``how: "tracepoint"``), keyed by
  ``(host, local, remote)`` as inet_diag names the socket; ``CLOSE->SYN_SENT``, traced before the
  kernel picks the local port, takes the port of the next event of the same ``skaddr``. A listener
  (``0.0.0.0:port``) is the host's whose address is first in ``hosts`` (the server).
- TIME_WAIT, which the tracepoint never reports (the kernel swaps the socket for a timewait socket):
  a ``CLOSING->CLOSE`` event, or a ``FIN_WAIT2->CLOSE`` event after the peer socket sent its FIN
  (the peer entered LAST_ACK or FIN_WAIT1 earlier), is ``X->TIME_WAIT`` at the event's time
  (``how: "swap"``). A ``FIN_WAIT2->CLOSE`` before the peer's FIN is an orphaned FIN_WAIT2 living
  on as a timewait socket in substate FIN_WAIT2 (the seed's server, killed by Ctrl-C): no
  transition then; it enters TIME_WAIT when the peer's FIN arrives, which no tracepoint reports;
  its time is taken as the peer's transition that sent the FIN (``how: "peer_fin"``; the FIN is
  on the wire for the link's delay after that: ``bracket_ns`` is the time until the peer saw the
  answering ACK, its next transition). A swap after a reset on the socket is a plain ``X->CLOSED``.
- TIME_WAIT's expiry has no tracepoint either: each TIME_WAIT entry gives an expiry *deadline*
  60 s (TCP_TIMEWAIT_LEN) later; the kernel's timer wheel fires up to 1/8 of that later.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from probe.kstates import KernelStates

TIMEWAIT_NS = 60_000_000_000
WHEEL_SLACK_NS = TIMEWAIT_NS // 8
FIN_SENDERS = ("LAST_ACK", "FIN_WAIT1")


class _Everyone:
    def __contains__(self, pid) -> bool:
        return True


@dataclass
class Transition:
    host: str
    local: str
    remote: str
    frm: str
    to: str
    t_ns: int
    how: str = "tracepoint"
    next_ns: float = float("inf")  # the socket's next transition (the end of this state)
    bracket_ns: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.host, self.local, self.remote


class KernelRecord:
    def __init__(self, hosts: dict[str, str], port: int):
        """``hosts``: lab host name -> its address, the server first."""
        self.hosts, self.port = dict(hosts), port
        self.events: dict[str, list[dict]] = {h: [] for h in hosts}
        self._witness: dict[str, KernelStates] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._missed = 0

    def __enter__(self) -> "KernelRecord":
        try:
            for i, (host, ip) in enumerate(self.hosts.items()):
                self._witness[host] = KernelStates(f"witness{i}", self.port, ip, _Everyone).open()
            for host in self.hosts:
                t = threading.Thread(target=self._read, args=(host,), daemon=True, name=f"witness-{host}")
                t.start()
                self._threads.append(t)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _read(self, host: str) -> None:
        w = self._witness[host]
        while not self._stop.is_set():
            self.events[host].extend(w.read(0.1))

    def stop(self) -> None:
        """Read what is left and close the instances (idempotent)."""
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._threads.clear()
        for host, w in list(self._witness.items()):
            self.events[host].extend(w.read(0))
            self._missed += w.missed_pages
            w.close()
        self._witness.clear()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def missed_pages(self) -> int:
        return self._missed + sum(w.missed_pages for w in self._witness.values())

    # --- the transitions the trace should hold -------------------------------------------------
    def _own(self) -> dict[str, list[dict]]:
        """Each host's events of its own sockets, port-0 SYN_SENT resolved, in time order."""
        server = next(iter(self.hosts))
        out = {}
        for host, ip in self.hosts.items():
            evs = sorted((e for e in self.events[host] if e["local"].startswith(f"{ip}:")
                          or (host == server and e["local"].startswith("0.0.0.0:"))), key=lambda e: e["t_ns"])
            for i, e in enumerate(evs):
                if e["kind"] == "tracepoint" and e["local"].endswith(":0"):
                    later = next((x for x in evs[i + 1:] if x.get("sk") == e["sk"] and not x["local"].endswith(":0")),
                                 None)
                    if later is not None:
                        evs[i] = {**e, "local": later["local"]}
            out[host] = evs
        return out

    def transitions(self, at_ns: int = 0, end_ns: float = float("inf")) -> tuple[list[Transition], list[Transition]]:
        """(transitions, TIME_WAIT expiries due by ``end_ns``), those from ``at_ns`` on."""
        own = self._own()
        fin_sent: dict[tuple[str, str], list[tuple[int, int]]] = {}  # (local, remote) -> (FIN sent, next)
        for evs in own.values():
            per_key: dict[tuple[str, str], list[dict]] = {}
            for e in evs:
                if e["kind"] == "tracepoint":
                    per_key.setdefault((e["local"], e["remote"]), []).append(e)
            for key, kevs in per_key.items():
                for i, e in enumerate(kevs):
                    if e["to"] in FIN_SENDERS:
                        nxt = kevs[i + 1]["t_ns"] if i + 1 < len(kevs) else e["t_ns"]
                        fin_sent.setdefault(key, []).append((e["t_ns"], nxt))
        out: list[Transition] = []
        for host, evs in own.items():
            reset: set[tuple[str, str]] = set()
            for e in evs:
                key = (e["local"], e["remote"])
                if e["kind"] == "kernel":
                    if e["event"] in ("send_reset", "receive_reset"):
                        reset.add(key)
                    continue
                if e["to"] == "CLOSED" and e["from"] in ("FIN_WAIT2", "CLOSING") and key not in reset:
                    peer = [f for f in fin_sent.get((e["remote"], e["local"]), ()) if f[0] <= e["t_ns"] + TIMEWAIT_NS]
                    before = [f for f in peer if f[0] <= e["t_ns"]]
                    if e["from"] == "CLOSING" or before:
                        out.append(Transition(host, *key, e["from"], "TIME_WAIT", e["t_ns"], "swap"))
                    elif peer:
                        sent, acked = peer[0]
                        out.append(Transition(host, *key, e["from"], "TIME_WAIT", sent, "peer_fin",
                                              bracket_ns=acked - sent))
                    continue
                if e["to"] == "CLOSED":
                    reset.discard(key)
                out.append(Transition(host, *key, e["from"], e["to"], e["t_ns"]))
        out.sort(key=lambda t: t.t_ns)
        last: dict[tuple[str, str, str], Transition] = {}
        for t in out:
            if t.key in last:
                last[t.key].next_ns = t.t_ns
            last[t.key] = t
        expiries = [Transition(t.host, t.local, t.remote, "TIME_WAIT", "CLOSED", t.t_ns + TIMEWAIT_NS, "deadline")
                    for t in out if t.to == "TIME_WAIT" and t.t_ns + TIMEWAIT_NS + WHEEL_SLACK_NS <= end_ns
                    and t.t_ns >= at_ns]
        for x in expiries:
            x.next_ns = x.t_ns + WHEEL_SLACK_NS
        return [t for t in out if at_ns <= t.t_ns <= end_ns], expiries
