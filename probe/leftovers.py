"""The start-up sweep: what a probe killed with -9 left on its host, removed before anything else.

A probe that ends normally (or is stopped by a signal, or by its dead-man switch) undoes what it
did. One killed with SIGKILL, or on a host that lost power, cannot: its successor does it first,
before it opens its observers or says hello, so a host is never shaped by a probe that is gone.
Only what a probe makes, recognised by its own marks, never by a process or program name:

- the shaper's tc layout on the lab interface (root ``prio 1:`` carrying ``netem 20:``), and every
  ``TCPLAB-SHAPE-*`` chain in iptables' mangle table with its jump (:func:`probe.shaper.sweep`);
- the nc whose pid is in ``<home>/nc.pid`` while it still runs nc (:func:`probe.endpoint.sweep`);
- the TCP knobs a run changed, back to the values saved in ``<home>/sysctls.saved.json``
  (:func:`probe.sysctls.sweep`);
- this host's tracefs instances ``tcplab-<host>-<pid>`` whose pid is dead
  (:func:`probe.kstates.sweep_host`).

:func:`sweep` returns one line per thing removed; the probe logs them (``leftovers_swept``) and
emits ``{"kind": "sweep", "t_ns", "removed": [...]}`` when there were any.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from probe import kstates, sysctls
from probe.endpoint import sweep as sweep_endpoints
from probe.shaper import sweep as sweep_shaping

log = structlog.get_logger("probe.leftovers")

Netlink = Callable[..., Awaitable]
MAX_ITEMS, MAX_LINE = 256, 256  # the sweep event's bounds (tcplab.wire.bodies)


async def sweep(netlink: Netlink, host: str, ifname: str, port: int, home: Path) -> list[str]:
    """Remove a killed probe's leftovers; what was removed. ``netlink`` runs the shaper's part on
    the probe's netlink thread (pyroute2 refuses a thread whose loop runs). A part that fails is
    logged (``leftovers_sweep_failed``) and the probe starts all the same: a probe that refused to
    start could not clear anything either, and the controller's ``shape clear`` reuses our layout."""
    parts = (("shaping", lambda: netlink(sweep_shaping, ifname=ifname, port=port), "{}"),
             ("nc", lambda: asyncio.to_thread(sweep_endpoints, home), "nc pid {}"),
             ("sysctls", lambda: asyncio.to_thread(sysctls.sweep, home), "sysctl {}"),
             ("tracefs", lambda: asyncio.to_thread(kstates.sweep_host, host), "tracefs instance {}"))
    removed: list[str] = []
    for part, run, line in parts:
        try:
            removed += [line.format(item) for item in await run()]
        except Exception as e:
            log.error("leftovers_sweep_failed", part=part, error=repr(e))
    if removed:
        log.warning("leftovers_swept", removed=removed)
    return removed


def event(removed: list[str]) -> dict:
    """The ``sweep`` event of what :func:`sweep` removed, within the wire's bounds for it
    (tcplab.wire.bodies: at most MAX_ITEMS lines; the rest counted in the last)."""
    lines = [r[:MAX_LINE] for r in removed]
    if len(lines) > MAX_ITEMS:
        lines = lines[:MAX_ITEMS - 1] + [f"and {len(lines) - MAX_ITEMS + 1} more"]
    return {"kind": "sweep", "t_ns": time.monotonic_ns(), "removed": lines}
