"""The completeness row: every TCP transition the kernel made, against what each observer saw.

One run through the real daemons (tests/daemons.py ``Lab``: a real controller, a real probe in each
of two fresh namespaces, real nc, real kernel TCP) at zero delay: the seed storyline (scenarios/
seed.yml, with its wait for the server's TIME_WAIT to run out), then ``--connections`` times the
seed's connection (listen, connect, a line each way, close the server, close the client). The lab
port is a random one (not 9090), so the kernel-wide tracepoint record holds this run's sockets only,
whatever other lab sessions run beside it. While it runs, three observers watch the same connections:

- ``tcplab``: the run's trace.jsonl (kind ``state``);
- ``netstat -nao every 1 s`` in each namespace (the seed's ``watch -n 1``) and ``ss -tan every
  0.1 s`` (bench/pollers.py);
- the ground truth: a tracefs instance of our own on ``sock/inet_sock_set_state`` filtered on the
  lab port, for the whole run (bench/kernel_record.py says how TIME_WAIT, which the tracepoint
  never reports, and its expiry are counted).

One clock: the trace's ``t`` is seconds since the run started on the controller's CLOCK_MONOTONIC
(``run.json`` ``hosts.<h>.clock.at_ns`` is that start); tracefs ``mono`` and the pollers'
``time.monotonic_ns()`` are the same CLOCK_MONOTONIC (one kernel, no time namespace), so a kernel
time maps to ``(t_ns - at_ns) / 1e9``. The trace's own times went through its clock estimate and
causal correction (run.json) like any run's: their error is part of what is measured.

A kernel transition is *seen* by an observer when it has a record of the same socket (host, local,
remote) entering the same state, no earlier than the kernel's time - TOL and begun no later than
the socket's next kernel transition + TOL (the state was still there), each record used once.
The error is the record's time minus the kernel's (for a poll, when its output was complete).

Run as root from the repository root:  .venv/bin/python -m bench.completeness [--connections 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.kernel_record import KernelRecord, Transition
from bench.pollers import Poller
from controller.trace import load
from tests.daemons import Lab
from tests.netns import NetnsPair

TOL_NS = 5_000_000
ORDER = ("LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "CLOSING",
         "LAST_ACK", "TIME_WAIT", "CLOSED")


def connection_steps() -> list[dict]:
    """The seed's connection at zero delay; only the console lines are waited for (a state
    expectation waits for the probe's merge hold, 100 ms); close returns when nc has exited."""
    return [
        {"action": "listen", "host": "thinkpad"},
        {"action": "connect", "host": "raspberrypi", "to": "thinkpad"},
        {"action": "send", "host": "thinkpad", "text": "Hello", "expect": ["raspberrypi prints Hello"]},
        {"action": "send", "host": "raspberrypi", "text": "Bye", "expect": ["thinkpad prints Bye"]},
        {"action": "close", "host": "thinkpad"},
        {"action": "close", "host": "raspberrypi"},
    ]


def scenario(connections: int, port: int, seed_wait: bool = True) -> dict:
    seed = yaml.safe_load(Path(__file__).resolve().parent.parent.joinpath("scenarios", "seed.yml").read_text())
    steps = [s for s in seed["steps"] if seed_wait or s["action"] != "wait"]
    for _ in range(connections):
        steps += connection_steps()
    return {"name": "completeness", "port": port, "delay": 0.0, "steps": steps}


def run_lab(pair: NetnsPair, root: Path, connections: int, port: int, seed_wait: bool = True,
            pollers: bool = True) -> dict:
    """Run the workload; return the trace, run.json, the kernel's transitions and each poller's changes."""
    lab = Lab(pair, root, port=port)
    polls: list[Poller] = []
    try:
        with KernelRecord({"thinkpad": pair.a.ip, "raspberrypi": pair.b.ip}, port) as record:
            lab.start()
            if pollers:
                polls = [Poller(name, host.ns, kind, period, port).start()
                         for kind, period in (("netstat", 1.0), ("ss", 0.1)) for name, host in lab.hosts.items()]
            path = root / "completeness.yml"
            path.write_text(yaml.safe_dump(scenario(connections, port, seed_wait)))
            began = time.monotonic()
            res = lab.tcplab("run", str(path), timeout=1800)
            seconds = time.monotonic() - began
            end_ns = time.monotonic_ns()
            for p in polls:
                p.stop()
            record.stop()
        if res.returncode != 0:
            raise RuntimeError(f"the run failed: {res.stderr.strip()[-2000:]}")
    finally:
        for p in polls:
            p.stop()
        lab.close()
    run_dir = next(lab.runs.iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    at_ns = info["hosts"]["thinkpad"]["clock"]["at_ns"]
    kernel, expiries = record.transitions(at_ns, end_ns)
    return {"trace": load(run_dir / "trace.jsonl"), "info": info, "at_ns": at_ns, "end_ns": end_ns,
            "kernel": kernel, "expiries": expiries, "pollers": polls, "seconds": seconds,
            "missed_pages": record.missed_pages, "run_dir": run_dir, "port": port}


def trace_changes(trace: list[dict], at_ns: int) -> list[dict]:
    return [{"host": r["host"], "local": r["local"], "remote": r["remote"], "to": r["to"], "source": r["source"],
             "t_ns": at_ns + round(r["t"] * 1e9), "start_ns": at_ns + round(r["t"] * 1e9)}
            for r in trace if r["kind"] == "state"]


def match(kernel: list[Transition], records: list[dict]) -> list[dict | None]:
    """For each kernel transition (in time order) the record that saw it, or None."""
    by_key: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["t_ns"]):
        by_key.setdefault((r["host"], r["local"], r["remote"]), []).append(r)
    used: set[int] = set()
    out: list[dict | None] = []
    for k in kernel:
        found = None
        for r in by_key.get(k.key, ()):
            if id(r) in used or r["to"] != k.to or r["t_ns"] < k.t_ns - TOL_NS:
                continue
            if r["start_ns"] > k.next_ns + TOL_NS:
                break
            found = r
            used.add(id(r))
            break
        out.append(found)
    return out


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"{v[min(len(v) - 1, int(q * len(v)))] / 1e6:+.3f}"


def row(name: str, kernel: list[Transition], matched: list[dict | None]) -> dict:
    errors = [m["t_ns"] - k.t_ns for k, m in zip(kernel, matched) if m is not None]
    seen = len(errors)
    per_state = {s: (sum(1 for k, m in zip(kernel, matched) if k.to == s and m is not None),
                     sum(1 for k in kernel if k.to == s)) for s in ORDER}
    return {"name": name, "kernel": len(kernel), "seen": seen, "pct": 100.0 * seen / len(kernel) if kernel else 0.0,
            "median_ms": _ms(errors, 0.5), "p99_ms": _ms(errors, 0.99), "per_state": per_state}


def sources(res: dict) -> dict[str, list[dict]]:
    out = {"tcplab trace": trace_changes(res["trace"], res["at_ns"])}
    for kind in ("netstat", "ss"):
        ps = [p for p in res["pollers"] if p.kind == kind]
        if ps:
            out[ps[0].name] = [c for p in ps for c in p.changes]
    return out


def print_tables(res: dict, connections: int) -> None:
    kernel, expiries = res["kernel"], res["expiries"]
    srcs = sources(res)
    rows = [row(name, kernel, match(kernel, recs)) for name, recs in srcs.items()]
    exp_rows = [row(name, expiries, match(expiries, recs)) for name, recs in srcs.items()]
    print(f"\ncompleteness: seed storyline + {connections} connections at zero delay through the real daemons, "
          f"{res['seconds']:.0f} s, lab port {res['port']}")
    print(f"{'source':28} {'kernel transitions':>18} {'seen':>6} {'seen %':>8} {'median ms':>10} {'p99 ms':>9}")
    for r in rows:
        print(f"{r['name']:28} {r['kernel']:>18} {r['seen']:>6} {r['pct']:>7.2f}% {r['median_ms']:>10} {r['p99_ms']:>9}")
    print(f"\nTIME_WAIT expiries due (deadline = TIME_WAIT entry + 60 s; the timer wheel may add up to 7.5 s; "
          f"error against the deadline):")
    for r in exp_rows:
        print(f"{r['name']:28} {r['kernel']:>18} {r['seen']:>6} {r['pct']:>7.2f}% {r['median_ms']:>10} {r['p99_ms']:>9}")
    print("\nseen per state entered (seen/kernel):")
    print(f"{'state':14}" + "".join(f"{r['name'][:22]:>24}" for r in rows))
    for s in ORDER:
        n = rows[0]["per_state"][s][1]
        if n:
            print(f"{s:14}" + "".join(f"{r['per_state'][s][0]:>17}/{n:<6}" for r in rows))
    hows: dict[str, int] = {}
    for k in kernel:
        hows[k.how] = hows.get(k.how, 0) + 1
    brackets = [k.bracket_ns for k in kernel if k.how == "peer_fin"]
    trace_recs = srcs["tcplab trace"]
    extra = len(trace_recs) - rows[0]["seen"] - exp_rows[0]["seen"]
    by_source: dict[str, int] = {}
    for r in trace_recs:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    print(f"\nkernel transitions by how they are known: {hows}"
          + (f"; peer_fin bracket (peer's FIN sent .. its ACK back) median {statistics.median(brackets) / 1e3:.0f} us"
             if brackets else ""))
    print(f"trace state records by source: {by_source}; not matched to a kernel transition: {extra}")
    print(f"polls made: " + ", ".join(f"{p.kind}@{p.host} {p.polls} (median {statistics.median(p.durations) / 1e6:.1f} ms)"
                                      for p in res["pollers"] if p.durations))
    print(f"witness ring buffer pages lost: {res['missed_pages']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.completeness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--port", type=int, default=0, help="lab port (default: random in 20000..29999)")
    ap.add_argument("--no-seed-wait", action="store_true", help="skip the seed's 60 s wait for TIME_WAIT to end")
    args = ap.parse_args(argv)
    port = args.port or random.randrange(20000, 30000)
    with tempfile.TemporaryDirectory(prefix="tcplab-completeness-") as tmp, NetnsPair() as pair:
        res = run_lab(pair, Path(tmp), args.connections, port, seed_wait=not args.no_seed_wait)
        print_tables(res, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
