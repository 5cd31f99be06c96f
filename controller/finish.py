"""The end of a run: the clocks' final fit, the packet analysis, trace.jsonl, run.json and the film.

Called once per run by the controller daemon after the sequencer's last step (also when the run
failed or was cancelled), with the probes' clock estimates and what the run knows of each host.
A renderer's failure is logged, never the run's: the trace and run.json are written first.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from controller import report
from controller.clock import ClockEstimate
from controller.film.render import render_all
from controller.run import Run
from controller.scenario import Scenario
from controller.sequencer import Sequencer
from controller.trace import load as load_trace

log = structlog.get_logger("controller")


def finish_run(run: Run, scn: Scenario, seq: Sequencer, ok: bool, started_unix: float,
               clocks: dict[str, ClockEstimate], lab_ips: dict[str, str | None]) -> Path:
    """Write everything a finished run leaves in its directory; return the trace's path."""
    alignment = run.align(clocks)
    run.finish_captures()
    path = run.trace.finish()
    run.close()
    info = {"run_id": run.id, "ok": ok, "error": seq.error, "failed_step": seq.failed_step,
            "scenario": scn.to_dict(), "delay_s": scn.delay, "port": seq.port, "started_unix": started_unix,
            "duration_s": round(time.time() - started_unix, 3),
            "hosts": {h: {"lab_ip": lab_ips.get(h), "shaper_backend": run.backends.get(h),
                          "shaper_counters": run.shaper_counters.get(h),
                          "packets": run.packets.get(h, 0),
                          "capture": run.capture_stats.get(h),
                          "clock": alignment.get(h, {})}
                      for h in scn.hosts}}
    report.write(run.dir, info)
    try:  # the film's files come from the finished trace alone; a renderer's failure is not the run's
        render_all(run.dir, load_trace(path))
    except Exception as e:
        log.error("render_failed", error=repr(e))
    return path
