"""How long the film's files take to make from a long trace, against reading that trace.

    .venv/bin/python -m bench.film_render [--segments N]

The trace is tests/data/seed-3s.trace.jsonl (a real seed run) with N more data segments of the
established connection (both captures, a netstat record every 10 segments), as a bulk transfer
would leave it. Each row prints its time and its ratio to the baseline, parsing the trace
(json.loads per line), measured in the same run. A renderer that grew quadratic would show here.
No root needed; nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from controller.film import html, ladder, model, story
from controller.film.render import png
from controller.trace import load

SEED = Path(__file__).resolve().parent.parent / "tests" / "data" / "seed-3s.trace.jsonl"


def long_trace(extra: int) -> list[dict]:
    records = load(SEED)
    est = next(i for i, r in enumerate(records) if r["kind"] == "console")  # the connection is up
    t0, t1 = records[est]["t"], records[est + 1]["t"]
    proto = next(r for r in records if r["kind"] == "packet" and "PSH" in r["flags"])
    netstat = next(r for r in records if r["kind"] == "netstat" and r["host"] == proto["host"])
    added: list[dict] = []
    for n in range(extra):
        t = t0 + (t1 - t0) * (n + 1) / (extra + 2)
        seg = dict(proto, seq=1 + 6 * n, len=6, t=t, analysis=[])
        added += [dict(seg, dir="out"), dict(seg, host="raspberrypi" if proto["host"] == "thinkpad" else "thinkpad",
                                            dir="in", t=t + 1e-6)]
        if n % 10 == 0:
            added.append(dict(netstat, t=t + 2e-6))
    return sorted(records + added, key=lambda r: r["t"])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20_000)
    args = parser.parse_args()
    records = long_trace(args.segments)
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-") as d:
        run = Path(d)
        path = run / "trace.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        base = timed(lambda: load(path))
        print(f"{len(records)} records; baseline: parsing the trace {base:.3f} s")
        rows = [("model.build", lambda: model.build(records)),
                ("ladder.svg", lambda: ladder.write(run, records)),
                ("ladder.png", lambda: png(run / "ladder.svg")),
                ("film.html", lambda: html.write(run, records)),
                ("story.md", lambda: story.write(run, records))]
        for name, fn in rows:
            t = timed(fn)
            print(f"{name:<12} {t:8.3f} s  {t / base:8.1f}x the baseline")
        print(f"film.html size {(run / 'film.html').stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
