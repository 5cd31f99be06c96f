"""``python -m controller.wheelhouse wheel|prepare``: what the Ansible roles call.

Prints one JSON object on stdout (``changed`` plus paths) and exits 0; on a problem, one line on
stderr and exit 1 (2 for a bad command line, as argparse does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from controller.wheelhouse import WheelhouseError, bundle, project, targets
from tcplab import logs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller.wheelhouse", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("wheel", "prepare"):
        p = sub.add_parser(name)
        p.add_argument("--repo", type=Path, default=project.REPO, help="the project's checkout")
        p.add_argument("--wheelhouse", type=Path, required=True)
        p.add_argument("--check", action="store_true",
                       help="build nothing: say what would change (paths are null where not built)")
    prep = sub.choices["prepare"]
    prep.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME",
                      help="an install set, <machine>-py<X.Y>-<release>[-offline] (repeatable)")
    prep.add_argument("--apt", action="append", default=[], metavar="PACKAGE",
                      help="a Debian package an offline host gets in its archive (repeatable)")
    prep.add_argument("--extra", action="append", default=[], metavar="REQUIREMENT",
                      help="a further requirement shipped as a wheel, e.g. pytest (repeatable)")
    args = ap.parse_args(argv)
    try:
        out = _run(args)
    except WheelhouseError as e:
        print(f"tcplab-wheelhouse: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


def _run(args) -> dict:
    chosen = [targets.parse(name) for name in sorted(set(getattr(args, "sets", [])))]  # bad names first
    if not args.check:
        args.wheelhouse.mkdir(parents=True, exist_ok=True)
    wheelhouse = args.wheelhouse.resolve()
    wheel, changed = project.ensure_wheel(args.repo.resolve(), wheelhouse, check=args.check)
    out = {"changed": changed, "wheel": str(wheel.path) if wheel else None}
    if args.command == "prepare":
        out["sets"] = {}
        for target in chosen:
            b, built = (None, True) if wheel is None else bundle.ensure(
                target, wheel, args.apt, args.extra, wheelhouse, check=args.check)
            out["changed"] |= built
            out["sets"][target.name] = str(b.path) if b else None
    return out


if __name__ == "__main__":
    # stdout carries the one JSON answer Ansible reads: the log events go to stderr
    logs.configure_cli()
    sys.exit(main())
