"""The end of a run: the clocks' final fit, the packet analysis, trace.jsonl, run.json and the film.

Called once per run by the controller daemon after the sequencer's last step (also when the run
failed or was cancelled), with the probes' clock estimates, what the run knows of each host and
the controller's own counters per host (``link_counters``: frames refused, duplicates, gaps given
up ...). The run's one trace index is built here (Run.align) and handed to the report and every
renderer: nothing reads trace.jsonl back. A renderer's failure is logged, never the run's: the
trace and run.json are written first.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
from pathlib import Path

import structlog

from controller import report, rfc9293
from controller.clock import ClockEstimate
from controller.film.render import render_all
from controller.run import Run
from controller.scenario import Scenario
from controller.sequencer import Sequencer
from controller.trace.schema import RunStatus

log = structlog.get_logger("controller")


def host_counters(run: Run, host: str, link_counters: dict[str, dict] | None) -> dict[str, int]:
    """run.json ``hosts.<h>.counters``: the probe's latest counters, then the controller's for it."""
    return {**run.counters.get(host, {}), **(link_counters or {}).get(host, {})}


def finish_run(run: Run, scn: Scenario, seq: Sequencer, ok: bool, started_unix: float,
               clocks: dict[str, ClockEstimate], lab_ips: dict[str, str | None],
               link_counters: dict[str, dict] | None = None, status: RunStatus | None = None) -> Path:
    """Write everything a finished run leaves in its directory; return the trace's path.

    ``status``: how the run ended (default: ok or failed, by ``ok``)."""
    alignment = run.align(clocks)
    run.finish_captures()
    index = run.finish_trace()
    run.close()
    status = status or (RunStatus.OK if ok else RunStatus.FAILED)
    info = {"run_id": run.id, "ok": ok, "status": RunStatus(status).value, "error": seq.error,
            "failed_step": seq.failed_step, "unmet": seq.unmet, "connections": run.pairs, "scenario": scn.to_dict(), "delay_s": scn.delay, "port": seq.port,
            "started_unix": started_unix, "duration_s": round(time.time() - started_unix, 3),
            "hosts": {h: {"lab_ip": lab_ips.get(h), "shaper_backend": run.backends.get(h),
                          "shaper_counters": run.shaper_counters.get(h),
                          "packets": run.packets.get(h, 0),
                          "capture": run.capture_stats.get(h),
                          "counters": host_counters(run, h, link_counters),
                          "silences": run.silences.get(h, []),
                          "clock": alignment.get(h, {})}
                      for h in scn.hosts}}
    run.rfc = info["rfc9293"] = rfc9293.check(index.records)
    if not run.rfc["ok"]:  # a transition TCP does not make: the trace (or the kernel) is wrong, the run fails
        info.update(ok=False, error="; ".join(filter(None, [seq.error, rfc9293.verdict(run.rfc)])))
        if info["status"] == RunStatus.OK.value:
            info["status"] = RunStatus.FAILED.value
        seq.error = info["error"]
    report.write(run.dir, info, index)
    try:  # summary.txt and the film's files, from the run's index; a renderer's failure is not the run's
        render_all(run.dir, index)
    except Exception as e:
        log.error("render_failed", error=repr(e))
    run.release()
    give_back()
    return run.trace.path


def give_back() -> None:
    """The finished run's memory back to the system: glibc keeps freed heap until asked (bench.load:
    the idle controller after a 200-connection run holds 4 to 8 MiB less with it)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
