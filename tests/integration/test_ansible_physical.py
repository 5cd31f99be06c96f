"""The roles assume nothing about the embedded target: ``lab.yml`` with ``inventory/physical.yml``
(a laptop's wlp5s0 and a Pi's wlan0), its addresses, interfaces and users overridden with ``-e`` to
point at the namespaces, builds the netns testbed, provisions, films and keeps the lab; a second
provisioning run through ansible-runner (what ``tcplab film`` uses) changes nothing, nor does
``--check`` on the provisioned lab; the teardown play
then stops everything it started, with the roles' own variables.

One lab is built for the module (about 2 minutes): run it under the lab lock,
``flock /tmp/tcplab-dev/lab.lock .venv/bin/pytest tests/integration/test_ansible_physical.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from tests.integration.test_ansible import TESTBED_COMMAND, ansible, recap
from tests.netns import require_root

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
INVENTORY = "inventory/physical.yml"
# Every value physical.yml asks a user to edit, pointed at the embedded lab's namespaces.
POINT_AT_NAMESPACES = {
    "tcplab_laptop_address": "10.90.0.1", "tcplab_laptop_iface": "eth0", "tcplab_laptop_user": "root",
    "tcplab_pi_address": "10.90.0.2", "tcplab_pi_iface": "eth0", "tcplab_pi_user": "root",
    # the namespaces share this machine's root file system: no packages installed into it
    "tcplab_pi_offline": False,
    "tcplab_become": False, "tcplab_controller_ip": "10.90.0.254",
    # the namespaces are x86 and have no route to a mirror or to PyPI
    "tcplab_probe_apt_update_cache": False,
    # and the first play builds them
    "tcplab_testbed": "netns",
}


def overrides(home: Path, runs: Path) -> dict:
    return {
        **POINT_AT_NAMESPACES,
        # the testbed's own key pair and known_hosts (`tcplab lab up` writes them)
        "ansible_ssh_private_key_file": f"{home}/testbed/id_ed25519",
        "ansible_ssh_common_args": (f"-o UserKnownHostsFile={home}/testbed/known_hosts "
                                    "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"),
        "tcplab_home": str(home), "tcplab_runs_dir": str(runs),
        "tcplab_testbed_command": TESTBED_COMMAND,
        "tcplab_delay": 0.3, "tcplab_keep_lab": True,
    }


def _lab_is_up() -> bool:
    return "tcplab-thinkpad" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    require_root()
    if _lab_is_up():
        pytest.skip("an embedded testbed is already up (someone else's): not touching it")
    d = tmp_path_factory.mktemp("physical")
    home, runs = d / "home", d / "runs"
    extra = overrides(home, runs)
    try:
        first = ansible("ansible-playbook", "-i", INVENTORY, "lab.yml", "-e", json.dumps(extra), timeout=600)
        yield {"home": home, "runs": runs, "extra": extra, "first": first, "dir": d}
    finally:
        subprocess.run([*TESTBED_COMMAND, "down", "--json"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "TCPLAB_HOME": str(home)}, timeout=120)


def test_physical_inventory_with_overrides_films_on_the_namespaces(lab: dict) -> None:
    first = lab["first"]
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    stats = recap(first.stdout)
    assert set(stats) == {"localhost", "thinkpad", "raspberrypi"}
    assert not any(s["failed"] or s["unreachable"] for s in stats.values()), stats
    # the overrides reached the roles: each probe's configuration names the namespace's interface
    for host, ip in (("thinkpad", "10.90.0.1"), ("raspberrypi", "10.90.0.2")):
        cfg = yaml.safe_load((lab["home"] / "hosts" / host / "probe.yml").read_text())
        assert (cfg["lab_iface"], cfg["lab_ip"]) == ("eth0", ip)
        assert cfg["controller"] == "tcp://10.90.0.254:5555"
    # and the film play shows this run's own directory and summary
    (run_dir,) = [p for p in lab["runs"].iterdir() if p.is_dir()]
    assert f"run directory: {run_dir}" in first.stdout
    assert (run_dir / "summary.txt").read_text().startswith(f"tcplab run {run_dir.name}: OK")
    assert f"tcplab run {run_dir.name}: OK" in first.stdout


def test_a_second_provisioning_run_changes_nothing(lab: dict) -> None:
    assert lab["first"].returncode == 0, "the first run failed: see the test above"
    from controller.playbook import run_lab
    with capture_logs() as logs:
        rc = run_lab(playbook="playbooks/provision.yml", inventory=INVENTORY, extravars=lab["extra"],
                     private_data_dir=lab["dir"] / "runner")
    assert rc == 0, [e for e in logs if e["event"] in ("task_failed", "host_unreachable")]
    changed = [(e["host"], e["task"]) for e in logs if e["event"] == "task_ok" and e["changed"]]
    assert not changed, changed
    (stats,) = [e for e in logs if e["event"] == "playbook_recap"]
    assert set(stats["ok"]) == {"localhost", "thinkpad", "raspberrypi"}
    assert not any(stats["changed"].values()) and not stats["failures"] and not stats["unreachable"]


def test_check_mode_on_the_provisioned_lab_fails_nothing_and_changes_nothing(lab: dict) -> None:
    """--check against the running lab: every host reached, nothing would change, nothing filmed."""
    assert lab["first"].returncode == 0, "the first run failed: see the test above"
    runs_before = sorted(lab["runs"].iterdir())
    r = ansible("ansible-playbook", "-i", INVENTORY, "lab.yml", "--check", "-e", json.dumps(lab["extra"]))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    stats = recap(r.stdout)
    assert set(stats) == {"localhost", "thinkpad", "raspberrypi"}
    task, changed = "", []
    for line in r.stdout.splitlines():
        task = line.split("[", 1)[1].split("]", 1)[0] if line.startswith(("TASK", "RUNNING HANDLER")) else task
        changed += [f"{task}: {line}"] if line.startswith("changed") else []
    assert all(s["ok"] > 0 and s["changed"] == 0 and not s["failed"] for s in stats.values()), (stats, changed)
    assert sorted(lab["runs"].iterdir()) == runs_before and _lab_is_up()


def test_the_provisioned_lab_speaks_curve_and_each_host_holds_only_its_own_secret(lab: dict) -> None:
    """Each probe's keys: its own pair and the controller's public key, 0600 in a 0700 dir, the daemon's
    user's (root here); the controller's: its pair and the hosts' public keys. On the controller's
    network address a peer without a key, or with a key of its own, gets nothing back."""
    import stat
    import time

    import zmq

    from controller.keys import make_keys
    from tcplab import wire
    from tcplab.wire import curve

    assert lab["first"].returncode == 0, "the first run failed: see the test above"
    home = lab["home"]

    def held(d: Path) -> set[str]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == 0
        for f in d.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_uid == 0, f
        return {f.name for f in d.iterdir()}

    for host in ("thinkpad", "raspberrypi"):
        cfg = yaml.safe_load((home / "hosts" / host / "probe.yml").read_text())
        assert held(Path(cfg["keys_dir"])) == {f"{host}.key_secret", "controller.key"}
    cfg = yaml.safe_load((home / "controller" / "controller.yml").read_text())
    assert held(Path(cfg["keys_dir"])) == {"controller.key_secret", "thinkpad.key", "raspberrypi.key"}
    server_key = curve.load_controller_keys(cfg["keys_dir"], []).public

    make_keys(lab["dir"] / "stranger", ["intruder"])
    own = curve.load_keys(lab["dir"] / "stranger", "intruder", [])
    ctx = zmq.Context()
    try:
        peers = []
        for keyed in (False, True):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, b"intruder")
            s.setsockopt(zmq.LINGER, 0)
            if keyed:
                curve.client(s, curve.Keys("intruder", own.public, own.secret, {"controller": server_key}))
            s.connect(cfg["bind"])  # tcp://10.90.0.254:5555: the controller's network address
            s.send(wire.encode(wire.make("hello", "intruder", 1, {"pid": 1})), zmq.NOBLOCK)
            peers.append(s)
        time.sleep(2)
        assert [s.poll(0) for s in peers] == [0, 0]
        for s in peers:
            s.close()
    finally:
        ctx.term()
    log = (home / "controller" / "controller.log").read_text()
    assert "curve_refused" in log and own.public.decode() in log


def test_teardown_stops_what_the_roles_started(lab: dict) -> None:
    home = lab["home"]
    extra = {**lab["extra"], "tcplab_keep_lab": False}
    r = ansible("ansible-playbook", "-i", INVENTORY, "playbooks/teardown.yml", "-e", json.dumps(extra))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    stats = recap(r.stdout)
    assert stats["localhost"]["changed"] >= 1 and not any(s["failed"] for s in stats.values()), stats
    assert not _lab_is_up()
    # no probe, controller or sshd of this lab is still running
    left = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert str(home) not in left, left
