"""The provisioning overhead row: how long ``make film DELAY=0.3`` spends beyond the scenario itself.

Runs ``lab.yml`` (testbed, provision, film, teardown: what ``make film`` runs) on the embedded lab
through ansible-runner (what ``tcplab film`` uses, so each task's own duration is known), on a warm
machine: one warm-up run first, uncounted, builds the wheelhouse. For each counted run it prints

- ``wall``: the playbook's wall time, start to end;
- ``scenario``: the run's own duration, ``duration_s`` in its run.json (the controller's start to end
  of the run) - the baseline, measured in the same run;
- ``overhead`` = wall - scenario, against the target of 10 s, and wall / scenario as a ratio;

then where the overhead goes: each play's time and the slowest tasks (the longest host's time).
Each run gets its own TCPLAB_HOME and runs directory under a temporary directory; the wheelhouse is
the repository's (warm). Run as root from the repository root, under the lab lock:

    flock /tmp/tcplab-dev/lab.lock .venv/bin/python -m bench.provision_overhead [--runs 2] [--delay 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 10.0


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["created"]).timestamp()


def film_once(work: Path, delay: float, inventory: str | None) -> dict:
    """One lab.yml run; its wall time, its run.json's duration and its events."""
    import ansible_runner

    home, runs = work / "home", work / "runs"
    events: list[dict] = []
    (work / "runner").mkdir(parents=True)
    extravars = {"tcplab_delay": delay, "tcplab_home": str(home), "tcplab_runs_dir": str(runs)}
    kwargs = dict(private_data_dir=str(work / "runner"), project_dir=str(REPO), playbook="lab.yml",
                  envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")},
                  extravars=extravars, quiet=True, event_handler=lambda e: events.append(e) or True)
    if inventory:
        kwargs["inventory"] = str(REPO / inventory)
    t0 = time.monotonic()
    try:
        runner = ansible_runner.run(**kwargs)
        wall = time.monotonic() - t0
    finally:  # whatever the playbook's teardown did not reach: the lab, the controller, the probes
        subprocess.run([sys.executable, "-m", "controller.testbed.cli", "down", "--json"], cwd=REPO,
                       env={**os.environ, "TCPLAB_HOME": str(home)}, capture_output=True, timeout=120)
    if runner.rc != 0:
        failed = [e["event_data"].get("task") for e in events if e.get("event") == "runner_on_failed"]
        raise SystemExit(f"lab.yml failed (rc {runner.rc}): tasks {failed}; artifacts in {work / 'runner'}")
    (run_json,) = runs.glob("*/run.json")
    return {"wall_s": wall, "scenario_s": float(json.loads(run_json.read_text())["duration_s"]), "events": events}


def plays(events: list[dict], end: float) -> list[tuple[str, float]]:
    starts = [(e["event_data"].get("play", "?"), _ts(e)) for e in events if e.get("event") == "playbook_on_play_start"]
    return [(name, (starts[i + 1][1] if i + 1 < len(starts) else end) - t) for i, (name, t) in enumerate(starts)]


def slowest_tasks(events: list[dict], n: int) -> list[tuple[str, float]]:
    """The n slowest tasks, each by its slowest host (hosts run a task in parallel); meta tasks
    (flush_handlers, end_host) have no duration of their own and are left out."""
    longest: dict[str, float] = defaultdict(float)
    for e in events:
        d = e.get("event_data") or {}
        if e.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_skipped") and \
                d.get("task_action") not in ("meta", "ansible.builtin.meta"):
            key = f"{d.get('role') + ' : ' if d.get('role') else ''}{d.get('task')}"
            longest[key] = max(longest[key], float(d.get("duration") or 0.0))
    return sorted(longest.items(), key=lambda kv: -kv[1])[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description="seconds lab.yml spends beyond the scenario's own duration")
    parser.add_argument("--runs", type=int, default=2, help="counted runs after the warm-up (default 2)")
    parser.add_argument("--delay", type=float, default=0.3, help="the seed's delay, as make film DELAY=")
    parser.add_argument("--inventory", help="an inventory relative to the repository (default: ansible.cfg's)")
    parser.add_argument("--no-warmup", action="store_true", help="count the first run too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.provision_overhead: needs root (it builds the embedded lab)", file=sys.stderr)
        return 2
    results = []
    tmp = tempfile.mkdtemp(prefix="tcplab-bench-provision-")  # kept when a run fails, for its artifacts
    for i in range(args.runs + (0 if args.no_warmup else 1)):
        r = film_once(Path(tmp) / f"run{i}", args.delay, args.inventory)
        warm = i > 0 or args.no_warmup
        print(f"{'run' if warm else 'warm-up'} {i}: wall {r['wall_s']:.1f} s, scenario {r['scenario_s']:.1f} s, "
              f"overhead {r['wall_s'] - r['scenario_s']:.1f} s", flush=True)
        if warm:
            results.append(r)
    shutil.rmtree(tmp, ignore_errors=True)
    overhead = [r["wall_s"] - r["scenario_s"] for r in results]
    best = min(range(len(results)), key=lambda i: overhead[i])
    r = results[best]
    end = max(_ts(e) for e in r["events"] if "created" in e)
    first = min(_ts(e) for e in r["events"] if "created" in e)
    print(f"\nansible-playbook's start-up, before the first event: {r['wall_s'] - (end - first):.1f} s")
    print(f"\nprovisioning overhead (DELAY={args.delay}, warm machine, {len(results)} runs)")
    print(f"  {'':<10}{'wall s':>10}{'scenario s':>12}{'overhead s':>12}{'wall/scenario':>15}")
    for i, x in enumerate(results):
        print(f"  run {i + 1:<6}{x['wall_s']:>10.1f}{x['scenario_s']:>12.1f}{overhead[i]:>12.1f}"
              f"{x['wall_s'] / x['scenario_s']:>14.1f}x")
    verdict = "meets" if min(overhead) <= TARGET_S else "misses"
    print(f"  best overhead {min(overhead):.1f} s: {verdict} the target of {TARGET_S:.0f} s")
    print("\neach run's plays (s), in order:")
    for i, x in enumerate(results):
        ev = [e for e in x["events"] if "created" in e]
        row = "  ".join(f"{secs:5.1f}" for _, secs in plays(x["events"], max(_ts(e) for e in ev)))
        print(f"  run {i + 1:<6}{row}")
    print("\nwhere the best run's time goes, by play:")
    for name, secs in plays(r["events"], end):
        print(f"  {secs:6.1f} s  {name}")
    print("the slowest tasks (the longest host's time):")
    for name, secs in slowest_tasks(r["events"], 15):
        print(f"  {secs:6.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
