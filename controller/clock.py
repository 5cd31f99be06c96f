"""Mapping each probe's monotonic clock onto the controller's.

NTP-style: the controller sends ``ping`` at t0 (its clock), the probe answers ``pong`` stamped
with its own clock p, the controller receives it at t1. Assuming a symmetric path, the probe's
clock reads ``p`` when the controller's reads ``(t0 + t1) / 2``: offset = p - (t0 + t1) / 2, known
to within half the round trip. The sample with the smallest round trip wins (minimum-RTT filter).
Drift is not modelled yet: runs last minutes and the estimate is refreshed at each run's start.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClockEstimate:
    offset_ns: int = 0          # probe clock minus controller clock
    rtt_ns: int | None = None   # round trip of the best sample so far
    samples: int = 0

    def add(self, t0_ns: int, probe_ns: int, t1_ns: int) -> None:
        rtt = t1_ns - t0_ns
        if rtt < 0:
            return
        self.samples += 1
        if self.rtt_ns is None or rtt < self.rtt_ns:
            self.rtt_ns = rtt
            self.offset_ns = probe_ns - (t0_ns + t1_ns) // 2

    @property
    def known(self) -> bool:
        return self.rtt_ns is not None

    @property
    def uncertainty_ns(self) -> int | None:
        return None if self.rtt_ns is None else self.rtt_ns // 2

    def to_controller(self, probe_ns: int) -> int:
        return probe_ns - self.offset_ns

    def as_dict(self) -> dict:
        return {"offset_ns": self.offset_ns, "uncertainty_ns": self.uncertainty_ns, "samples": self.samples}


def causal_shift(records: list[dict], ref: str, host: str) -> dict:
    """The smallest shift of ``host``'s times that makes no segment arrive before it left.

    Each segment seen leaving one host and arriving at the other bounds the offset between the
    two clocks: ref->host gives shift >= t_out(ref) - t_in(host), host->ref gives
    shift <= t_in(ref) - t_out(host). The ping estimate stands when it already fits (shift 0);
    otherwise it moves to the nearest bound. Returns the shift and the interval in seconds.
    """
    from controller.report import segment_pairs  # the pairing is the report's; avoid a cycle

    lo, hi = float("-inf"), float("inf")
    for out, inn in segment_pairs(records):
        if out["host"] == ref and inn["host"] == host:
            lo = max(lo, out["t"] - inn["t"])
        elif out["host"] == host and inn["host"] == ref:
            hi = min(hi, inn["t"] - out["t"])
    if lo > hi:  # contradictory (a clock stepped during the run): split the difference
        shift = (lo + hi) / 2
    else:
        shift = min(max(0.0, lo), hi)
    return {"shift_s": shift, "lo_s": None if lo == float("-inf") else lo,
            "hi_s": None if hi == float("inf") else hi}
