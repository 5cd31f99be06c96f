"""Runs a controller left behind when it ended mid-run (kill -9, a crash, a power cut), and the
probes that were shaping for them.

- At a run's start the runner writes ``<run dir>/.running`` (:func:`mark_started`): the
  controller's process identity (boot id, pid, start time: a recycled pid is not mistaken for it)
  and what run.json needs (scenario, delay, port, hosts). The run's finish removes it
  (:func:`mark_finished`), after run.json is written.
- A controller starting (:func:`recover`) looks in its runs directory for ``.running`` files whose
  process is gone. Each such run is marked ``failed`` with its reason, "the controller ended during
  the run (pid N)": trace.jsonl from the records the partial file holds (flushed as they arrived),
  run.json, and the film's files from them, so ``tcplab render``/``replay`` and ``tcplab watch``
  see an ended run.
- Its hosts are owed a clean-up (:class:`Cleanup`): when each says hello again (a probe says hello
  after 5 s without a word from its controller), the controller sends ``abort`` (its nc ended) and
  ``shape clear``, whatever the probe's own dead-man switch already did (clearing twice is harmless).
  A host that fell silent during a run is owed one too, when it speaks again (controller.liveness).
  After the clean-up of a host of an interrupted run, a ``sync`` (every event the probe held is in)
  and what it did while its controller was gone goes into that run's trace (controller.aftermath).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from dataclasses import dataclass

import structlog

from controller import report, rfc9293
from controller.film.render import render_all
from controller.run import RECEIVED
from controller.trace.reader import NotATrace, read_lines
from controller.trace.schema import RunStatus, StepStatus, sort_key
from controller.trace.writer import line
from tcplab.actions import abort, sysctl
from tcplab.files import atomic_write

if TYPE_CHECKING:
    from controller.bus import ProbeBus

log = structlog.get_logger("controller")

MARKER = ".running"
CLEANUP_TIMEOUT_S = 5.0


def process_identity(pid: int) -> str | None:
    """``boot id:pid:start time`` of a running process, None if there is none with that pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # ended, not yet reaped
        return None
    return f"{boot}:{pid}:{fields[19]}"  # field 22 of stat: the start time, in clock ticks since boot


def mark_started(run_dir: Path, facts: dict) -> None:
    """The marker of a run in progress: this process and ``facts`` (scenario, delay_s, port, hosts ...)."""
    body = {"pid": os.getpid(), "process": process_identity(os.getpid()), "started_unix": time.time(), **facts}
    atomic_write(Path(run_dir) / MARKER, json.dumps(body, sort_keys=True) + "\n")


def mark_finished(run_dir: Path) -> None:
    (Path(run_dir) / MARKER).unlink(missing_ok=True)
    (Path(run_dir) / RECEIVED).unlink(missing_ok=True)


@dataclass(frozen=True)
class Interrupted:
    """A run a killed controller left, as its hosts' late events need it (controller.aftermath)."""

    dir: Path
    start_ns: int | None                            # the run's start on the controller's CLOCK_MONOTONIC
    boot: str | None                                # ... of this boot (the marker's process identity)
    received: dict[str, tuple[str | None, int]]     # host -> (session, upto) the trace holds


def read_received(run_dir: Path) -> dict[str, tuple[str | None, int]]:
    """The last ``.received`` line of each host (controller.run.Run.note_received)."""
    out: dict[str, tuple[str | None, int]] = {}
    try:
        text = (Path(run_dir) / RECEIVED).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for row in text.splitlines():
        parts = row.split()
        if len(parts) == 3 and parts[2].isdigit():
            out[parts[0]] = (None if parts[1] == "-" else parts[1], int(parts[2]))
    return out


def reason(pid: object) -> str:
    return f"the controller ended during the run (pid {pid})"


def recover(runs_dir: Path) -> dict[str, Interrupted]:
    """Mark failed every run in ``runs_dir`` whose controller ended during it; the hosts of those
    runs, each with its (latest) interrupted run."""
    hosts: dict[str, Interrupted] = {}
    for marker in sorted(Path(runs_dir).glob(f"*/{MARKER}")):
        try:
            facts = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            facts = {}
        if not isinstance(facts, dict):
            facts = {}
        pid = facts.get("pid")
        if isinstance(pid, int) and facts.get("process") and process_identity(pid) == facts["process"]:
            continue  # that controller still runs (another one's runs directory): its run, not ours
        start_ns, process = facts.get("start_ns"), facts.get("process")
        run = Interrupted(marker.parent, start_ns if isinstance(start_ns, int) else None,
                          process.split(":")[0] if isinstance(process, str) else None,
                          read_received(marker.parent))
        hosts.update({h: run for h in facts.get("hosts", {}) if isinstance(h, str)})
        try:
            mark_interrupted(marker.parent, facts)
        except Exception as e:  # the marker stays: the next start tries again; the other runs go on
            log.error("run_not_recovered", dir=str(marker.parent), error=repr(e))
            continue
        mark_finished(marker.parent)
    return hosts


def mark_interrupted(run_dir: Path, facts: dict) -> None:
    """trace.jsonl, run.json (status failed, its reason) and the film of a run its controller left."""
    partial, trace = run_dir / "trace.partial.jsonl", run_dir / "trace.jsonl"
    try:
        records = sorted(read_lines(partial, partial=True), key=sort_key)
        readable = True
    except (OSError, NotATrace) as e:  # kept as it is, beside an empty trace: the evidence stays
        log.error("partial_trace_unreadable", dir=str(run_dir), error=str(e))
        records, readable = [], False
    if not trace.exists():
        atomic_write(trace, "".join(line(r) for r in records))
    if readable:
        partial.unlink(missing_ok=True)
    started = [r for r in records if r.get("kind") == "step" and r.get("status") == StepStatus.START]
    ended = {r.get("index") for r in records if r.get("kind") == "step" and r.get("status") != StepStatus.START}
    cut = [r["index"] for r in started if r.get("index") not in ended]
    why = reason(facts.get("pid"))
    started_unix = facts.get("started_unix")
    info = {"run_id": run_dir.name, "ok": False, "status": RunStatus.FAILED.value, "error": why,
            "failed_step": cut[-1] if cut else None, "scenario": facts.get("scenario"),
            "delay_s": facts.get("delay_s"), "port": facts.get("port"), "started_unix": started_unix,
            "duration_s": round(max((r["t"] for r in records), default=0.0), 3),
            "hosts": {h: {"lab_ip": ip, "counters": {}} for h, ip in (facts.get("hosts") or {}).items()}}
    info["rfc9293"] = rfc9293.check(records)
    report.write(run_dir, info, records)
    try:  # the film of what there is; a renderer's failure is not the recovery's
        render_all(run_dir, records)
    except Exception as e:
        log.error("render_failed", dir=str(run_dir), error=repr(e))
    log.warning("run_interrupted_marked", dir=str(run_dir), error=why, records=len(records))


class Cleanup:
    """The hosts owed a clean-up (a killed controller's runs', a host silent during a run): each gets
    abort and shape clear when it is reached again (:meth:`reached`: its hello, its return); then
    ``after(host)`` (the daemon's: a sync, then what the host did meanwhile into its interrupted
    run's trace, controller.aftermath)."""

    def __init__(self, bus: ProbeBus, hosts: set[str], after: Callable[[str], Awaitable[object]] | None = None):
        self.bus = bus
        self.owed = set(hosts)
        self.after = after
        self._tasks: set[asyncio.Task] = set()

    def owe(self, host: str) -> None:
        self.owed.add(host)

    def reached(self, host: str) -> None:
        if host in self.owed:
            task = asyncio.create_task(self.clean(host))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def clean(self, host: str) -> None:
        refused = False
        try:
            for action, args in (("abort", dict(abort.END)), ("shape", {"clear": True}),
                                 ("sysctl", dict(sysctl.RESTORE))):  # each tried, whatever the one before did
                result = await self.bus.command(host, action, args, CLEANUP_TIMEOUT_S)
                if not result.get("ok"):
                    log.error("leftover_cleanup_refused", probe=host, action=action, error=result.get("error"))
                    refused = True
        except (TimeoutError, ConnectionError) as e:
            log.error("leftover_cleanup_failed", probe=host, error=str(e))
            return
        if refused:  # still owed: tried again when it is reached again
            return
        self.owed.discard(host)
        log.info("leftover_cleanup_done", probe=host)
        if self.after is not None:
            try:
                await self.after(host)
            except Exception as e:  # the clean-up is done; what could not be added is logged
                log.error("aftermath_failed", probe=host, error=repr(e))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
