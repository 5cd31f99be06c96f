"""The clock row: how far the controller's offset estimate is from an offset known exactly.

Builds a namespace pair with a real controller and two real probes (tests/daemons.py ``Lab``);
the raspberrypi probe runs under ``unshare --time --monotonic 5000``, so its CLOCK_MONOTONIC is
5000 s ahead, exactly; thinkpad's is the controller's own (true offset 0). Runs a short
zero-delay scenario several times and, for each run, compares against the truth:

- ``tcplab``: the offset in run.json (NTP's four timestamps, all the run's exchanges, intersection
  of their intervals, drift) at the run's start, and its bound (``uncertainty_ns``);
- baselines from the *same* exchanges (``clock.jsonl``), with the estimator this issue replaced
  (the pong's one stamp against the midpoint of the round trip, minimum round trip wins):
  ``single ping``: the run's first exchange alone; ``cold pings``: the first exchange of each
  chain (pre-run and during the run), i.e. pings that find the threads asleep, as the 8 pings
  20 ms apart before this issue did; and ``pre-run, 4 stamps``: the new estimator on the
  pre-run chain only (what pinging during the run adds).

Also the trace's alignment: for every segment seen on both hosts, arrival minus departure (the
true one-way time on a veth is some tens of microseconds). Run as root from the repository root:

    .venv/bin/python -m bench.clock [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from controller.clock import ClockEstimate
from controller.report import segment_pairs
from controller.trace import load
from tests.daemons import Lab
from tests.integration.test_clock import SCENARIO
from tests.netns import NetnsPair

OFFSET_S = 5000
TRUTH = {"raspberrypi": OFFSET_S * 1_000_000_000, "thinkpad": 0}
PRE_RUN_NS = 300_000_000  # the pre-run chain: the exchanges just before the run starts
CHAIN_GAP_NS = 20_000_000  # exchanges closer than this belong to one chain


def legacy(ex: dict) -> tuple[float, int]:
    """The replaced estimator on one exchange: the pong's stamp against the round trip's middle."""
    return ex["t3"] - (ex["t1"] + ex["t4"]) / 2, ex["t4"] - ex["t1"]


def estimates(run_dir: Path, host: str) -> dict[str, tuple[float, float | None]]:
    """Name -> (error ns, bound ns) for the controller's estimate and the baselines."""
    clock = json.loads((run_dir / "run.json").read_text())["hosts"][host]["clock"]
    at = clock["at_ns"]
    exchanges = [json.loads(ln) for ln in (run_dir / "clock.jsonl").read_text().splitlines()]
    exchanges = [e for e in exchanges if e["host"] == host]
    pre = [e for e in exchanges if at - PRE_RUN_NS <= e["t1"] < at]
    truth = TRUTH[host]
    out = {"tcplab": (clock["offset_ns"] - truth, clock["uncertainty_ns"])}
    first = min((e for e in exchanges if e["t1"] >= at - PRE_RUN_NS), key=lambda e: e["t1"])
    off, rtt = legacy(first)
    out["single ping"] = (off - truth, rtt / 2)
    run = sorted((e for e in exchanges if e["t1"] >= at - PRE_RUN_NS), key=lambda e: e["t1"])
    cold = [e for k, e in enumerate(run) if k == 0 or e["t1"] - run[k - 1]["t4"] > CHAIN_GAP_NS]
    off, rtt = min((legacy(e) for e in cold), key=lambda x: x[1])
    out["cold pings"] = (off - truth, rtt / 2)
    est = ClockEstimate()
    for e in pre:
        est.add(e["t1"], e["t3"], e["t4"], e["t2"])
    d = est.as_dict(at)
    out["pre-run, 4 stamps"] = (d["offset_ns"] - truth, d["uncertainty_ns"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.2, help="egress delay (s): longer runs, more exchanges")
    args = parser.parse_args(argv)
    errors: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    one_way: list[float] = []
    shifts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-clock-") as tmp, NetnsPair() as pair:
        root = Path(tmp)
        lab = Lab(pair, root, clock_offsets={"raspberrypi": OFFSET_S})
        try:
            lab.start()
            scn = root / "clock.yml"
            steps = [{"action": "shape", "host": ["thinkpad", "raspberrypi"]}, *SCENARIO["steps"]]
            scn.write_text(yaml.safe_dump(dict(SCENARIO, delay=args.delay, steps=steps)))
            for i in range(args.runs):
                res = lab.tcplab("run", str(scn), timeout=120)
                if res.returncode != 0:
                    print(f"run {i + 1} failed: {res.stderr.strip()}", file=sys.stderr)
                    return 1
                run_dir = Path(res.stdout.split("run files: ")[1].split()[0])
                for host in TRUTH:
                    for name, value in estimates(run_dir, host).items():
                        errors.setdefault((host, name), []).append(value)
                info = json.loads((run_dir / "run.json").read_text())
                shifts.append(info["hosts"]["raspberrypi"]["clock"]["causal"]["shift_s"] * 1e6)
                one_way += [(i["t"] - o["t"]) * 1e6 for o, i in segment_pairs(load(run_dir / "trace.jsonl"))]
        finally:
            lab.close()
    print(f"clock: offset estimate error against a known offset, {args.runs} runs at {args.delay:g} s delay "
          f"(raspberrypi under unshare --time --monotonic {OFFSET_S}; thinkpad true offset 0)")
    print(f"{'host':<12} {'estimator':<18} {'median |err| us':>16} {'max |err| us':>13} "
          f"{'median bound us':>16} {'in bound':>9} {'ratio':>7}")
    for host in TRUTH:
        base = statistics.median(abs(e) for e, _ in errors[(host, "tcplab")])
        for name in ("tcplab", "single ping", "cold pings", "pre-run, 4 stamps"):
            vals = errors[(host, name)]
            med = statistics.median(abs(e) for e, _ in vals)
            inside = sum(b is not None and abs(e) <= b for e, b in vals)
            ratio = "1.0" if name == "tcplab" else f"{med / base:.1f}" if base else "inf"
            print(f"{host:<12} {name:<18} {med / 1e3:16.1f} {max(abs(e) for e, _ in vals) / 1e3:13.1f} "
                  f"{statistics.median(b for _, b in vals) / 1e3:16.1f} {inside:>4}/{len(vals):<4} {ratio:>7}")
    print(f"trace alignment: {len(one_way)} segments seen on both hosts, arrival - departure "
          f"median {statistics.median(one_way):.1f} us, min {min(one_way):.1f} us, max {max(one_way):.1f} us; "
          f"causal shift of raspberrypi median {statistics.median(shifts):.1f} us, max |{max(map(abs, shifts)):.1f}| us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
