"""The controller's memory under load: many concurrent connections through one storyline.

    .venv/bin/python -m bench.load [--connections 1,50,200] [--repeat 3] [--delay 0.05] [--wait]

A real controller and two real probes in a fresh pair of namespaces (tests.daemons.Lab, as the
integration tests run them) film scenarios/many-clients.yml with ``count`` set to each number of
connections in turn (without TIME_WAIT's 60 s unless ``--wait``), then the largest ``--repeat``
more times. While each run goes on, the controller's RSS is sampled every 20 ms. Printed per run:
the trace's records, the controller's RSS before, at its peak and after, and the growth per record.

The baseline is the one-connection run of the same invocation: each row prints its growth and its
records as ratios of the baseline's. "Bounded" means two things here: the run's growth follows its
records (the controller keeps a run's records until it has written the film, and nothing more per
connection), and the idle controller settles: after a run it keeps none of its records
(controller.run.Run.release) and what glibc's heap keeps, which grows over the first runs and then
stops (measured on 25 runs of 200 connections: 47.5 MiB after the first, 69 MiB from the 14th on).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tcplab import pidfile
from tests.daemons import Lab
from tests.netns import NetnsPair, require_root

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(self.every_s)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


def scenario(count: int, delay: float, wait: bool) -> dict:
    scn = yaml.safe_load((REPO / "scenarios" / "many-clients.yml").read_text())
    steps = []
    for s in scn["steps"]:
        if s["action"] == "wait" and not wait:
            continue
        if "count" in s:
            s["count"] = count
        s["expect"] = [e.replace("x200", f"x{count}") if count > 1 else e.replace(" x200", "")
                       for e in s.get("expect", [])]
        steps.append(s)
    return {**scn, "name": f"load-{count}", "delay": delay, "steps": steps}


def one(lab: Lab, pid: int, count: int, delay: float, wait: bool) -> dict:
    before = rss_mib(pid)
    sampler = Sampler(pid)
    sampler.start()
    t0 = time.monotonic()
    res, run_dir = lab.run_scenario(scenario(count, delay, wait), timeout=600)
    seconds = time.monotonic() - t0
    peak = sampler.stop()
    if res.returncode != 0:
        raise SystemExit(f"the {count}-connection run failed: {(res.stderr or res.stdout).strip()[-500:]}")
    time.sleep(0.5)
    records = sum(1 for _ in (run_dir / "trace.jsonl").open())
    return {"connections": count, "records": records, "seconds": seconds, "before": before, "peak": peak,
            "after": rss_mib(pid)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="1,50,200", help="comma-separated; 1 (the baseline) is added")
    parser.add_argument("--repeat", type=int, default=15, help="more runs of the largest count")
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--wait", action="store_true", help="wait out TIME_WAIT's 60 s in every run")
    args = parser.parse_args()
    require_root()
    counts = sorted({1, *(int(c) for c in args.connections.split(","))})
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-load-") as tmp, NetnsPair() as pair:
        lab = Lab(pair, Path(tmp))
        try:
            lab.start()
            pid = pidfile.alive(lab.controller_home / "controller.pid", str(lab.controller_cfg))
            if pid is None:
                raise SystemExit("the controller did not start")
            idle = rss_mib(pid)
            for count in [*counts, *[counts[-1]] * args.repeat]:
                rows.append(one(lab, pid, count, args.delay, args.wait))
                r = rows[-1]
                print(f"  {r['connections']:>4} connections: {r['records']:>6} records in {r['seconds']:.1f} s, "
                      f"RSS {r['before']:.1f} -> peak {r['peak']:.1f} -> {r['after']:.1f} MiB", flush=True)
        finally:
            lab.close()
    base = rows[0]
    base_growth = max(base["peak"] - base["before"], 0.01)
    print(f"\ncontroller idle RSS {idle:.1f} MiB; baseline: the 1-connection run ({base['records']} records, "
          f"+{base_growth:.2f} MiB at its peak)")
    print(f"{'conns':>5} {'records':>8} {'x base':>7} {'peak MiB':>9} {'growth MiB':>11} {'x base':>7} "
          f"{'KiB/record':>10} {'after MiB':>10}")
    for r in rows:
        growth = r["peak"] - r["before"]
        print(f"{r['connections']:>5} {r['records']:>8} {r['records'] / base['records']:>7.1f} {r['peak']:>9.1f} "
              f"{growth:>11.2f} {growth / base_growth:>7.1f} {growth * 1024 / r['records']:>10.2f} "
              f"{r['after']:>10.1f}")
    repeats = [r for r in rows if r["connections"] == counts[-1]]
    after = [r["after"] for r in repeats]
    print(f"\nafter each {counts[-1]}-connection run: " + ", ".join(f"{a:.1f}" for a in after) + " MiB")
    half = after[len(after) // 2:]
    print(f"first {after[0]:.1f}, highest {max(after):.1f} MiB (run {after.index(max(after)) + 1}); the last "
          f"{len(half)} runs within {min(half):.1f}..{max(half):.1f} MiB; peak RSS of any run {max(r['peak'] for r in rows):.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
