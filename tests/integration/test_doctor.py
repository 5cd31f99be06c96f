"""`tcplab doctor` for real: the host check run by the host's own python3 (nothing installed, only the
files the playbook copies), and the whole command against the embedded lab's two hosts over SSH.

This machine's kernel has no sch_prio/sch_netem but has the NFQUEUE target: the doctor must say backend
nfqueue, from the kernel's own answers (the tc layout and the NFQUEUE rule tried in a throwaway
namespace), and must leave nothing behind in the host's namespace."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.netns import require_root

REPO = Path(__file__).resolve().parents[2]
TESTBED = [sys.executable, "-m", "controller.testbed.cli"]
DOCTOR = [sys.executable, "-m", "controller.cli", "doctor"]
HOST_FILES = tuple(yaml.safe_load((REPO / "playbooks/doctor.yml").read_text())[0]["vars"]["tcplab_doctor_files"])


def real_fields(event: str) -> list[str]:
    """The tracepoint's fields as this kernel's format file lists them (read in a mount namespace of its own)."""
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          f"mount -t tracefs nodev /sys/kernel/tracing; cat /sys/kernel/tracing/events/{event}/format"],
                         capture_output=True, text=True, check=True).stdout
    return [f for f in re.findall(r"field:[^;]*?([A-Za-z_]\w*)(?:\[\d+\])?;", out) if not f.startswith("common_")]


def host_state() -> tuple[str, str]:
    return (subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout,
            subprocess.run(["iptables-save", "-t", "mangle"], capture_output=True, text=True).stdout)


@pytest.mark.integration
def test_the_host_check_runs_on_a_bare_python3_and_leaves_nothing_behind(tmp_path):
    require_root()
    for name in HOST_FILES:  # what playbooks/doctor.yml copies, and nothing else
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    before = host_state()
    r = subprocess.run(["/usr/bin/python3", "-E", "-s", "-m", "probe.doctor", "--port", "9090"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    k = rep["kernel"]
    assert k["isolated_checks"] and k["tc"]["tried"]
    assert k["tc"]["prio"]["ok"] is False and "qdisc kind is unknown" in k["tc"]["prio"]["detail"]
    assert k["tc"]["netem"]["ok"] is False and k["tc"]["u32"]["ok"] is True
    assert k["nfqueue_rule"]["ok"] and k["queue_bind"]["ok"] and k["inet_diag"]["ok"] and k["capture"]["ok"]
    assert rep["verdict"]["backend"] == "nfqueue" and rep["verdict"]["can_run"]
    for event, tp in k["tracefs"]["tracepoints"].items():
        assert tp["fields"] == real_fields(event), event
    assert "err" in k["tracefs"]["tracepoints"]["tcp/tcp_retransmit_skb"]["fields"]
    # the layout and the rule were made in a namespace that is gone (other tests may change other rules)
    qdiscs, rules = host_state()
    assert qdiscs == before[0]
    assert "-o lo -p tcp -m tcp --dport 9090 -j NFQUEUE" not in rules


@pytest.mark.integration
def test_the_probes_start_up_asks_only_what_shaping_needs():
    """probe.readiness at start: the same shaping answer as the whole check, without the tracefs,
    inet_diag and capture checks (the probe opens those itself), and nothing left behind."""
    require_root()
    from probe import doctor as host_doctor

    before = host_state()
    whole, part = host_doctor.kernel(9090), host_doctor.kernel(9090, only=("shaping",))
    assert part["isolated_checks"] and part["tc"]["tried"] and part["nfqueue_rule"]["tried"]
    assert not {"tracefs", "inet_diag", "capture"} & set(part) and {"tracefs", "inet_diag", "capture"} <= set(whole)
    for tools_required in (True, False):
        assert host_doctor.shaping(part, tools_required) == host_doctor.shaping(whole, tools_required)
    assert host_state()[0] == before[0]
    with pytest.raises(ValueError, match="unknown doctor part"):
        host_doctor.kernel(9090, only=("tracefs",))


@pytest.mark.integration
def test_tcplab_doctor_reports_both_hosts_of_the_embedded_lab(tmp_path):
    """Run with the lab lock held: flock /tmp/tcplab-dev/lab.lock pytest ... (the lab has fixed names)."""
    require_root()
    home = tmp_path / "home"
    env = {**os.environ, "TCPLAB_HOME": str(home)}
    up = subprocess.run([*TESTBED, "up", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    extra = ["-e", f"tcplab_home={home}"]
    try:
        r = subprocess.run([*DOCTOR, "--json", *extra], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["exit"] == 0 and sorted(out["hosts"]) == ["raspberrypi", "thinkpad"]
        for host, rep in out["hosts"].items():
            assert rep["hostname"] == host  # it ran on that host (its sshd's own UTS namespace)
            assert rep["verdict"]["backend"] == "nfqueue" and rep["verdict"]["can_run"]
            assert rep["kernel"]["tracefs"]["ok"] and rep["verdict"]["observers"][0] == "tracefs"
            assert rep["packages"]["missing"] == []

        table = subprocess.run([*DOCTOR, *extra], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["host", "raspberrypi", "thinkpad"]
        assert [line.split()[2:] for line in lines if line.startswith("shaping backend")] == [["nfqueue", "nfqueue"]]

        # the physical inventory (a laptop and a Pi), its user-edited values pointed at the namespaces
        physical = {"tcplab_laptop_address": "10.90.0.1", "tcplab_laptop_user": "root",
                    "tcplab_pi_address": "10.90.0.2", "tcplab_pi_user": "root", "tcplab_become": False,
                    "tcplab_home": str(home), "ansible_ssh_private_key_file": f"{home}/testbed/id_ed25519",
                    "ansible_ssh_common_args": f"-o UserKnownHostsFile={home}/testbed/known_hosts "
                                               "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"}
        r = subprocess.run([*DOCTOR, "--json", "-i", "inventory/physical.yml", "-e", json.dumps(physical)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert {h: rep["hostname"] for h, rep in json.loads(r.stdout)["hosts"].items()} == \
            {"thinkpad": "thinkpad", "raspberrypi": "raspberrypi"}

        # a host nobody answers for (SSH on a closed port): exit 3, and the table names it
        dark = subprocess.run([*DOCTOR, *extra, "-e", "ansible_port=2"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert dark.returncode == 3, dark.stdout + dark.stderr
        assert "thinkpad: problem: unreachable" in dark.stdout and "Connection refused" in dark.stdout
    finally:
        down = subprocess.run([*TESTBED, "down", "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stderr
