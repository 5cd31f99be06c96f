"""The dead-man switch: a probe whose controller fell silent undoes what it did to the host.

A probe shapes its lab port (a delay of up to 60 s) and runs nc on the controller's say-so. When
the controller is killed, or the network between them goes, nobody would ever clear them. So
:class:`DeadMan` watches the transport's ``last_heard`` (the loop time of the last frame of any
type from the controller: its heartbeat every second, acks, pings, welcomes, commands):

- **Armed** only while there is something to undo (``armed()``: shaping applied, or nc running).
  An idle probe may wait for its controller as long as it likes.
- **Fires** when armed and silent for :data:`DEADMAN_S` (5 s: five missed heartbeats, well above
  the controller's own 3 s for calling a probe silent, well below what a person notices as "the
  delay stayed on"). Firing calls ``disarm()`` (clear the shaping, end the endpoints), logs
  ``deadman_fired`` and emits ``{"kind": "deadman", "t_ns", "silent_s", "cleared": [...]}``. The
  event waits in the transport's unacknowledged events until a controller welcomes the probe
  again, so the trace learns of it on the reconnection.
- **Once per silence**: after firing it waits another ``DEADMAN_S`` before trying again, and only
  if something is still armed (a clear that failed); any frame heard starts a new silence.

The silence counts from ``max(last_heard, start)``: a probe that never heard its controller since
:meth:`watch` started counts from then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("probe.deadman")

DEADMAN_S = 5.0  # silence, while armed, before the probe undoes what it did
CHECK_EVERY_S = 0.25  # how often the silence is looked at: fires at most this late


class DeadMan:
    def __init__(self, last_heard: Callable[[], float], armed: Callable[[], bool],
                 disarm: Callable[[], Awaitable[list[str]]], emit: Callable[[dict], None],
                 deadman_s: float = DEADMAN_S, every_s: float = CHECK_EVERY_S):
        if not 0 < every_s <= deadman_s:
            raise ValueError(f"check interval {every_s} s must be in (0, {deadman_s}] s")
        self.last_heard, self.armed, self.disarm, self.emit = last_heard, armed, disarm, emit
        self.deadman_s, self.every_s = deadman_s, every_s
        self.fired = 0  # how many times it fired (a count for the tests and the log)
        self._since = 0.0  # silence counts from here at the earliest (start, or the last firing)

    def silent_s(self, now: float) -> float:
        """Seconds since the controller was last heard (or since the watch started / last fired)."""
        return now - max(self.last_heard(), self._since)

    def due(self, now: float) -> bool:
        return self.silent_s(now) >= self.deadman_s and self.armed()

    async def check(self) -> list[str] | None:
        """Fire if due: what was cleared; None when not due."""
        now = asyncio.get_running_loop().time()
        if not self.due(now):
            return None
        silent = self.silent_s(now)
        self._since = now  # once per silence: the next try is DEADMAN_S from now
        self.fired += 1
        log.warning("deadman_firing", silent_s=round(silent, 3))
        try:
            cleared = list(await self.disarm())
        except Exception as e:  # the event still goes out; the next try comes DEADMAN_S later
            log.error("deadman_disarm_failed", error=repr(e))
            cleared = []
        log.warning("deadman_fired", silent_s=round(silent, 3), cleared=cleared, still_armed=self.armed())
        self.emit({"kind": "deadman", "t_ns": time.monotonic_ns(), "silent_s": round(silent, 3),
                   "cleared": cleared})
        return cleared

    async def watch(self) -> None:
        """The watcher task: runs until cancelled."""
        self._since = asyncio.get_running_loop().time()
        while True:
            await self.check()
            await asyncio.sleep(self.every_s)
