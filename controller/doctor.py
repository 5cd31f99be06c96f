"""``tcplab doctor [-i INVENTORY] [--json]``: can each lab host of an inventory run the lab?

``playbooks/doctor.yml`` runs the standard-library host check (:mod:`probe.doctor`) on every host of the
inventory's ``lab`` group through ansible-runner, before anything is installed; this module reads the
reports it leaves and prints one table (or, with ``--json``, ``{"hosts": {host: report}, "exit": N}``).

Exit codes: 0 every host can run the lab; 1 some host cannot (its row says why); 2 bad input (no such
inventory, no lab hosts in it, a bad flag); 3 some host could not be asked (unreachable, or the check
did not run) -- 3 wins over 1, since that host's answer is unknown.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from tcplab.errors import TcplabError

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = "playbooks/doctor.yml"
OK, CANNOT, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3


class DoctorError(TcplabError):
    """Bad input: the inventory cannot be read or names no lab host."""


def ask(inventory: str | None, reports: Path, extra: list[str] = ()) -> dict[str, dict]:
    """Run the doctor play; ``{host: report}``, or ``{host: {"error": ...}}`` for a host not asked.

    ``extra``: ansible-playbook ``-e`` values, e.g. ``tcplab_home=/tmp/lab`` or ``ansible_user=pi``."""
    import ansible_runner  # imported late: the probes never need it

    failures: dict[str, str] = {}
    hosts: set[str] = set()

    def on_event(event: Mapping[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host")
        if host and host != "localhost" and event.get("event", "").startswith("runner_on_"):
            hosts.add(host)
            if event["event"] in ("runner_on_unreachable", "runner_on_failed") and host not in failures:
                res = data.get("res") or {}
                msg = res.get("msg") or res.get("stderr") or "failed"
                failures[host] = ("unreachable: " if event["event"] == "runner_on_unreachable" else "") + \
                    " ".join(str(msg).split())[:300]
        return True

    private = Path(tempfile.mkdtemp(prefix="tcplab-doctor-runner-"))
    kwargs: dict[str, Any] = dict(
        private_data_dir=str(private), project_dir=str(REPO), playbook=PLAYBOOK, quiet=True,
        envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                 "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")},
        extravars={"tcplab_doctor_reports": str(reports)}, event_handler=on_event, rotate_artifacts=1)
    if extra:
        kwargs["cmdline"] = shlex.join(x for e in extra for x in ("-e", e))
    if inventory:
        kwargs["inventory"] = str(Path(inventory).resolve())
    try:
        ansible_runner.run(**kwargs)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    out: dict[str, dict] = {}
    for path in sorted(reports.glob("*.json")):
        out[path.stem] = json.loads(path.read_text())
    for host in sorted(hosts - set(out)):
        out[host] = {"error": failures.get(host, "the host check left no report")}
    return out


def lab_hosts(inventory: str | None) -> list[str]:
    """The inventory's lab hosts (ansible-inventory), or DoctorError."""
    argv = [str(Path(sys.executable).parent / "ansible-inventory"), "--list"]
    if inventory:
        if not Path(inventory).is_file():
            raise DoctorError(f"no inventory file {inventory}")
        argv += ["-i", str(Path(inventory).resolve())]
    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    if res.returncode != 0:
        raise DoctorError(f"cannot read inventory {inventory or '(ansible.cfg default)'}: "
                          f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")
    hosts = json.loads(res.stdout).get("lab", {}).get("hosts", [])
    if not hosts:
        raise DoctorError(f"inventory {inventory or '(ansible.cfg default)'} has no host in group lab")
    return sorted(hosts)


def exit_code(reports: Mapping[str, dict]) -> int:
    if any("error" in r for r in reports.values()):
        return UNREACHABLE
    if any(not r["verdict"]["can_run"] for r in reports.values()):
        return CANNOT
    return OK


def main(argv: list[str] | None = None) -> int:
    from controller.doctor_table import render

    p = argparse.ArgumentParser(prog="tcplab doctor", description="What each lab host's kernel offers the lab.")
    p.add_argument("-i", "--inventory", help="an Ansible inventory (default: ansible.cfg's, inventory/netns.yml)")
    p.add_argument("--json", action="store_true", help="print the hosts' reports as JSON")
    p.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                   help="passed to ansible-playbook -e (e.g. ansible_host=... for the physical inventory)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return BAD_INPUT if e.code else OK
    try:
        hosts = lab_hosts(args.inventory)
    except DoctorError as e:
        print(f"tcplab doctor: {e}", file=sys.stderr)
        return BAD_INPUT
    with tempfile.TemporaryDirectory(prefix="tcplab-doctor-") as tmp:
        reports = ask(args.inventory, Path(tmp), args.extra_vars)
    for host in hosts:
        reports.setdefault(host, {"error": "not asked: the play did not reach it"})
    code = exit_code(reports)
    if args.json:
        print(json.dumps({"hosts": reports, "exit": code}, indent=1))
    else:
        print(render(reports))
    return code


if __name__ == "__main__":
    sys.exit(main())
