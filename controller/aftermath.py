"""What an interrupted run's probes did after its controller was gone, added to that run's trace.

A controller killed mid-run leaves its probes shaping and running nc. Each probe's dead-man switch
clears them by itself after DEADMAN_S (a ``deadman`` event, then the shaper's clear and nc's last
states), or the restarted controller's clean-up does (:class:`controller.recovery.Cleanup`). Those
events reach the restarted controller after the probe's hello, when no run is in progress: without
this module they would be a log line only. The restarted controller marks the run failed at once
(:func:`controller.recovery.recover`); this keeps, per host of the run, its interrupted run and:

- holds the host's events that arrive outside a run (:meth:`Aftermath.hold`, the bus's
  ``on_outside``), but not those the run's trace already holds: the run wrote, batch by batch, how
  far each probe's events reached it (``.received``: session and ``upto``), and a probe resends
  from what the dead controller had acknowledged, which can be less. A new session (the probe was
  restarted too) is new throughout. At most :data:`MAX_HELD` per host;
- once the clean-up's ``sync`` answered (every event the probe had is in) and the host's clock was
  synced again (:meth:`Aftermath.complete`), maps them onto the run's time (the marker's start on the
  controller's CLOCK_MONOTONIC, which a restart of the controller keeps; after a reboot they are only
  logged), adds them to trace.jsonl in order, says in run.json how many and of what kinds
  (``hosts.<h>.after_controller_lost``), and renders the film again.
"""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
import structlog

from controller import report
from controller.clock import ClockEstimate
from controller.film.render import render_all
from controller.recovery import Interrupted
from controller.run import event_record, trace_fields
from controller.trace.reader import NotATrace, read_lines
from controller.trace.schema import Kind, sort_key
from controller.trace.writer import line
from tcplab.files import atomic_write

log = structlog.get_logger("controller")

MAX_HELD = 20_000  # events per host: more than a probe's outbox window holds of an ordinary run


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


class Aftermath:
    def __init__(self, runs: dict[str, Interrupted] | None = None):
        self.runs: dict[str, Interrupted] = dict(runs or {})
        self.held: dict[str, list[dict]] = {}
        self._locks: dict[Path, asyncio.Lock] = {}

    def hold(self, host: str, session: str | None, items: list[tuple[int, dict]]) -> None:
        """Events of ``host`` that came outside a run: kept if its interrupted run lacks them."""
        run = self.runs.get(host)
        if run is None:
            return
        had_session, upto = run.received.get(host, (None, 0))
        new = [ev for seq, ev in items if session != had_session or seq > upto]
        held = self.held.setdefault(host, [])
        room = MAX_HELD - len(held)
        if len(new) > room:
            log.warning("aftermath_events_not_kept", probe=host, events=len(new) - room, kept=MAX_HELD)
        held.extend(new[:max(room, 0)])

    async def complete(self, host: str, clock: ClockEstimate) -> int | None:
        """Add what ``host`` held to its interrupted run's trace; how many records (None: no such run)."""
        run = self.runs.pop(host, None)
        held = self.held.pop(host, [])
        if run is None:
            return None
        if run.start_ns is None or run.boot is None or run.boot != boot_id():
            log.warning("aftermath_not_placed", probe=host, dir=str(run.dir), events=len(held),
                        why="no start on this boot's clock in the run's marker")
            return 0
        records = []
        for ev in held:
            fields, t_ns = trace_fields(ev), ev.get("t_ns")
            if fields is None or not isinstance(t_ns, int):
                continue
            rec = event_record(host, ev, round((clock.to_controller(t_ns) - run.start_ns) / 1e9, 9), fields)
            if rec["kind"] == Kind.PACKET:
                rec["analysis"] = []  # the run's analysis is done; a late packet is shown as it was
            records.append(rec)
        lock = self._locks.setdefault(run.dir, asyncio.Lock())
        async with lock:  # both hosts of a run write its files
            await asyncio.to_thread(add_to_run, run.dir, host, records)
        log.info("aftermath_added", probe=host, dir=str(run.dir), records=len(records),
                 kinds=dict(collections.Counter(r["kind"] for r in records)))
        return len(records)


def add_to_run(run_dir: Path, host: str, records: list[dict]) -> None:
    """``records`` of ``host`` into a finished run: trace.jsonl, run.json, the film's files."""
    try:
        trace = list(read_lines(run_dir / "trace.jsonl"))
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, NotATrace) as e:
        log.error("aftermath_not_added", probe=host, dir=str(run_dir), error=str(e))
        return
    merged = sorted(trace + records, key=sort_key)
    atomic_write(run_dir / "trace.jsonl", "".join(line(r) for r in merged))
    hosts = info.setdefault("hosts", {})
    hosts.setdefault(host, {})["after_controller_lost"] = {
        "records": len(records), "kinds": dict(collections.Counter(r["kind"] for r in records))}
    report.write(run_dir, info, merged)
    try:
        render_all(run_dir, merged)
    except Exception as e:  # the trace is written; a renderer's failure is not the aftermath's
        log.error("render_failed", dir=str(run_dir), error=repr(e))

