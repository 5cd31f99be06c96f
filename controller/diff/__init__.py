"""``tcplab diff RUN_A RUN_B``: what differs between two runs, step by step (docs/diff.md).

    tcplab diff RUN_A RUN_B [--json] [--all] [--time-tolerance SECONDS]

RUN_A and RUN_B are run directories (or their trace.jsonl). Each run is read once into a digest
(controller/diff/digest.py: steps, and per step each role's states, segments, kernel events,
console lines and shaping, with times from the step's start); the two digests are aligned and
compared (compare.py) and the result printed (text.py).

Exit codes, as diff(1)'s: 0 the runs agree, 1 they differ, 2 bad input (a missing directory, a file
that is not a trace: one line on stderr naming it).
"""

from __future__ import annotations

import argparse
import json
import sys

from controller.diff.compare import compare
from controller.diff.digest import read
from controller.diff.text import as_json, render
from controller.film.tracefile import NotATrace

DEFAULT_TOLERANCE_S = 0.1


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0 to 3600 seconds, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcplab diff", description="Compare two runs step by step: each side's "
                                "states, the segments and the kernel events, matched by role, not by address.")
    p.add_argument("run_a", help="a run directory (or its trace.jsonl): A")
    p.add_argument("run_b", help="a run directory (or its trace.jsonl): B")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--all", action="store_true", help="show every item side by side, not only the differences")
    p.add_argument("--time-tolerance", type=_tolerance, default=DEFAULT_TOLERANCE_S, metavar="SECONDS",
                   help=f"times (from each step's start) further apart than this differ (default "
                        f"{DEFAULT_TOLERANCE_S:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        a, b = read(args.run_a), read(args.run_b)
    except NotATrace as e:
        print(f"tcplab diff: {e}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f"tcplab diff: cannot read {getattr(e, 'filename', None) or 'a trace'}: {e}", file=sys.stderr)
        return 2
    diff = compare(a, b, args.time_tolerance)
    if args.json:
        print(json.dumps(as_json(diff), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render(diff, everything=args.all))
    return 0 if diff.same else 1


if __name__ == "__main__":
    sys.exit(main())
