"""Who is connected: one record per probe, its hello, liveness, clock, and event bookkeeping."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from controller.clock import ClockEstimate

ALIVE_S = 5.0


@dataclass
class ProbeLink:
    host: str
    hello: dict
    last_seen: float = field(default_factory=time.monotonic)
    clock: ClockEstimate = field(default_factory=ClockEstimate)
    upto: int = 0                                   # every event <= upto has been received
    pending: set[int] = field(default_factory=set)  # received events above a gap
    duplicates: int = 0

    @property
    def lab_ip(self) -> str:
        return self.hello.get("lab_ip", "")

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_seen < ALIVE_S

    def receive(self, seq: int) -> bool:
        """Note event ``seq``; True if it is new (not a resend of one already held)."""
        if seq <= self.upto or seq in self.pending:
            self.duplicates += 1
            return False
        self.pending.add(seq)
        while self.upto + 1 in self.pending:
            self.upto += 1
            self.pending.discard(self.upto)
        return True

    def give_up_below(self, oldest: int) -> None:
        """The probe holds nothing below ``oldest`` any more: stop waiting for it."""
        if oldest - 1 > self.upto:
            self.upto = oldest - 1
            self.pending = {s for s in self.pending if s > self.upto}
            while self.upto + 1 in self.pending:
                self.upto += 1
                self.pending.discard(self.upto)


class Fleet:
    def __init__(self) -> None:
        self.probes: dict[str, ProbeLink] = {}

    def hello(self, host: str, body: dict) -> ProbeLink:
        """Register a probe. A new process (another pid) starts its event count again."""
        link = self.probes.get(host)
        if link is None or link.hello.get("pid") != body.get("pid"):
            link = ProbeLink(host, dict(body))
            self.probes[host] = link
        link.last_seen = time.monotonic()
        return link

    def seen(self, host: str) -> ProbeLink | None:
        link = self.probes.get(host)
        if link is not None:
            link.last_seen = time.monotonic()
        return link

    def missing(self, hosts: tuple[str, ...] | list[str]) -> list[str]:
        return [h for h in hosts if h not in self.probes or not self.probes[h].alive]

    def status(self) -> dict:
        return {h: {"alive": p.alive, "lab_ip": p.lab_ip, "clock": p.clock.as_dict(), "events": p.upto}
                for h, p in sorted(self.probes.items())}
