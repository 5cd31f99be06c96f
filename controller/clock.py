"""Mapping each probe's monotonic clock onto the controller's: offset, drift, and a hard bound.

Each exchange has NTP's four timestamps: the controller sends ``ping`` at T1 (its clock), the
probe stamps it received at T2 and builds the ``pong`` at T3 (the probe's clock; T3 is the pong
envelope's ``time``, T2 its body's ``rx_ns``), the controller receives the pong at T4. The probe's
time between T2 and T3 (its event loop at work) is thus no part of the round trip.

Whatever the delays, the probe read T2 after T1 and T3 before T4, so its offset (probe clock
minus controller clock) lies in ``[T3 - T4, T2 - T1]``: a hard interval as wide as the round trip
``(T4 - T1) - (T3 - T2)``. Offset and drift are fitted NTP-style:

- drift: the slope at which the intervals of the best exchanges (the two with the smallest
  round trip in each ``WINDOW_NS`` of controller time, NTP's clock filter) overlap most: the
  line that fits best through the tube they form (a convex problem, solved by golden section).
  Zero until the exchanges span ``DRIFT_SPAN_NS``; only the last ``HORIZON_NS`` count;
- offset: with the drift removed, every exchange's interval must hold the truth, so the offset
  is the centre of their intersection. ``uncertainty_ns`` is the farthest the truth can be from
  it over every line (any drift) that passes through all the intervals: a hard bound, provided
  the drift is linear over the horizon (and zero while the exchanges span less than
  ``DRIFT_SPAN_NS``: a few seconds at a few ppm is far below the round trip). Unlike the midpoint
  of the single best exchange this uses the fastest *one-way* trip in each direction, which need
  not belong to the same exchange. If the intervals do not intersect (a stepped clock, drift that
  is not linear), the estimate falls back to the best exchange's midpoint and a wider bound.

Events are mapped with the fitted line at their own time (:meth:`ClockEstimate.to_controller`).
What the bound cannot see: a stamp taken late on one side in a way every exchange shares (for
example the controller's asyncio hop between the socket and its T4 stamp, always on the way
back) biases the estimate by half that asymmetry while the bound still contains the truth.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property, partial

from controller.trace.index import TraceIndex
from tcplab.files import atomic_write

WINDOW_NS = 4_000_000_000        # one best exchange per 4 s of controller time
DRIFT_SPAN_NS = 10_000_000_000   # drift needs best exchanges at least 10 s apart
HORIZON_NS = 600_000_000_000     # fit the last 10 minutes: a crystal's drift wanders over hours
MAX_DRIFT = 500e-6               # beyond +-500 ppm a clock is broken, not drifting
MAX_EXCHANGES = 4096             # more than the horizon holds at two pings a second


@dataclass(frozen=True)
class Exchange:
    t1: int  # controller sends ping (controller clock)
    t2: int  # probe receives it (probe clock)
    t3: int  # probe sends pong (probe clock)
    t4: int  # controller receives pong (controller clock)

    @property
    def rtt(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def offset(self) -> float:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def mid(self) -> int:
        return (self.t1 + self.t4) // 2


@dataclass(frozen=True)
class Fit:
    offset_ns: float          # probe minus controller at controller time ref_ns
    drift: float              # d(offset)/d(controller time): 1e-6 is 1 ppm
    ref_ns: int
    rtt_ns: int               # the smallest round trip
    consistent: bool          # every exchange's interval holds the fitted line
    exchanges: tuple = field(default=(), repr=False)

    @cached_property
    def drift_range(self) -> tuple[float, float]:
        """Every drift that some line through all the intervals can have (computed on demand)."""
        if self.drift == 0.0 or not self.consistent:
            return (self.drift, self.drift)
        gap = partial(_gap, self.exchanges, ref=self.ref_ns)
        return (_edge(gap, self.drift, -MAX_DRIFT), _edge(gap, self.drift, MAX_DRIFT))

    def offset_at(self, controller_ns: int) -> float:
        return self.offset_ns + self.drift * (controller_ns - self.ref_ns)

    def uncertainty_at(self, controller_ns: int) -> float:
        """How far the truth at ``controller_ns`` can be from :meth:`offset_at`.

        Over every line that passes through all the intervals (any drift in ``drift_range``),
        the lowest and highest offset at that time; the bound is the farther of the two.
        """
        est = self.offset_at(controller_ns)
        if not self.consistent:
            top = min(self.exchanges, key=lambda ex: ex.rtt)
            lo, hi = _bounds(self.exchanges, self.drift, self.ref_ns)
            return top.rtt / 2 + (lo - hi) + abs(est - (top.offset - self.drift * (top.mid - controller_ns)))
        k = controller_ns - self.ref_ns
        d_lo, d_hi = self.drift_range
        if d_lo == d_hi:
            lo, hi = _bounds(self.exchanges, d_lo, self.ref_ns)
            return max(est - (lo + d_lo * k), hi + d_lo * k - est)
        d = _golden_min(lambda d: _bounds(self.exchanges, d, self.ref_ns)[0] + d * k, d_lo, d_hi)
        lowest = _bounds(self.exchanges, d, self.ref_ns)[0] + d * k
        d = _golden_min(lambda d: -(_bounds(self.exchanges, d, self.ref_ns)[1] + d * k), d_lo, d_hi)
        highest = _bounds(self.exchanges, d, self.ref_ns)[1] + d * k
        return max(est - lowest, highest - est, 0.0)


@dataclass
class ClockEstimate:
    exchanges: deque = field(default_factory=lambda: deque(maxlen=MAX_EXCHANGES))
    samples: int = 0
    _fit: Fit | None = field(default=None, repr=False)

    def add(self, t1_ns: int, probe_tx_ns: int, t4_ns: int, probe_rx_ns: int | None = None) -> None:
        """One exchange: sent at ``t1_ns``, the probe's stamps, received at ``t4_ns``.

        Without ``probe_rx_ns`` (an older probe) the pong's single stamp serves as both.
        """
        rx = probe_tx_ns if probe_rx_ns is None else probe_rx_ns
        ex = Exchange(t1_ns, rx, probe_tx_ns, t4_ns)
        if t4_ns < t1_ns or probe_tx_ns < rx or ex.rtt < 0:
            return
        self.exchanges.append(ex)
        self.samples += 1
        self._fit = None

    @property
    def known(self) -> bool:
        return bool(self.exchanges)

    def fit(self) -> Fit | None:
        if self._fit is None and self.exchanges:
            self._fit = fit(list(self.exchanges))
        return self._fit

    @property
    def offset_ns(self) -> int:
        f = self.fit()
        return 0 if f is None else round(f.offset_at(self.exchanges[-1].mid))

    @property
    def rtt_ns(self) -> int | None:
        f = self.fit()
        return None if f is None else f.rtt_ns

    @property
    def uncertainty_ns(self) -> int | None:
        f = self.fit()
        return None if f is None else round(f.uncertainty_at(self.exchanges[-1].mid))

    def to_controller(self, probe_ns: int) -> int:
        f = self.fit()
        if f is None:
            return probe_ns
        approx = probe_ns - f.offset_ns  # drift is ppm: one refinement is exact to the nanosecond
        return round(probe_ns - f.offset_at(round(approx)))

    def as_dict(self, at_ns: int | None = None) -> dict:
        """The estimate at controller time ``at_ns`` (default: the latest exchange) for run.json."""
        f = self.fit()
        if f is None:
            return {"offset_ns": 0, "uncertainty_ns": None, "samples": 0}
        at = self.exchanges[-1].mid if at_ns is None else at_ns
        return {"offset_ns": round(f.offset_at(at)), "at_ns": at, "drift_ppm": round(f.drift * 1e6, 3),
                "drift_range_ppm": [round(d * 1e6, 3) for d in f.drift_range],
                "uncertainty_ns": round(f.uncertainty_at(at)), "samples": self.samples,
                "rtt_min_ns": f.rtt_ns, "span_s": round((self.exchanges[-1].mid - self.exchanges[0].mid) / 1e9, 3),
                "consistent": f.consistent}


def best_per_window(exchanges: list[Exchange], window_ns: int = WINDOW_NS, keep: int = 1) -> list[Exchange]:
    """The ``keep`` minimum-round-trip exchanges of each window of controller time (NTP's clock filter)."""
    windows: dict[int, list[Exchange]] = {}
    for ex in exchanges:
        windows.setdefault(ex.mid // window_ns, []).append(ex)
    return [ex for k in sorted(windows) for ex in sorted(windows[k], key=lambda e: e.rtt)[:keep]]


def _bounds(exchanges, drift: float, ref: int) -> tuple[float, float]:
    """The intersection of the exchanges' intervals for the offset at ``ref``, given ``drift``."""
    lo = max(ex.t3 - ex.t4 - drift * (ex.mid - ref) for ex in exchanges)
    hi = min(ex.t2 - ex.t1 - drift * (ex.mid - ref) for ex in exchanges)
    return lo, hi


def _golden_min(f, a: float, b: float, tol: float = 1e-10) -> float:
    """The minimum of a convex ``f`` on [a, b] (golden-section search, to ``tol``: 0.0001 ppm)."""
    g = 0.6180339887498949
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(x1), f(x2)
    while b - a > tol:
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = f(x2)
    return (a + b) / 2


def _edge(gap, inside: float, outside: float, tol: float = 1e-10) -> float:
    """Where the convex ``gap`` crosses zero between ``inside`` (<= 0) and ``outside`` (bisection)."""
    if gap(outside) <= 0:
        return outside
    while abs(outside - inside) > tol:
        mid = (inside + outside) / 2
        if gap(mid) <= 0:
            inside = mid
        else:
            outside = mid
    return inside


def fit(exchanges: list[Exchange]) -> Fit:
    ref = exchanges[-1].mid
    exchanges = [ex for ex in exchanges if ex.mid >= ref - HORIZON_NS]
    rtt_min = min(ex.rtt for ex in exchanges)
    drift = 0.0
    if exchanges[-1].mid - exchanges[0].mid >= DRIFT_SPAN_NS and _gap(exchanges, 0.0, ref) > 0:
        # Only when no constant offset fits every exchange: a drift fitted to noise (two probes
        # on one kernel have none) bends a host's timeline by microseconds over a run, enough
        # for a segment to "arrive before it left" with no single shift able to fix it.
        # The drift at which the best exchanges' intervals overlap most (the range of drifts at
        # which all of them still overlap, Fit.drift_range, widens the bound away from ref).
        best = best_per_window(exchanges, keep=2)
        drift = _golden_min(lambda d: _gap(best, d, ref), -MAX_DRIFT, MAX_DRIFT)
    lo, hi = _bounds(exchanges, drift, ref)
    if lo <= hi:
        return Fit((lo + hi) / 2, drift, ref, rtt_min, True, tuple(exchanges))
    # Inconsistent (a stepped clock, drift that is not linear): the best exchange's midpoint,
    # bounded by its own half round trip plus the contradiction.
    top = min(exchanges, key=lambda ex: ex.rtt)
    return Fit(top.offset - drift * (top.mid - ref), drift, ref, rtt_min, False, tuple(exchanges))


def _gap(exchanges, drift: float, ref: int) -> float:
    lo, hi = _bounds(exchanges, drift, ref)
    return lo - hi


def causal_shift(trace: TraceIndex | list[dict], ref: str, host: str, bound_s: float | None = None) -> dict:
    """The smallest shift of ``host``'s times that makes no segment arrive before it left.

    Each segment seen leaving one host and arriving at the other (the trace index's ``pairs``)
    bounds the offset between the two clocks: ref->host gives shift >= t_out(ref) - t_in(host),
    host->ref gives shift <= t_in(ref) - t_out(host). The ping estimate stands when it already fits
    (shift 0); otherwise it moves to the nearest bound. ``bound_s``, the ping estimates' combined
    uncertainty, says the true shift is also within +-bound_s; the intersection of both is
    ``interval_s`` and ``uncertainty_s`` bounds the error left after the shift. Returns seconds.
    """
    lo, hi, pairs = float("-inf"), float("inf"), 0
    for out, inn in TraceIndex.of(trace).pairs:
        if out["host"] == ref and inn["host"] == host:
            lo = max(lo, out["t"] - inn["t"])
            pairs += 1
        elif out["host"] == host and inn["host"] == ref:
            hi = min(hi, inn["t"] - out["t"])
            pairs += 1
    if lo > hi:  # contradictory (a clock stepped during the run): split the difference
        shift = (lo + hi) / 2
    else:
        shift = min(max(0.0, lo), hi)
    a, b = lo, hi
    if bound_s is not None and max(lo, -bound_s) <= min(hi, bound_s):
        a, b = max(lo, -bound_s), min(hi, bound_s)
    finite = a != float("-inf") and b != float("inf")
    return {"shift_s": shift, "lo_s": None if lo == float("-inf") else lo,
            "hi_s": None if hi == float("inf") else hi, "pairs": pairs,
            "interval_s": [a, b] if finite and a <= b else None,
            "uncertainty_s": max(shift - a, b - shift) if finite and a <= b else None}


def write_exchanges(path, clocks: dict[str, ClockEstimate], since_ns: int | None = None) -> int:
    """The raw exchanges, one JSON line each (``host``, ``t1``..``t4`` in ns), so the estimate
    can be checked or redone offline (bench/clock.py does). Returns how many were written."""
    lines = [json.dumps({"host": host, "t1": ex.t1, "t2": ex.t2, "t3": ex.t3, "t4": ex.t4}) + "\n"
             for host, clock in sorted(clocks.items()) for ex in clock.exchanges
             if since_ns is None or ex.t1 >= since_ns]
    atomic_write(path, "".join(lines))
    return len(lines)
