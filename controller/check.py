"""``tcplab check FILE... [-i INVENTORY]``: scenario files checked whole, nothing run.

Each file goes through what ``tcplab run`` does before it asks the controller for anything
(controller.scenario.load: the bounded YAML of tcplab.strictyaml, every field, the order of the
steps). With ``-i``, also against that inventory as the lab would run it: its roles (``server``,
``client``) bound to the hosts whose ``tcplab_role`` they are (by default the seed's), every host the
scenario names is in the inventory's group ``lab``, and a scenario's ``port`` is the inventory's
``tcplab_lab_port`` (the role's default, 9090, where the inventory sets none).

One line per file: ``FILE: ok (NAME, N steps on HOSTS)`` or the error (the file, the line, the field
and what is allowed). Exit 0 when every file is good, 2 when one is not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from controller import scenario
from controller.doctor import REPO, DoctorError, lab_hosts

DEFAULTS = REPO / "playbooks" / "roles" / "tcplab" / "defaults" / "main.yml"


def inventory_lab(inventory: str) -> tuple[dict[str, int], dict[str, str]]:
    """Each lab host's ``tcplab_lab_port`` as the inventory sets it (else the role's default), and the
    roles its hosts take (``tcplab_role``: role -> host)."""
    default = yaml.safe_load(DEFAULTS.read_text()).get("tcplab_lab_port", 9090)
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(Path(inventory).resolve()),
                          "--list"], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    hostvars = json.loads(res.stdout).get("_meta", {}).get("hostvars", {}) if res.returncode == 0 else {}
    hosts = lab_hosts(inventory)
    ports = {h: int(hostvars.get(h, {}).get("tcplab_lab_port", default)) for h in hosts}
    roles = {hostvars[h]["tcplab_role"]: h for h in hosts if hostvars.get(h, {}).get("tcplab_role")}
    return ports, roles


def against(scn: scenario.Scenario, source: str, ports: dict[str, int], inventory: str,
            roles: dict[str, str] | None = None) -> scenario.Scenario:
    """``scn`` as it would run on the inventory's lab hosts (``ports``: host -> lab port; ``roles``: role ->
    host, the seed's for a role it leaves out), or ScenarioError when it cannot."""
    scn = scn.bound(roles, tuple(ports))
    for step in scn.steps:
        named = (*step.hosts, *([step.to] if step.to else []), *(e.host for e in step.expect))
        missing = [h for h in dict.fromkeys(named) if h not in ports]
        if missing:
            where = f"{source}:{step.line}" if step.line else source
            raise scenario.ScenarioError(f"{where}: step {step.index} ({step.action}): {', '.join(missing)} is not "
                                         f"a host of {inventory}'s group lab (it has {', '.join(sorted(ports))})")
    conflict = scenario.port_conflict(scn, {h: ports[h] for h in scn.hosts}, source)
    if conflict:
        raise scenario.ScenarioError(conflict)
    return scn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcplab check", description="check scenario files; run nothing")
    parser.add_argument("files", nargs="+", help="scenario YAML files")
    parser.add_argument("-i", "--inventory", help="also check the hosts and the port against this inventory")
    args = parser.parse_args(argv)
    ports, roles = None, {}
    if args.inventory:
        try:
            ports, roles = inventory_lab(args.inventory)
        except (DoctorError, OSError, ValueError) as e:
            print(f"tcplab check: {e}", file=sys.stderr)
            return 2
    bad = 0
    for path in args.files:
        try:
            scn = scenario.load(path)
            if ports is not None:
                scn = against(scn, path, ports, args.inventory, roles)
        except scenario.ScenarioError as e:
            print(str(e))
            bad += 1
            continue
        print(f"{path}: ok ({scn.name}, {len(scn.steps)} steps on {', '.join(scn.hosts) or 'no host'})")
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
