"""Ansible: every inventory parses and lab.yml passes --syntax-check against it; the testbed play
is idempotent on the real embedded lab (a second run reports nothing changed); ``lab.yml --check`` on
a fresh control node, with an inventory kept outside inventory/, fails nothing and changes nothing.

Nothing here reaches the vagrant or physical targets: for them only --syntax-check and
ansible-inventory run, which read files and never connect.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.netns import require_root

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORIES = ["inventory/netns.yml", "inventory/vagrant.yml", "inventory/physical.yml"]
# Call the testbed's implementation directly, whatever state the `tcplab` entry point is in.
TESTBED_COMMAND = [sys.executable, "-m", "controller.testbed.cli"]
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible(tool: str, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def recap(out: str) -> dict[str, dict[str, int]]:
    return {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
            for m in RECAP.findall(out)}


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_lab_playbook_passes_syntax_check(inventory: str) -> None:
    r = ansible("ansible-playbook", "-i", inventory, "--syntax-check", "lab.yml")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_has_a_control_node_and_two_lab_hosts(inventory: str) -> None:
    r = ansible("ansible-inventory", "-i", inventory, "--list")
    assert r.returncode == 0, r.stderr
    inv = json.loads(r.stdout)
    assert inv["control"]["hosts"] == ["localhost"]
    assert sorted(inv["lab"]["hosts"]) == ["raspberrypi", "thinkpad"]
    hostvars = inv["_meta"]["hostvars"]
    assert all(hostvars[h]["tcplab_controller_ip"] for h in inv["lab"]["hosts"])
    # only the embedded lab has a testbed for the first play to build
    assert (hostvars["localhost"].get("tcplab_testbed") == "netns") == inventory.endswith("netns.yml")


def test_ansible_cfg_makes_the_netns_inventory_the_default() -> None:
    r = ansible("ansible-config", "dump", "--only-changed")
    assert r.returncode == 0, r.stderr
    assert str(REPO / "inventory" / "netns.yml") in r.stdout
    assert str(REPO / "playbooks" / "roles") in r.stdout


@pytest.mark.integration
def test_testbed_play_is_idempotent(tmp_path: Path) -> None:
    require_root()
    if subprocess.run(["ip", "netns", "pid", "tcplab-thinkpad"], capture_output=True).returncode == 0 or \
            "tcplab-thinkpad" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        pytest.skip("an embedded testbed is already up (someone else's): not touching it")
    home = str(tmp_path / "home")
    extra = json.dumps({"tcplab_home": home, "tcplab_testbed_command": TESTBED_COMMAND})
    try:
        first = ansible("ansible-playbook", "playbooks/testbed.yml", "-e", extra)
        assert first.returncode == 0, first.stdout + first.stderr
        assert recap(first.stdout)["localhost"]["changed"] >= 1

        second = ansible("ansible-playbook", "playbooks/testbed.yml", "-e", extra)
        assert second.returncode == 0, second.stdout + second.stderr
        assert recap(second.stdout)["localhost"] == {"ok": 3, "changed": 0, "unreachable": 0, "failed": 0}

        # the same play through ansible-runner (what `tcplab film` uses): still nothing changes
        from controller.playbook import run_lab
        with capture_logs() as logs:
            rc = run_lab(playbook="playbooks/testbed.yml",
                         extravars={"tcplab_home": home, "tcplab_testbed_command": TESTBED_COMMAND},
                         private_data_dir=tmp_path / "runner")
        assert rc == 0, logs
        events = [e["event"] for e in logs]
        assert events[0] == "playbook_start" and events[-1] == "playbook_end"
        oks = [e for e in logs if e["event"] == "task_ok"]
        assert oks and not any(e["changed"] for e in oks)
        (stats,) = [e for e in logs if e["event"] == "playbook_recap"]
        assert not any(stats["changed"].values()) and not stats["failures"]
    finally:
        down = subprocess.run([*TESTBED_COMMAND, "down", "--json"], cwd=REPO, capture_output=True,
                              text=True, env={**os.environ, "TCPLAB_HOME": home}, timeout=120)
    assert down.returncode == 0, down.stderr
    # nothing this test started is still running (other tests may build their own testbed meanwhile)
    left = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert home not in left


@pytest.mark.integration
def test_check_mode_on_a_fresh_control_node_fails_nothing_and_changes_nothing(tmp_path: Path) -> None:
    """No lab, no tcplab home, no wheelhouse, and the inventory outside inventory/ (the shared settings
    are the tcplab role's defaults, so they do not depend on where the inventory lives)."""
    require_root()
    elsewhere = tmp_path / "my-inventories"
    elsewhere.mkdir()
    (elsewhere / "netns.yml").write_text((REPO / "inventory" / "netns.yml").read_text())
    home, wheels, runs = tmp_path / "home", tmp_path / "wheelhouse", tmp_path / "runs"
    extra = json.dumps({"tcplab_home": str(home), "tcplab_wheelhouse": str(wheels), "tcplab_runs_dir": str(runs),
                        "tcplab_testbed_command": TESTBED_COMMAND, "tcplab_delay": 0.3})
    netns_before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    r = ansible("ansible-playbook", "-i", str(elsewhere / "netns.yml"), "lab.yml", "--check", "-e", extra)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    stats = recap(r.stdout)
    assert stats["localhost"]["ok"] >= 10 and not any(s["failed"] or s["unreachable"] for s in stats.values())
    # the lab hosts were not there to reach, and were skipped rather than failed
    assert all(stats.get(h, {}).get("ok", 0) == 0 for h in ("thinkpad", "raspberrypi")), stats
    assert "PLAY [Provision a probe on every lab host]" in r.stdout
    # nothing was made: no home, no wheels, no runs, no namespaces, no daemon
    assert not home.exists() and not wheels.exists() and not runs.exists()
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == netns_before
    left = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert str(home) not in left
