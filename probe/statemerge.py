"""One stream of TCP state records from two observers: the tracepoint and inet_diag.

Pure (no I/O, no clock): feed it what the observers saw, ask it for records.

- ``add_tracepoint(ev)``: a ``sock/inet_sock_set_state`` event from :mod:`probe.kstates` (``t_ns``,
  ``local``, ``remote``, ``from``, ``to``, ``sk``). Exact kernel times.
- ``add_kernel(ev)``: a retransmission/reset event (``kind: "kernel"``); passes through, in time
  order, with ``state`` filled from the socket's state at that time when the tracepoint has none.
- ``add_poll(t_ns, changes)``: one inet_diag poll (every poll, even without changes) and the changes
  :class:`probe.sockets.SocketWatcher` found in it.
- ``flush(now_ns, force=False)``: the records whose inputs are older than ``hold_ns`` (all with
  ``force``), in time order per socket.

Why a hold: the two observers are asynchronous. A poll may see a state before the tracepoint line
for it is read, and the raw tracepoint records of two CPUs arrive in two batches. Everything waits
``hold_ns`` (100 ms) and is then processed in kernel-time order, a poll at ``t + margin_ns`` so that
tracepoint events within the dump's own uncertainty come first.

Merge rules (per socket, keyed by ``(local, remote)`` as inet_diag names it):

1. A tracepoint transition is emitted with its time, ``source: "tracepoint"``, ``from`` being the
   state last emitted for the socket (the tracepoint's own when none). A child socket's
   ``LISTEN->SYN_RECV`` whose socket is already SYN_RECEIVED (inet_diag saw the request socket when
   the SYN arrived) is a duplicate and dropped: SYN_RECEIVED keeps inet_diag's earlier time.
2. ``CLOSE->SYN_SENT`` is traced before the local port is chosen (``local`` ends in ``:0``): it is
   parked until a later tracepoint event of the same ``sk`` or an inet_diag SYN_SENT socket with
   the same local address and remote names its port.
3. ``FIN_WAIT2->CLOSE`` and ``CLOSING->CLOSE`` are what the tracepoint shows when the kernel swaps
   the socket for a timewait socket, which it cannot see. The first poll that began after it
   decides: inet_diag shows TIME_WAIT -> ``X->TIME_WAIT`` at the tracepoint's time with
   ``source: "tracepoint+inet_diag"`` (time from the tracepoint, state from inet_diag); the socket
   still shows X (an orphaned FIN_WAIT2 lives on as a timewait socket in substate FIN_WAIT2) -> no
   record, the socket stays X; gone -> ``X->CLOSED`` with ``source: "tracepoint"``.
4. An inet_diag change is dropped when the socket already is in that state, or when the tracepoint's
   timeline of the socket was in that state at some moment of the dump (from its begin to its end,
   ``add_poll``'s ``dump_ns``, widened by ``margin_ns``). Otherwise it is
   something the tracepoint cannot see (TIME_WAIT and its expiry, a request socket's SYN_RECEIVED
   from the SYN's arrival and its end, a listener of a process the probe did not start, everything
   when tracefs is unavailable) and is emitted with ``source: "inet_diag"`` and the poll's time.
5. The tracepoint sees every namespace of the kernel: a socket's tracepoint events are held until
   inet_diag (this namespace only) shows the socket or one of its events ran in a process of this
   probe (``owned``); unconfirmed after ``UNCONFIRMED_NS`` they are dropped (``dropped_foreign``).
6. TIME_WAIT of an orphaned socket (its application already gone, as the seed's server): the kernel
   swaps it for a timewait socket in substate FIN_WAIT2 when our FIN is acknowledged, and it enters
   TIME_WAIT when the peer's FIN arrives, which no tracepoint reports. The capture sees that FIN
   arrive (``add_fin``): a TIME_WAIT record (rule 3 or 4) takes the FIN's arrival time when that is
   later than the swap (for a socket still owned by its application the FIN causes the swap, and
   the swap's time stands).
"""

from __future__ import annotations

import heapq
import itertools

TRACEPOINT, INET_DIAG, BOTH = "tracepoint", "inet_diag", "tracepoint+inet_diag"
SWAPPED_FROM = ("FIN_WAIT2", "CLOSING")
HISTORY = 16
UNCONFIRMED_NS = 1_000_000_000  # a socket neither inet_diag nor our nc vouched for this long is another's
PARK_NS = 10_000_000_000  # a SYN_SENT with no port after this long (the connect failed early) is dropped


class StateMerger:
    def __init__(self, hold_ns: int = 100_000_000, margin_ns: int = 2_000_000, confirm: bool = True):
        self.hold_ns = hold_ns
        self.confirm = confirm
        self.margin_ns = margin_ns
        self._queue: list = []
        self._n = itertools.count()
        self._state: dict[tuple[str, str], str] = {}
        self._history: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._diag: dict[tuple[str, str], str] = {}
        self._sk: dict[int, tuple[str, str]] = {}
        self._parked: dict[int, dict] = {}
        self._swaps: dict[tuple[str, str], tuple[int, str]] = {}
        self._fin_in: dict[tuple[str, str], int] = {}  # when the peer's FIN last arrived (capture)
        self._diag_hi = 0  # the end of the dump being processed
        self.dropped_unresolved = 0
        self.dropped_foreign = 0
        self._owned_sk: set[int] = set()
        self._confirmed: set[tuple[str, str]] = set()
        self._unconfirmed: dict[tuple[str, str], list[tuple[str, dict]]] = {}

    # --- input -------------------------------------------------------------------------------
    def add_tracepoint(self, ev: dict) -> None:
        heapq.heappush(self._queue, (ev["t_ns"], next(self._n), "tp", ev))

    def add_kernel(self, ev: dict) -> None:
        heapq.heappush(self._queue, (ev["t_ns"], next(self._n), "kernel", ev))

    def add_fin(self, local: str, remote: str, t_ns: int) -> None:
        """The capture saw a FIN from ``remote`` arrive for ``local`` (rule 6)."""
        self._fin_in[(local, remote)] = t_ns

    def _time_wait_at(self, key: tuple[str, str], not_before: int, not_after: int) -> int:
        fin = self._fin_in.get(key)
        return fin if fin is not None and not_before < fin <= not_after else not_before

    def add_poll(self, t_ns: int, changes: list[dict], dump_ns: tuple[int, int] | None = None) -> None:
        """``dump_ns``: when the dump began and ended (a dump of many sockets takes milliseconds, and a
        state it shows was there at some moment in between); without it, ``t_ns`` +- ``margin_ns``."""
        lo, hi = dump_ns if dump_ns else (t_ns, t_ns)
        heapq.heappush(self._queue, (hi + self.margin_ns, next(self._n), "poll",
                                     (t_ns, changes, lo - self.margin_ns, hi + self.margin_ns)))

    # --- output ------------------------------------------------------------------------------
    def flush(self, now_ns: int, force: bool = False) -> list[dict]:
        out: list[dict] = []
        while self._queue and (force or self._queue[0][0] <= now_ns - self.hold_ns):
            _, _, what, item = heapq.heappop(self._queue)
            if what == "tp":
                self._tracepoint(item, out)
            elif what == "kernel":
                self._kernel(item, out)
            else:
                self._poll(*item, out)
        for key, held in list(self._unconfirmed.items()):
            if held[0][1]["t_ns"] < now_ns - UNCONFIRMED_NS:
                del self._unconfirmed[key]
                self.dropped_foreign += 1
        for sk, ev in list(self._parked.items()):
            if ev["t_ns"] < now_ns - PARK_NS:
                del self._parked[sk]
                self.dropped_unresolved += 1
        return out

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._parked) + len(self._swaps)

    # --- rules -------------------------------------------------------------------------------
    def _tracepoint(self, ev: dict, out: list[dict]) -> None:
        sk = ev.get("sk") or 0
        if sk and ev.get("owned"):
            self._owned_sk.add(sk)
        key = (ev["local"], ev["remote"])
        if ev["local"].endswith(":0"):
            if sk in self._sk:
                key = self._sk[sk]
            else:
                if sk:
                    self._parked[sk] = ev
                return
        if sk:
            self._sk[sk] = key
            if sk in self._owned_sk:
                self._confirm(key, out)
            parked = self._parked.pop(sk, None)
            if parked is not None:
                self._accept(key, "tp", parked, out)
            if ev["to"] == "CLOSED":
                del self._sk[sk]
                self._owned_sk.discard(sk)
        self._accept(key, "tp", ev, out)

    def _accept(self, key: tuple[str, str], what: str, ev: dict, out: list[dict]) -> None:
        """Process an event of a socket known to be this host's; hold it until then.

        Namespaces with the same addresses on one kernel (test sessions side by side) look alike to the
        tracepoint: a socket counts as this host's once inet_diag (which sees only this namespace)
        has shown it, or one of its events ran in a process of ours (kstates' ``owned``)."""
        if self.confirm and key not in self._confirmed:
            self._unconfirmed.setdefault(key, []).append((what, ev))
            return
        if what == "tp":
            self._transition(key, ev, out)
        else:
            self._kernel_out(ev, out)

    def _confirm(self, key: tuple[str, str], out: list[dict]) -> None:
        if key in self._confirmed:
            return
        self._confirmed.add(key)
        for what, ev in self._unconfirmed.pop(key, []):
            self._accept(key, what, ev, out)

    def _transition(self, key: tuple[str, str], ev: dict, out: list[dict]) -> None:
        if key in self._swaps:  # a new life of the 4-tuple before the poll decided: it had closed
            self._settle_swap(key, None, out)
        current = self._state.get(key)
        to = ev["to"]
        if current == to:
            return
        if to == "CLOSED" and current in SWAPPED_FROM:
            self._swaps[key] = (ev["t_ns"], current)
            return
        self._emit(key, current or ev["from"], to, ev["t_ns"], TRACEPOINT, out)

    def _poll(self, t_ns: int, changes: list[dict], lo: int, hi: int, out: list[dict]) -> None:
        self._diag_hi = hi
        for c in changes:
            key = (c["local"], c["remote"])
            self._confirm(key, out)
            if c["to"] == "CLOSED":
                self._diag.pop(key, None)
            else:
                self._diag[key] = c["to"]
        for c in changes:
            if c["to"] == "SYN_SENT" and self._parked:
                self._unpark(c, out)
        for key, (t_swap, _) in list(self._swaps.items()):
            if lo > t_swap:  # the dump began after the swap
                self._settle_swap(key, self._diag.get(key), out)
        for c in changes:
            key = (c["local"], c["remote"])
            if key in self._swaps or self._state.get(key) == c["to"] or self._explained(key, c["to"], lo, hi):
                continue
            t = t_ns
            if c["to"] == "TIME_WAIT":  # not after the dump saw it, not before the last record
                hist = self._history.get(key)
                t = self._time_wait_at(key, hist[-1][0] if hist else 0, hi) if key in self._fin_in else t_ns
            self._emit(key, self._state.get(key) or c["from"], c["to"], t, INET_DIAG, out)

    def _unpark(self, change: dict, out: list[dict]) -> None:
        ip = change["local"].rsplit(":", 1)[0]
        for sk, ev in sorted(self._parked.items(), key=lambda kv: kv[1]["t_ns"]):
            if ev["remote"] == change["remote"] and ev["local"] == f"{ip}:0":
                key = (change["local"], change["remote"])
                del self._parked[sk]
                self._sk[sk] = key
                self._accept(key, "tp", ev, out)
                return

    def _settle_swap(self, key: tuple[str, str], diag_state: str | None, out: list[dict]) -> None:
        t_swap, frm = self._swaps.pop(key)
        if diag_state == "TIME_WAIT":
            self._emit(key, frm, "TIME_WAIT", self._time_wait_at(key, t_swap, self._diag_hi), BOTH, out)
        elif diag_state != frm:
            self._emit(key, frm, "CLOSED", t_swap, TRACEPOINT, out)
        # else: a timewait socket in substate frm; inet_diag will tell how it goes on

    def _explained(self, key: tuple[str, str], state: str, lo: int, hi: int) -> bool:
        """Was the socket in ``state`` at some time from ``lo`` to ``hi`` by what was emitted?"""
        hist = self._history.get(key, ())
        at_lo = "CLOSED"
        for t, s in hist:
            if t <= lo:
                at_lo = s
            elif t <= hi and s == state:
                return True
        return at_lo == state and bool(hist)

    def _kernel(self, ev: dict, out: list[dict]) -> None:
        sk = ev.get("sk") or 0
        key = (ev["local"], ev["remote"])
        if sk and (ev.get("owned") or sk in self._owned_sk):
            self._confirm(key, out)
        self._accept(key, "kernel", ev, out)

    def _kernel_out(self, ev: dict, out: list[dict]) -> None:
        rec = {k: v for k, v in ev.items() if k not in ("sk", "pid", "owned")}
        if rec.get("state") is None:
            rec["state"] = self._state_at((ev["local"], ev["remote"]), ev["t_ns"])
        out.append(rec)

    def _state_at(self, key: tuple[str, str], t_ns: int) -> str | None:
        state = None
        for t, s in self._history.get(key, ()):
            if t <= t_ns:
                state = s
        return state

    def _emit(self, key: tuple[str, str], frm: str, to: str, t_ns: int, source: str, out: list[dict]) -> None:
        hist = self._history.setdefault(key, [])
        if hist and hist[-1][0] > t_ns:
            t_ns = hist[-1][0]  # never out of time order within one socket
        hist.append((t_ns, to))
        del hist[:-HISTORY]
        self._state[key] = to
        out.append({"kind": "state", "t_ns": t_ns, "local": key[0], "remote": key[1], "from": frm, "to": to,
                    "source": source})
        if to == "CLOSED" and len(self._history) > 4096:  # forget long-closed sockets, oldest first
            for old in [k for k, s in self._state.items() if s == "CLOSED"][:1024]:
                self._state.pop(old, None)
                self._history.pop(old, None)
                self._confirmed.discard(old)
