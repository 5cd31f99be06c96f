"""``tcplab lab up|down|purge|status [--json] [--home DIR] [--wait S]``: the testbed from the command line.

``down`` removes the lab and keeps the probes' cache (/var/cache/tcplab/probes, their install sets
and virtualenvs, reused by the next film); ``purge`` removes both.

Exit codes: 0 done, 1 the testbed could not be built/removed (one-line reason on stderr: also an
unsafe home, or the lock still held by another ``tcplab lab`` after ``--wait`` seconds, named),
2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from controller.testbed.lock import WAIT_S
from controller.testbed.spec import TestbedError, TestbedSpec
from controller.testbed.testbed import down, purge, status, up
from tcplab import logs

ACTIONS = {"up": up, "down": down, "purge": purge, "status": status}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"tcplab lab: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tcplab lab", description="The embedded testbed: two namespaces with sshd.")
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--home", help="state directory (default $TCPLAB_HOME or /var/lib/tcplab)")
    p.add_argument("--wait", type=float, default=WAIT_S, metavar="S",
                   help=f"seconds to wait for another tcplab lab to finish (default {WAIT_S:g})")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return int(e.code or 0)
    logs.configure_cli()  # stdout is kept for the result (JSON)
    try:
        spec = TestbedSpec(home=args.home) if args.home else TestbedSpec()
        result = ACTIONS[args.action](spec) if args.action == "status" else ACTIONS[args.action](spec, wait=args.wait)
    except TestbedError as e:
        sys.stderr.write(f"tcplab lab {args.action}: {e}\n")
        return 1
    except PermissionError as e:
        sys.stderr.write(f"tcplab lab {args.action}: needs root ({e})\n")
        return 1
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else _human(args.action, result))
    return 0


def _human(action: str, r: dict[str, Any]) -> str:
    if action == "down":
        return "testbed removed" if r["changed"] else "testbed already absent"
    if action == "purge":
        return "testbed and probe cache removed" if r["changed"] else "testbed and probe cache already absent"
    lines = []
    if action == "up":
        lines.append("testbed changed" if r["changed"] else "testbed already up")
    else:
        lines.append("testbed up" if r["up"] else "testbed NOT up")
    for name, h in r["hosts"].items():
        sshd = f"sshd pid {h['sshd_pid']}" if h.get("sshd_pid") else "sshd not running"
        lines.append(f"  {name:<12} {h['ip']:<15} netns {h['netns']}  {sshd}")
    lines.append(f"  ssh {' '.join(r['ssh_args'])} root@<ip>")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
